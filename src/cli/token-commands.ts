/**
 * `berth token create|ls|revoke` (admin) and `berth whoami`: tokens for the people and jobs that
 * use this server, each with a role (read < use < admin) and, if wanted, an expiry.
 */
import type { Command } from 'commander';
import { parseDurationMs } from '../core/duration.js';
import { ROLE_SUMMARIES, ROLES, isRole } from '../tokens/roles.js';
import type { Principal, TokenView } from '../tokens/token-service.js';
import type { Context } from './context.js';
import { age, collect, splitList, table, UsageError } from './output.js';

export function registerTokenCommands(program: Command, ctx: Context): void {
  const token = program.command('token').description('API tokens for people and jobs, each with a role: read < use < admin (admin only)');
  token
    .command('create')
    .description(`make a token; its secret is printed once. Roles: ${ROLES.map((r) => `${r} (${ROLE_SUMMARIES[r]})`).join('; ')}`)
    .argument('<name>', 'whose or what it is: ci-deploy, alice@example.com')
    .requiredOption('--role <role>', `one of ${ROLES.join(', ')}`)
    .option('--expires <duration>', 'it stops working after this long: 90m, 12h, 30d (default: until revoked)')
    .option('--scope <groups>', 'it acts only in these groups, and their environments: names or prefixes, comma-separated (alice,alice-*); default: the whole tenant', collect, [])
    .option('--json', 'print JSON')
    .action(async (name: string, opts: { role: string; expires?: string; scope: string[]; json?: boolean }) => {
      if (!isRole(opts.role)) throw new UsageError(`--role ${JSON.stringify(opts.role)} is not one of ${ROLES.join(', ')}`);
      const expiresInSeconds = opts.expires !== undefined ? Math.round(parseDurationMs(opts.expires, '--expires') / 1000) : undefined;
      const printer = ctx.printer(opts.json);
      const scope = splitList(opts.scope);
      const made = await ctx.client().post<{ token: string; tokenInfo: TokenView }>('/v1/tokens', { name, role: opts.role, ...(expiresInSeconds !== undefined ? { expiresInSeconds } : {}), ...(scope.length > 0 ? { scope } : {}) });
      if (printer.json) return printer.out(`${JSON.stringify(made, null, 2)}\n`);
      // The secret alone on stdout, so `TOKEN=$(berth token create …)` works; the rest to stderr.
      printer.out(`${made.token}\n`);
      printer.err(
        `made token ${made.tokenInfo.id} "${made.tokenInfo.name}", role ${made.tokenInfo.role}${made.tokenInfo.scope ? `, groups ${made.tokenInfo.scope.join(',')}` : ''}${made.tokenInfo.expiresAt ? `, expires ${made.tokenInfo.expiresAt}` : ''}.\n` +
          'This is the only time its secret is shown: give it to its user as BERTH_TOKEN (with BERTH_URL).\n',
      );
    });
  token
    .command('ls')
    .description('the tokens: name, role, when made, last used, when it expires')
    .option('--all', 'also revoked ones')
    .option('--json', 'print JSON')
    .action(async (opts: { all?: boolean; json?: boolean }) => {
      const printer = ctx.printer(opts.json);
      const { tokens } = await ctx.client().get<{ tokens: TokenView[] }>(`/v1/tokens${opts.all ? '?revoked=true' : ''}`);
      if (printer.json) return printer.out(`${JSON.stringify(tokens, null, 2)}\n`);
      printer.out(
        table(
          ['ID', 'NAME', 'ROLE', 'GROUPS', 'AGE', 'LAST USED', 'EXPIRES', ...(opts.all ? ['REVOKED'] : [])],
          tokens.map((t) => [t.id, t.name, t.role, t.scope?.join(',') ?? 'all', age(t.createdAt), t.lastUsedAt ? `${age(t.lastUsedAt)} ago` : 'never', expiry(t.expiresAt), ...(opts.all ? [t.revokedAt ?? '-'] : [])]),
        ),
      );
    });
  token
    .command('revoke')
    .description('revoke a token by id or name: it stops working at once')
    .argument('<token>', 'its id or name (`berth token ls`)')
    .option('--json', 'print JSON')
    .action(async (idOrName: string, opts: { json?: boolean }) => {
      const printer = ctx.printer(opts.json);
      const revoked = await ctx.client().delete<TokenView>(`/v1/tokens/${encodeURIComponent(idOrName)}`);
      if (printer.json) return printer.out(`${JSON.stringify(revoked, null, 2)}\n`);
      printer.err(`revoked ${revoked.id} "${revoked.name}" (role ${revoked.role})\n`);
    });
  token
    .command('rotate-data-dir')
    .description("replace the server's own token (its data dir's, the local CLI's): the old one stops working at once, the new one is written to the data dir")
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      const printer = ctx.printer(opts.json);
      const made = await ctx.client().post<TokenView>('/v1/tokens/rotate-data-dir', {});
      if (printer.json) return printer.out(`${JSON.stringify(made, null, 2)}\n`);
      printer.err(
        `the server's own token is now ${made.id}; the old one is revoked.\n` +
          "The CLI on the server's machine reads the new one from the data dir (file `token`); elsewhere, set BERTH_TOKEN to it, and open the dashboard again (`berth dashboard`).\n",
      );
    });
  program
    .command('whoami')
    .description('the token this CLI uses: its name, role and tenant, and the server')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      const printer = ctx.printer(opts.json);
      const client = ctx.client();
      const me = await client.get<Principal>('/v1/whoami');
      if (printer.json) return printer.out(`${JSON.stringify({ ...me, url: client.url }, null, 2)}\n`);
      printer.out(`${me.tokenName} (${me.tokenId}), role ${me.role}, tenant ${me.tenantId}${me.scope ? `, groups ${me.scope.join(',')}` : ''}, at ${client.url}\n`);
    });
}

function expiry(iso: string | null, now = Date.now()): string {
  if (!iso) return 'never';
  const at = Date.parse(iso);
  return at <= now ? 'expired' : `in ${age(new Date(now - (at - now)).toISOString(), now)}`;
}
