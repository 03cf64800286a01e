/**
 * Which driver a data dir's server last ran, and for AWS with which options: `berth down` takes that
 * server's hosts down without being told them again (the local driver records its network itself,
 * in its state dir, before it sets anything up). Written once the server has started: options it
 * refused change nothing, and a server that did not start made nothing on AWS (pools' groups are
 * made by its running reconciler).
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { AwsServerOptions } from './server-command.js';

/** The options of `berth server --driver aws` that say where its hosts are; nothing secret (credentials come from the SDK's chain). */
export type AwsRecord = Omit<AwsServerOptions, 'driver'> & { name: string };

export interface DriverRecord {
  driver: 'local' | 'aws';
  aws?: AwsRecord;
}

const FILE = 'driver.json';

const AWS_KEYS = ['awsImage', 'awsInstanceType', 'awsRegion', 'awsEndpoint', 'awsSubnets', 'awsSecurityGroups', 'awsInstanceProfile', 'awsCommandChannel', 'awsSsmEndpoint', 'agentAdvertise', 'agentListen'] as const;

/** What of a server's options (or of a file read back) `berth down` needs to reach its AWS hosts again: the known string options. */
export function awsRecord(opts: Partial<Record<(typeof AWS_KEYS)[number], unknown>> & { name: string }): AwsRecord {
  const record: AwsRecord = { name: opts.name };
  for (const key of AWS_KEYS) {
    const value = opts[key];
    if (typeof value === 'string') record[key] = value;
  }
  return record;
}

export function recordDriver(dataDir: string, record: DriverRecord): void {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  writeFileSync(join(dataDir, FILE), `${JSON.stringify(record, null, 2)}\n`, { mode: 0o600 });
}

/** The last record, or undefined when there is none (a data dir of a server from before records). */
export function recordedDriver(dataDir: string): DriverRecord | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(join(dataDir, FILE), 'utf8'));
  } catch {
    return undefined;
  }
  if (typeof parsed !== 'object' || parsed === null) return undefined;
  const { driver, aws } = parsed as { driver?: unknown; aws?: unknown };
  if (driver === 'local') return { driver };
  if (driver === 'aws' && typeof aws === 'object' && aws !== null && typeof (aws as { name?: unknown }).name === 'string') {
    // Only the known string options are kept: a hand-edited file cannot put anything else into the driver's config.
    return { driver, aws: awsRecord(aws as { name: string }) };
  }
  return undefined;
}
