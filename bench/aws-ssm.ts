/**
 * `npm run bench -- aws` (second part): Run Command over the SSM channel, against moto for EC2 and
 * the SSM emulator of test/helpers/emulated-ssm.ts, beside berth's own agent channel on the same
 * emulated AWS. Counts the SSM calls each command makes (SSM has no push: the result is polled)
 * and the latency of `true` from the API call to the stored result. The emulator answers on
 * loopback at once, so the latency is berth's polling schedule, not AWS's.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { agentBundleDir } from '../src/cli/paths.js';
import { AwsDriver } from '../src/drivers/aws/aws-driver.js';
import { BerthServer } from '../src/server/berth-server.js';
import { motoDriverConfig, motoNetwork } from '../test/drivers/aws-fixtures.js';
import { EmulatedSsm } from '../test/helpers/emulated-ssm.js';
import { motoInstalled, startMoto } from '../test/helpers/moto.js';
import { Api } from '../test/helpers/server.js';
import { ms, summarize } from './stats.js';

const NAME = 'bbenchssm';

export async function awsSsmBench(opts: { commands: number; progress: (line: string) => void }): Promise<string[]> {
  if (!motoInstalled()) return ["| Run Command over SSM on moto | | | | skipped: moto is not installed (pip install 'moto[server]') | |"];
  const moto = await startMoto();
  const dir = await mkdtemp(join(tmpdir(), 'berth-bench-ssm-'));
  const net = await motoNetwork(moto.endpoint);
  const ssm = new EmulatedSsm({ motoEndpoint: moto.endpoint, driverName: NAME, dir: join(dir, 'instances'), registerAfterMs: 0 });
  await ssm.start();
  const driver = new AwsDriver(motoDriverConfig(moto.endpoint, net, NAME, { agentListenHost: '127.0.0.1', commandChannel: 'ssm', ssmEndpoint: ssm.endpoint, ssmPollMs: 200 }));
  const server = await BerthServer.start({ dataDir: join(dir, 'data'), port: 0, agentPort: 0, driver, agentDir: agentBundleDir(), log: () => {}, router: { port: 0 } });
  const api = new Api(server.url, server.token);
  try {
    const host = await api.post<{ id: string }>('/v1/hosts', { wait: true, waitTimeout: 30 });
    if (host.status !== 201) throw new Error(`SSM bench launch failed: ${JSON.stringify(host.body)}`);
    const samples: number[] = [];
    const before = driver.callCounts();
    for (let i = 0; i < opts.commands; i++) {
      opts.progress(`aws: Run Command over SSM ${i + 1}/${opts.commands}…`);
      const t0 = performance.now();
      const res = await api.post<{ status: string }>('/v1/commands', { targets: { hostIds: [host.body.id] }, parameters: { commands: ['true'] }, wait: 30 });
      samples.push(performance.now() - t0);
      if (res.body.status !== 'Success') throw new Error(`SSM bench command ended ${res.body.status}`);
    }
    opts.progress('');
    const after = driver.callCounts();
    const per = (op: string) => ((after[op] ?? 0) - (before[op] ?? 0)) / opts.commands;
    const s = summarize(samples);
    return [
      `| Run Command \`true\` over SSM (moto + SSM emulator): API call until the stored result | ${s.n} | ${ms(s.p50)} | ${ms(s.p99)} | per command: ${per('SendCommand').toFixed(1)} SendCommand, ${per('GetCommandInvocation').toFixed(1)} GetCommandInvocation (polls: first after 250 ms), ${per('DescribeInstanceInformation').toFixed(2)} DescribeInstanceInformation | |`,
    ];
  } finally {
    await server.stop();
    driver.close();
    await ssm.stop();
    net.ec2.destroy();
    await moto.stop();
    await rm(dir, { recursive: true, force: true });
  }
}
