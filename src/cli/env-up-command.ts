/**
 * `berth env up NAME --stack S [--ref R] [--set K=V]… [--ttl D] [--sleep-after D]`: the environment
 * as asked, whatever it was — created, or its new ref deployed, its settings changed, its timers
 * renewed; run again, nothing changes. The one line a CI pipeline runs on every push of a branch.
 */
import { resolve } from 'node:path';
import type { Command } from 'commander';
import type { UpsertResult } from '../environments/upsert.js';
import type { Context } from './context.js';
import { formatTimings, withProgress } from './env-progress.js';
import { collect, parseKeyValues, parseReplicas, UsageError, waitSeconds } from './output.js';

interface UpOptions {
  stack?: string;
  pool?: string;
  ref?: string;
  command?: string;
  mode?: string;
  replicas: string[];
  user?: string;
  set: string[];
  keepSettings?: boolean;
  ttl?: string;
  sleepAfter?: string;
  private?: boolean;
  public?: boolean;
  wait?: string;
  json?: boolean;
}

export function registerEnvUpCommand(env: Command, ctx: Context): void {
  env
    .command('up')
    .description('make an environment as asked: create it, or deploy its new ref, change its settings and renew its timers where they differ (run again: nothing changes)')
    .argument('<name>', 'a DNS label: it becomes NAME.<domain>')
    .option('--stack <stack>', 'the stack it runs (berth apply)')
    .option('--pool <pool>', 'the pool its hosts come from (default: the pool named after the stack)')
    .option('--ref <ref>', 'the version it runs, or a slug (see env create); a new one is deployed')
    .option('--command <cmd>', "a slug's web command, when the slug has no Procfile")
    .option('--mode <mode>', 'review or service (when it is created; default review)')
    .option('--replicas <n>', "hosts per service or review hosts (default 1 when created; another number scales it); SERVICE=N: a service's own count in service mode (repeatable)", collect, [])
    .option('--user <user>', 'who it is for')
    .option('--set <k=v>', 'its settings, all of them (repeatable): any setting not given is unset, unless --keep-settings', collect, [])
    .option('--keep-settings', 'leave its settings as they are')
    .option('--ttl <duration>', 'removed this long from now (renewed at every run)')
    .option('--sleep-after <duration>', 'asleep after this long without a request')
    .option('--private', 'only requests with a berth token that may see it get through')
    .option('--public', 'anyone who reaches the router may see it (left out: as it is; public when created)')
    .option('--wait <s>', 'seconds to wait for its services to be ready (default 120)')
    .option('--json', 'print JSON')
    .action(async (name: string, opts: UpOptions) => {
      if (!opts.stack) throw new UsageError('no stack: give --stack NAME (see berth.yaml `stacks:`)');
      if (opts.keepSettings && opts.set.length > 0) throw new UsageError('--keep-settings and --set: give one or the other');
      if (opts.private && opts.public) throw new UsageError('--private and --public: give one or the other');
      const counts = parseReplicas(opts.replicas);
      const wait = waitSeconds(opts.wait);
      const body = {
        stack: opts.stack,
        ...(opts.keepSettings ? {} : { set: parseKeyValues(opts.set, 'set') }),
        ...(opts.pool ? { pool: opts.pool } : {}),
        ...(opts.ref ? { ref: slugPath(opts.ref) } : {}),
        ...(opts.command ? { command: opts.command } : {}),
        ...(opts.mode ? { mode: opts.mode } : {}),
        ...counts,
        ...(opts.user ? { user: opts.user } : {}),
        ...(opts.ttl ? { ttl: opts.ttl } : {}),
        ...(opts.sleepAfter ? { sleepAfter: opts.sleepAfter } : {}),
        ...(opts.private ? { private: true } : opts.public ? { private: false } : {}),
        ...(wait !== undefined ? { wait } : {}),
      };
      const printer = ctx.printer(opts.json);
      const result = await withProgress(ctx, printer, name, `bringing ${name} up to date (stack ${opts.stack}${opts.ref ? `, ref ${opts.ref}` : ''})`, [], () =>
        ctx.client().put<UpsertResult>(`/v1/environments/${encodeURIComponent(name)}`, body),
      );
      if (printer.json) return printer.out(`${JSON.stringify(result, null, 2)}\n`);
      const e = result.environment;
      const timed = result.action === 'created' || (result.action === 'deployed' && e.state !== 'sleeping');
      printer.err(`${name} ${result.action}${result.changes.length ? `: ${result.changes.join('; ')}` : ''}${timed ? ` in ${e.timings['totalMs'] ?? '?'} ms (${formatTimings(e.timings)})` : ''}\n`);
      printer.out(`${e.url ?? '(no route)'}\n`);
    });
}

/** A slug given as a relative path is read by the server, which needs it absolute. */
export function slugPath(ref: string): string {
  return !ref.startsWith('/') && !/^[a-z]+:\/\//i.test(ref) && /\.(tar|tgz|tar\.gz)(#.*)?$/i.test(ref) ? resolve(ref) : ref;
}
