/**
 * One state file per service in the state dir (`<name>.json`), rewritten atomically on every change
 * that matters after an agent restart: which process runs the service (pid + start time), its spec,
 * whether the supervisor wants it running, and its restart history.
 */
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as z from 'zod/mini';
import { SERVICE_STATES, serviceExit, serviceSpec, type ServiceSpec } from '../../protocol/messages.js';

const STATE_FILE_VERSION = 1;

export const serviceRecord = z.object({
  version: z.literal(STATE_FILE_VERSION),
  spec: serviceSpec,
  /** The supervisor wants the service running (it may be starting, ready, in backoff or waiting). */
  active: z.boolean(),
  state: z.enum(SERVICE_STATES),
  reason: z.string(),
  since: z.string(),
  pid: z.nullable(z.int()),
  startTime: z.nullable(z.int()),
  startedAtMs: z.nullable(z.number()),
  ready: z.boolean(),
  restarts: z.int(),
  /** Absent from files written before reloads existed. */
  reloads: z._default(z.int(), 0),
  quickExits: z.int(),
  lastExit: z.nullable(z.extend(serviceExit, { known: z.boolean() })),
});
export type ServiceRecord = z.infer<typeof serviceRecord>;

export class ServiceStateStore {
  constructor(private readonly dir: string) {
    mkdirSync(dir, { recursive: true });
  }

  /** Every readable record; unreadable ones are reported and skipped. */
  loadAll(onProblem: (message: string) => void): ServiceRecord[] {
    const records: ServiceRecord[] = [];
    for (const name of readdirSync(this.dir)) {
      if (!name.endsWith('.json')) continue;
      const path = join(this.dir, name);
      try {
        const parsed = serviceRecord.safeParse(JSON.parse(readFileSync(path, 'utf8')));
        if (parsed.success && `${parsed.data.spec.name}.json` === name) records.push(parsed.data);
        else onProblem(`ignoring state file ${path}: not a valid service record`);
      } catch (e) {
        onProblem(`ignoring state file ${path}: ${(e as Error).message}`);
      }
    }
    return records;
  }

  /** Synchronous on purpose: a pid must be on disk before anything else can happen to the agent. */
  save(record: ServiceRecord): void {
    const path = join(this.dir, `${record.spec.name}.json`);
    writeFileSync(`${path}.tmp`, JSON.stringify(record));
    renameSync(`${path}.tmp`, path);
  }

  remove(spec: Pick<ServiceSpec, 'name'>): void {
    rmSync(join(this.dir, `${spec.name}.json`), { force: true });
  }
}
