/**
 * `berth up`, the main job on a fresh machine: a server on embedded defaults (or the one already
 * running for this data dir), the bundled demo (or any berth.yaml) baked and applied, its pools
 * filled with progress shown, and what to run next. Then it serves until Ctrl-C.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import type { Command } from 'commander';
import type { BerthServer } from '../server/berth-server.js';
import { ApiClient } from './client.js';
import type { Context } from './context.js';
import { bake, readSpecFile } from './image-commands.js';
import { packageRoot } from './paths.js';
import { waitSeconds } from './output.js';
import { waitForPools } from './pool-wait.js';
import { startLocalServer, untilStopped, withServerOptions, type ServerOptions } from './server-command.js';

interface UpOptions extends ServerOptions {
  file?: string;
  wait: string;
}

export function registerUpCommand(program: Command, ctx: Context, env: NodeJS.ProcessEnv): void {
  withServerOptions(
    program
      .command('up')
      .description("start berth on this machine with the bundled demo: the server, the demo image baked, its stack applied and its pool filled; then it serves (Ctrl-C stops it, hosts keep running)")
      .option('-f, --file <file>', "the berth.yaml to bake and apply (default: ./berth.yaml, else berth's bundled demo)")
      .option('--wait <s>', 'seconds to wait for the pools to fill', '300'),
  ).action(async (opts: UpOptions) => {
    const file = opts.file ?? (existsSync('berth.yaml') ? 'berth.yaml' : join(packageRoot(), 'berth.yaml'));
    const waitS = waitSeconds(opts.wait) ?? 300;
    const say = (line: string) => process.stderr.write(`${line}\n`);
    const [{ applyFile, readBerthYaml }, { parseStacksFile }] = await Promise.all([import('./apply-file.js'), import('../stacks/spec.js')]);
    // Checked before anything starts: a bad file changes nothing.
    const pools = readBerthYaml(file);
    const existing = await runningServer(ctx);
    let server: BerthServer | undefined;
    let client = existing;
    if (!client) {
      say(`starting berth (data dir ${ctx.dataDir()})…`);
      server = await startLocalServer(ctx.dataDir(), opts, env, (step) => say(`  ${step}…`));
      client = new ApiClient({ url: server.url, token: server.token });
    } else say('using the berth server already running for this data dir');
    const upCtx: Context = { ...ctx, client: () => client };
    const printer = upCtx.printer(false);

    say(`baking the images of ${file}…`);
    await bake(upCtx, printer, client.streamPost('/v1/images/builds', { text: readSpecFile(file), file, projectDir: dirname(resolve(file)) }), false);
    if (upCtx.exitCode !== 0) {
      ctx.exitCode = upCtx.exitCode;
      await server?.stop();
      return;
    }
    say(`applying ${file}…`);
    await applyFile(upCtx, file, printer);
    await waitForPools(client, pools.map((p) => p.name), waitS * 1000, say);

    const stack = parseStacksFile(readFileSync(file, 'utf8'), file, dirname(resolve(file)))[0]?.name ?? 'STACK';
    const routerUrl = server?.router.urlFor('alice') ?? `http://alice.localhost:${opts.routerPort}/`;
    say(
      `\nberth is up${server ? ` (API ${server.url})` : ''}. Next, in another terminal:\n` +
        `  npx berth env create alice --stack ${stack}      # prints ${routerUrl} — open it in a browser\n` +
        `  npx berth env ls\n` +
        `  npx berth env shell alice                      # a terminal on alice's host\n` +
        `  npx berth env deploy alice --ref v2            # new hosts first; no request lost\n` +
        `  npx berth env sleep alice                      # its host back to the pool; its next request wakes it\n` +
        `  npx berth env rm alice\n` +
        `  npx berth dashboard                            # the web dashboard's address, with the token\n`,
    );
    if (!server) return;
    say('serving; Ctrl-C stops the server (hosts keep running and are adopted at the next start; then `berth down` removes them all)');
    await untilStopped();
    await server.stop();
  });
}

/** The server for this data dir when one answers; undefined when none runs. */
async function runningServer(ctx: Context): Promise<ApiClient | undefined> {
  try {
    const client = ctx.client();
    await client.get('/v1/health');
    return client;
  } catch {
    return undefined;
  }
}
