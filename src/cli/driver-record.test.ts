import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { awsRecord, recordDriver, recordedDriver } from './driver-record.js';

describe('the driver a data dir last ran', () => {
  const dirs: string[] = [];
  const dataDir = (): string => {
    const dir = mkdtempSync(join(tmpdir(), 'berth-driver-record-'));
    dirs.push(dir);
    return join(dir, 'data');
  };
  afterEach(() => {
    for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  });

  it("keeps an AWS server's options that say where its hosts are, readable by its owner only", () => {
    const dir = dataDir();
    expect(recordedDriver(dir)).toBeUndefined();
    const opts = { driver: 'aws', name: 'prod', awsImage: 'ami-0123456789abcdef0', awsInstanceType: 't3.micro', awsRegion: 'eu-west-1', agentAdvertise: '10.0.0.5', port: '7070' };
    recordDriver(dir, { driver: 'aws', aws: awsRecord(opts) });
    expect(recordedDriver(dir)).toEqual({ driver: 'aws', aws: { name: 'prod', awsImage: 'ami-0123456789abcdef0', awsInstanceType: 't3.micro', awsRegion: 'eu-west-1', agentAdvertise: '10.0.0.5' } });
    expect(statSync(join(dir, 'driver.json')).mode & 0o777).toBe(0o600);
    recordDriver(dir, { driver: 'local' });
    expect(recordedDriver(dir)).toEqual({ driver: 'local' });
  });

  it('reads nothing but known string options from a hand-edited file, and nothing from a broken one', () => {
    const dir = dataDir();
    recordDriver(dir, { driver: 'local' });
    writeFileSync(join(dir, 'driver.json'), JSON.stringify({ driver: 'aws', aws: { name: 'x', awsRegion: 'us-east-1', awsSubnets: ['a'], awsImage: 5, endpoint: 'http://elsewhere' } }));
    expect(recordedDriver(dir)).toEqual({ driver: 'aws', aws: { name: 'x', awsRegion: 'us-east-1' } });
    writeFileSync(join(dir, 'driver.json'), '{"driver": "aws", "aws": {}}');
    expect(recordedDriver(dir)).toBeUndefined();
    writeFileSync(join(dir, 'driver.json'), 'not json');
    expect(recordedDriver(dir)).toBeUndefined();
  });
});
