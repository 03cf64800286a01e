/**
 * `npm run bench -- aws`: the claim path on the AWS driver, against moto with a real agent per
 * emulated instance (test/helpers/emulated-fleet.ts). Counts the AWS calls each warm claim waits
 * for (target ≤ 3, and no describe: no polling) and its latency, for a new user's first claim
 * (its Auto Scaling group is created) and for a returning user's (the group exists). moto answers
 * on loopback in about a millisecond, so the latencies show berth's own cost, not AWS's.
 */
import type { ClaimView, PoolStatusView } from '../src/pools/views.js';
import { startFleetServer } from '../test/helpers/aws-fleet-server.js';
import { motoInstalled } from '../test/helpers/moto.js';
import { ms, summarize } from './stats.js';

const NAME = 'bbench';
/** What keeping groups of hosts apart costs a claim (network-groups.ts). */
const NETWORK_CALLS = ['DescribeInstances', 'DescribeSecurityGroups', 'CreateSecurityGroup', 'AuthorizeSecurityGroupIngress', 'AuthorizeSecurityGroupEgress', 'RevokeSecurityGroupEgress', 'ModifyInstanceAttribute', 'DeleteSecurityGroup'];

export async function awsBench(opts: { claims: number; progress: (line: string) => void }): Promise<string[]> {
  if (!motoInstalled()) return ["| AWS claim path on moto | | | | skipped: moto is not installed (pip install 'moto[server]') | |"];
  // The monitor at the server's own default (the tests' harness looks every 0.5 s).
  const harness = await startFleetServer(NAME, { monitorIntervalMs: 2000 });
  const { api, driver } = harness;
  try {
    const size = 8;
    await api.post('/v1/pools', { name: 'bench', size, maxLaunching: size, onEmpty: 'fail' });
    const waitFull = async (): Promise<void> => {
      const until = Date.now() + 120_000;
      while ((await api.get<PoolStatusView>('/v1/pools/bench')).body.status.ready < size) {
        if (Date.now() > until) throw new Error('the AWS bench pool did not fill in 2 minutes');
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    };
    const samples = { fresh: [] as number[], returning: [] as number[] };
    const calls = { fresh: [] as number[], returning: [] as number[] };
    let describes = 0;
    for (let i = 0; i < opts.claims; i++) {
      const kind = i % 2 === 0 ? 'fresh' : 'returning';
      // Returning users claim into the group the previous fresh claim made.
      const group = `user-${kind === 'fresh' ? i : i - 1}`;
      opts.progress(`aws: claim ${i + 1}/${opts.claims} (${kind} user)…`);
      await waitFull(); // a warm claim: the pool is full, as a user would find it
      const before = driver.callCounts();
      const t0 = performance.now();
      const res = await api.post<ClaimView>('/v1/pools/bench/claims', { group, init: [] });
      const elapsed = performance.now() - t0;
      if (res.status !== 201) throw new Error(`AWS bench claim failed: ${res.status} ${JSON.stringify(res.body)}`);
      samples[kind].push(elapsed);
      calls[kind].push(res.body.timings['backendCalls'] ?? NaN);
      const after = driver.callCounts();
      describes += (after['DescribeAutoScalingGroups'] ?? 0) - (before['DescribeAutoScalingGroups'] ?? 0);
      await api.post(`/v1/hosts/${res.body.host?.id ?? ''}/release`, {});
    }
    // Claims into a group whose hosts are running: the claim also waits until its host reaches
    // them (a security group per group of hosts, network-groups.ts). The second host of a group
    // makes the group's security group; the third joins it.
    const joining = { second: [] as number[], third: [] as number[] };
    const joinCalls = { second: [] as number[], third: [] as number[] };
    const pairs = Math.max(1, Math.floor(opts.claims / 2));
    for (let k = 0; k < pairs; k++) {
      const held: string[] = [];
      for (const nth of ['first', 'second', 'third'] as const) {
        opts.progress(`aws: group of 3, claim ${nth} of group ${k + 1}/${pairs}…`);
        await waitFull();
        const before = driver.callCounts();
        const t0 = performance.now();
        const res = await api.post<ClaimView>('/v1/pools/bench/claims', { group: `team-${k}`, init: [] });
        const elapsed = performance.now() - t0;
        if (res.status !== 201) throw new Error(`AWS bench claim failed: ${res.status} ${JSON.stringify(res.body)}`);
        held.push(res.body.host?.id ?? '');
        if (nth === 'first') continue;
        joining[nth].push(elapsed);
        const after = driver.callCounts();
        joinCalls[nth].push(NETWORK_CALLS.reduce((n, op) => n + (after[op] ?? 0) - (before[op] ?? 0), 0));
      }
      for (const id of held) await api.post(`/v1/hosts/${id}/release`, {});
    }
    opts.progress('');
    const second = summarize(joining.second);
    const third = summarize(joining.third);
    const fresh = summarize(samples.fresh);
    const returning = summarize(samples.returning);
    const maxCalls = Math.max(...calls.fresh, ...calls.returning);
    return [
      `| AWS warm claim on moto, a new user (group created): API call until the host is in the user's group, AWS calls waited for (max) | ${fresh.n} | ${ms(fresh.p50)} | ${ms(fresh.p99)} | ${Math.max(...calls.fresh)} calls (target ≤ 3: ${Math.max(...calls.fresh) <= 3 ? 'met' : 'MISSED'}) | |`,
      `| AWS warm claim on moto, a returning user (group exists) | ${returning.n} | ${ms(returning.p50)} | ${ms(returning.p99)} | ${Math.max(...calls.returning)} calls | |`,
      `| AWS describes (polling) during claims | ${opts.claims} | | | ${describes} DescribeAutoScalingGroups (target 0: ${describes === 0 ? 'met' : 'MISSED'}); max ${maxCalls} calls per claim | |`,
      `| AWS warm claim on moto, the second host of a group (its security group made, both hosts put in it) | ${second.n} | ${ms(second.p50)} | ${ms(second.p99)} | ${Math.max(...joinCalls.second)} EC2 calls for it (max) | |`,
      `| AWS warm claim on moto, the third host of a group (it joins the group's security group) | ${third.n} | ${ms(third.p50)} | ${ms(third.p99)} | ${Math.max(...joinCalls.third)} EC2 calls for it (max) | |`,
    ];
  } finally {
    await harness.stop();
  }
}
