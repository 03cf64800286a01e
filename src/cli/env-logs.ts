/**
 * `berth env logs NAME [--service S] [-n N] [-f] [--json]`: the logs of an environment's services
 * on all its hosts in one view, each line labelled with its service (and its host, when a service
 * runs on several), as `docker compose logs` and `fly logs` show an app. Each service's log is read
 * on its host by Run Command (as `berth svc logs` does), so the token needs `use` and the reads are
 * recorded like any command. Without -f the lines are merged by their timestamps.
 */
import type { Command } from 'commander';
import type { CommandView } from '../commands/views.js';
import type { EnvironmentView } from '../environments/views.js';
import type { HostServicesView } from '../services/services-service.js';
import type { ApiClient } from './client.js';
import type { Context } from './context.js';
import { followCommands, startFollower } from './follow-commands.js';
import { UsageError } from './output.js';

/** One service's log on one host. */
export interface LogSource {
  hostId: string;
  service: string;
  /** What its lines are labelled with: the service, and its host when the service has several. */
  label: string;
}

export interface LogLine {
  hostId: string;
  service: string;
  /** The supervisor's timestamp at the start of the line, when it has one. */
  at: string | null;
  line: string;
}

const STAMP = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z) /;

/** Every (host, service) of the environment, narrowed to `only`; a review host's services are asked of it. */
export async function logSources(client: Pick<ApiClient, 'get'>, env: EnvironmentView, only: string | undefined): Promise<LogSource[]> {
  const pairs: { hostId: string; service: string }[] = [];
  const runs = new Set<string>();
  for (const host of env.hosts) {
    const names = host.service !== null ? [host.service] : (await client.get<HostServicesView>(`/v1/hosts/${encodeURIComponent(host.hostId)}/services`)).services.map((s) => s.name);
    for (const service of names) {
      runs.add(service);
      if (only === undefined || service === only) pairs.push({ hostId: host.hostId, service });
    }
  }
  if (pairs.length === 0) {
    const known = [...runs].sort().join(', ') || 'nothing yet';
    throw new UsageError(only !== undefined ? `environment ${env.name} has no service ${only} (it runs: ${known})` : `environment ${env.name} has no host with services yet`);
  }
  const hostsOf = new Map<string, number>();
  for (const p of pairs) hostsOf.set(p.service, (hostsOf.get(p.service) ?? 0) + 1);
  return pairs.map((p) => ({ ...p, label: (hostsOf.get(p.service) ?? 0) > 1 ? `${p.service}@${shortHost(p.hostId)}` : p.service }));
}

/** h-007c9984af4ea5104 -> h-007c99: enough to tell a service's hosts apart on one screen. */
function shortHost(id: string): string {
  return id.length > 8 ? id.slice(0, 8) : id;
}

export function toLogLine(source: LogSource, line: string): LogLine {
  return { hostId: source.hostId, service: source.service, at: STAMP.exec(line)?.[1] ?? null, line };
}

/** Lines of several logs in time order; lines without a timestamp keep their place after the one before. */
export function mergeByTime<T extends { at: string | null }>(logs: T[][]): T[] {
  const keyed = logs.flatMap((lines, source) => {
    let last = '';
    return lines.map((l, index) => {
      last = l.at ?? last;
      return { l, key: last, source, index };
    });
  });
  keyed.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : a.source - b.source || a.index - b.index));
  return keyed.map((k) => k.l);
}

/** Splits a stream's chunks into whole lines; the rest waits for the next chunk (or the end). */
export class LineSplitter {
  private rest = '';
  push(chunk: string): string[] {
    const parts = (this.rest + chunk).split('\n');
    this.rest = parts.pop() ?? '';
    return parts;
  }
  end(): string[] {
    const rest = this.rest;
    this.rest = '';
    return rest ? [rest] : [];
  }
}

export function registerEnvLogsCommand(env: Command, ctx: Context): void {
  env
    .command('logs')
    .description("its services' logs from all its hosts, each line labelled with its service (-f: then as they are written)")
    .argument('<name>')
    .option('--service <name>', 'only this service')
    .option('-n, --lines <n>', 'lines from the end of each log', Number, 100)
    .option('-f, --follow', 'keep printing new lines, across rotation (Ctrl-C ends)')
    .option('--json', 'print JSON (with -f: one object per line)')
    .action(async (name: string, opts: { service?: string; lines: number; follow?: boolean; json?: boolean }) => {
      if (!Number.isFinite(opts.lines) || opts.lines < 0) throw new UsageError(`--lines ${String(opts.lines)} is not a number of lines`);
      if (opts.service !== undefined && !/^[a-z0-9][a-z0-9_-]{0,62}$/.test(opts.service)) throw new UsageError(`${JSON.stringify(opts.service)} is not a service name`);
      const client = ctx.client();
      const view = await client.get<EnvironmentView>(`/v1/environments/${encodeURIComponent(name)}`);
      const sources = await logSources(client, view, opts.service);
      const { SERVICE_LOG_DIR } = await import('../protocol/messages.js');
      const lines = Math.floor(opts.lines);
      const fileOf = (s: LogSource) => `${SERVICE_LOG_DIR}/${s.service}.log`;
      const width = Math.max(...sources.map((s) => s.label.length));
      const show = (source: LogSource, line: string): string => (opts.json ? `${JSON.stringify(toLogLine(source, line))}\n` : `${source.label.padEnd(width)} | ${line}\n`);

      if (!opts.follow) {
        const read = await Promise.all(
          sources.map(async (s) => {
            const body = { targets: { hostIds: [s.hostId] }, parameters: { commands: [`tail -n ${lines} ${fileOf(s)}`], executionTimeout: 60 }, wait: 60 };
            const inv = (await client.post<CommandView>('/v1/commands', body)).invocations[0];
            if (inv?.status !== 'Success') {
              process.stderr.write(`berth: ${s.label} on ${s.hostId}: ${(inv?.stderr ?? '').trim() || `reading ${fileOf(s)} failed (${inv?.status ?? 'no invocation'})`}\n`);
              ctx.exitCode = 1;
              return [];
            }
            return inv.stdout.split('\n').filter((l) => l !== '').map((l) => ({ source: s, ...toLogLine(s, l) }));
          }),
        );
        const merged = mergeByTime(read);
        if (opts.json) process.stdout.write(`${JSON.stringify(merged.map(({ source: _, ...l }) => l), null, 2)}\n`);
        else for (const l of merged) process.stdout.write(show(l.source, l.line));
        return;
      }

      // -f: one follower per log, all streamed at once, each split into whole lines to label.
      const followers = await Promise.all(sources.map((s) => startFollower(client, s.hostId, fileOf(s), lines)));
      const splitters = sources.map(() => ({ stdout: new LineSplitter(), stderr: new LineSplitter() }));
      await followCommands(client, followers.map((f) => f.id), (i, chunk) => {
        const source = sources[i];
        const split = splitters[i];
        if (!source || !split) return;
        for (const line of split[chunk.stream].push(chunk.data)) {
          if (chunk.stream === 'stderr') process.stderr.write(`berth: ${source.label}: ${line}\n`);
          else process.stdout.write(show(source, line));
        }
      });
      sources.forEach((source, i) => {
        for (const line of splitters[i]?.stdout.end() ?? []) process.stdout.write(show(source, line));
      });
    });
}
