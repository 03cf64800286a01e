/**
 * The driver conformance suite against the local driver, on a bridge, subnet and cgroup parent of
 * its own (root on Linux needed; skipped otherwise). Hosts run the real bundled agent, which dials a
 * port nobody listens on and keeps retrying: the suite tests the driver, not enrolment.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import { expect } from 'vitest';
import { countLocalLeftovers, LocalDriver } from '../../src/drivers/local/index.js';
import type { HostSpec, LaunchedHost } from '../../src/drivers/types.js';
import { HOST_TAGS_PATH } from '../../src/protocol/messages.js';
import { driverConfig, tempDataDir } from '../helpers/server.js';
import { describeDriverConformance } from './conformance.js';

const canRun = process.platform === 'linux' && process.getuid?.() === 0;
const MAIN = { bridge: 'berthcnf0', subnet: '10.238.0.0/22', cgroupName: 'berthcnf' };
// A second driver on the same machine, to prove each lists only its own hosts.
const OTHER = { bridge: 'berthcnf1', subnet: '10.238.4.0/22', cgroupName: 'berthcnf1' };
// Port 9 (discard) on the bridge's gateway: nothing answers, and the agent only retries.
const serverUrl = (subnet: string): string => `ws://${subnet.replace(/\.0\/\d+$/, '.1')}:9/v1/agent`;

function specFor(net: typeof MAIN) {
  return (id: string, tags: Record<string, string> = {}): HostSpec => ({
    id,
    hostname: id,
    image: '/',
    tags,
    resources: { memoryMiB: 256, pids: 200 },
    agent: { hostId: id, token: `token-${id}`, serverUrl: serverUrl(net.subnet) },
  });
}

let probePort = 9300;

/** A listener in `to`'s network namespace, dialled from `from`'s: what one host's process would see. */
async function reaches(from: LaunchedHost, to: LaunchedHost): Promise<boolean> {
  const port = probePort++;
  const listener = spawn('ip', ['netns', 'exec', String(to.driverData['netns']), 'python3', '-c',
    `import socket;s=socket.create_server(('',${port}));s.settimeout(5);print('ready',flush=True);c,_=s.accept();c.sendall(b'ok\\n');c.close()`], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    await new Promise<void>((resolve, reject) => {
      listener.stdout.once('data', () => resolve());
      listener.once('exit', (code) => reject(new Error(`the listener exited with ${String(code)}`)));
    });
    const dialled = spawnSync('ip', ['netns', 'exec', String(from.driverData['netns']), 'timeout', '2', 'bash', '-c', `exec 3<>/dev/tcp/${to.ip}/${port} && head -1 <&3`], { encoding: 'utf8' });
    return dialled.stdout.trim() === 'ok';
  } finally {
    listener.kill();
  }
}

describeDriverConformance(
  'local',
  async () => {
    const dataDir = await tempDataDir('cnf');
    const config = driverConfig(dataDir, MAIN);
    const otherConfig = driverConfig(`${dataDir}/other`, OTHER);
    const baseline = countLocalLeftovers(config);
    const driver = new LocalDriver(config);
    const other = new LocalDriver(otherConfig);
    return {
      driver,
      spec: specFor(MAIN),
      // What the host itself sees, through its init's root.
      readTags: async (host) => JSON.parse(await readFile(`/proc/${Number(host.driverData['initPid'])}/root${HOST_TAGS_PATH}`, 'utf8')) as Record<string, string>,
      reaches,
      other: { driver: other, spec: specFor(OTHER) },
      cleanup: async () => {
        expect(countLocalLeftovers(config)).toEqual(baseline);
        expect(await driver.teardown()).toBe(true);
        expect(await other.teardown()).toBe(true);
        expect(existsSync(`/sys/class/net/${MAIN.bridge}`)).toBe(false);
        expect(existsSync(`/sys/class/net/${OTHER.bridge}`)).toBe(false);
        await rm(dataDir, { recursive: true, force: true });
      },
    };
  },
  { skip: !canRun },
);
