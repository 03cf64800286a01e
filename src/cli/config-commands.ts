/** `berth config show`: the effective config of a stack host's services, with where each value came from. */
import type { Command } from 'commander';
import type { HostConfigView } from '../services/stack-sync.js';
import type { Context } from './context.js';
import { table, UsageError } from './output.js';

export function registerConfigCommands(program: Command, ctx: Context): void {
  const config = program.command('config').description("a stack host's layered service config");
  config
    .command('show')
    .description('every variable of each service with its source (common < environment < service < inline < host override); secret values masked')
    .argument('[service]', 'only this service')
    .option('--host <id>', 'the host')
    .option('--show-secrets', 'print secret values too')
    .option('--json', 'print JSON')
    .action(async (service: string | undefined, opts: { host?: string; showSecrets?: boolean; json?: boolean }) => {
      if (!opts.host) throw new UsageError('which host? give --host ID');
      const query = new URLSearchParams({ ...(service ? { service } : {}), ...(opts.showSecrets ? { showSecrets: 'true' } : {}) });
      const view = await ctx.client().get<HostConfigView>(`/v1/hosts/${encodeURIComponent(opts.host)}/config?${query.toString()}`);
      const printer = ctx.printer(opts.json);
      if (printer.json) return printer.out(`${JSON.stringify(view, null, 2)}\n`);
      printer.out(`host ${view.hostId}: stack ${view.stack}, mode ${view.mode}\n`);
      for (const problem of view.problems) printer.err(`problem: ${problem}\n`);
      for (const [name, cfg] of Object.entries(view.services)) {
        printer.out(`\n${name}  (config ${cfg.hash})\n`);
        const rows = Object.keys(cfg.env)
          .sort()
          .map((key) => [key, cfg.env[key] ?? '', cfg.sources[key] ?? '']);
        printer.out(table(['VARIABLE', 'VALUE', 'FROM'], rows));
        if (cfg.unset.length) printer.out(`unset: ${cfg.unset.join(', ')}\n`);
      }
    });

  config
    .command('diff')
    .description("compare two stack hosts' effective service config: variables added, removed or changed (secret values masked)")
    .argument('<hostA>')
    .argument('<hostB>')
    .argument('[service]', 'only this service')
    .option('--show-secrets', 'print secret values too')
    .option('--json', 'print JSON')
    .action(async (hostA: string, hostB: string, service: string | undefined, opts: { showSecrets?: boolean; json?: boolean }) => {
      const query = new URLSearchParams({ ...(service ? { service } : {}), ...(opts.showSecrets ? { showSecrets: 'true' } : {}) }).toString();
      const [a, b] = await Promise.all([hostA, hostB].map((id) => ctx.client().get<HostConfigView>(`/v1/hosts/${encodeURIComponent(id)}/config?${query}`)));
      if (!a || !b) return;
      const diff = diffConfigs(a, b);
      if (diff.length > 0) ctx.exitCode = 1; // like diff(1): differences found
      const printer = ctx.printer(opts.json);
      if (printer.json) return printer.out(`${JSON.stringify(diff, null, 2)}\n`);
      if (diff.length === 0) return printer.out(`no differences between ${hostA} and ${hostB}\n`);
      printer.out(table(['SERVICE', 'VARIABLE', hostA, hostB], diff.map((d) => [d.service, d.variable, d.a ?? '(unset)', d.b ?? '(unset)'])));
    });
}

export interface ConfigDifference {
  service: string;
  variable: string;
  /** Null: the variable is not set there (or the service does not run there: variable "*"). */
  a: string | null;
  b: string | null;
}

/** Variables whose value differs between two hosts, per service either host runs. */
export function diffConfigs(a: HostConfigView, b: HostConfigView): ConfigDifference[] {
  const out: ConfigDifference[] = [];
  for (const service of [...new Set([...Object.keys(a.services), ...Object.keys(b.services)])].sort()) {
    const ea = a.services[service]?.env;
    const eb = b.services[service]?.env;
    if (!ea || !eb) {
      out.push({ service, variable: '*', a: ea ? 'runs' : null, b: eb ? 'runs' : null });
      continue;
    }
    for (const variable of [...new Set([...Object.keys(ea), ...Object.keys(eb)])].sort()) {
      const va = Object.hasOwn(ea, variable) ? (ea[variable] ?? null) : null;
      const vb = Object.hasOwn(eb, variable) ? (eb[variable] ?? null) : null;
      if (va !== vb) out.push({ service, variable, a: va, b: vb });
    }
  }
  return out;
}
