/**
 * What a name lookup costs a host with egress (dns-forwarder.ts): a resolver inside the host asks
 * the gateway, which relays to the machine's name server; beside it, the same resolver code on the
 * machine asking that name server directly. The name server is a test one on loopback (answers at
 * once), so the difference is the relay's own cost (the bridge, the server's event loop, a socket
 * per query). A host whose egress is narrowed to the name asks too: its first answer opens the
 * address (an nft call), later ones within half the answer's time need none. Turns alternate, two of each.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { CommandView } from '../src/commands/views.js';
import type { HostView } from '../src/hosts/views.js';
import type { startServer } from '../test/helpers/server.js';
import { startTestDnsServer } from '../test/helpers/dns-server.js';
import { ms, summarize } from './stats.js';

const execFileAsync = promisify(execFile);

/** A node script asking `server` for `name` `count` times, one after the other; prints the latencies (ms) as JSON. */
function lookupLoop(server: string, name: string, count: number): string {
  return `const {Resolver}=require("dns").promises;const r=new Resolver({timeout:2000,tries:1});r.setServers([${JSON.stringify(server)}]);(async()=>{const s=[];for(let i=0;i<${count};i++){const t=performance.now();await r.resolve4(${JSON.stringify(name)});s.push(performance.now()-t)}console.log(JSON.stringify(s))})().catch(e=>{console.error(e.code||String(e));process.exit(1)})`;
}

export async function dnsBench(srv: Awaited<ReturnType<typeof startServer>>, opts: { dnsPort: number; gateway: string; queries: number; progress: (line: string) => void }): Promise<string[]> {
  const names = await startTestDnsServer({ 'upstream.test': '198.18.0.2' }, '127.0.0.1', opts.dnsPort);
  const launch = async (resources: Record<string, unknown>) => {
    const res = await srv.api.post<HostView>('/v1/hosts', { resources });
    if (res.status !== 201) throw new Error(`launch failed: ${JSON.stringify(res.body)}`);
    return res.body;
  };
  const host = await launch({ egress: true });
  const narrowed = await launch({ egress: true, egressAllow: ['upstream.test'] });
  const inHost = async (target: HostView, count: number): Promise<number[]> => {
    const cmd = await srv.api.post<CommandView>('/v1/commands', { targets: { hostIds: [target.id] }, parameters: { commands: [`node -e '${lookupLoop(opts.gateway, 'upstream.test', count)}'`] }, wait: 120 });
    const inv = cmd.body.invocations[0];
    if (inv?.status !== 'Success') throw new Error(`lookups in the host failed: ${JSON.stringify(inv)}`);
    return JSON.parse(inv.stdout) as number[];
  };
  const relayed: number[] = [];
  const narrowedSamples: number[] = [];
  const direct: number[] = [];
  const half = Math.ceil(opts.queries / 2);
  let firstNarrowed = 0;
  let firstPlain = 0;
  try {
    for (let turn = 1; turn <= 2; turn++) {
      opts.progress(`name lookups ${turn}/2: x${half} from a host, through the gateway…`);
      const plain = await inHost(host, half);
      if (turn === 1) firstPlain = plain[0] ?? 0;
      relayed.push(...(turn === 1 ? plain.slice(1) : plain));
      opts.progress(`name lookups ${turn}/2: x${half} from a host narrowed to the name…`);
      const samples = await inHost(narrowed, half);
      if (turn === 1) firstNarrowed = samples[0] ?? 0;
      narrowedSamples.push(...(turn === 1 ? samples.slice(1) : samples));
      opts.progress(`name lookups ${turn}/2: x${half} from the machine, straight to the name server…`);
      const out = await execFileAsync(process.execPath, ['-e', lookupLoop(`127.0.0.1:${opts.dnsPort}`, 'upstream.test', half)]);
      direct.push(...(JSON.parse(out.stdout) as number[]));
    }
  } finally {
    await srv.api.delete(`/v1/hosts/${host.id}`);
    await srv.api.delete(`/v1/hosts/${narrowed.id}`);
    await names.close();
  }
  opts.progress('');
  const r = summarize(relayed);
  const n = summarize(narrowedSamples);
  const d = summarize(direct);
  return [
    `| name lookup (A record) from a host with egress, relayed at the gateway to the machine's name server (a test one on loopback), after its first lookup | ${r.n} | ${ms(r.p50)} | ${ms(r.p99)} | asked directly from the machine: ${ms(d.p50)} / ${ms(d.p99)}; the relay adds ${ms(r.p50 - d.p50)} at p50 | |`,
    `| the same from a host narrowed to that name (--egress-allow), after its first lookup | ${n.n} | ${ms(n.p50)} | ${ms(n.p99)} | first lookup (it opened the address: one nft call): ${ms(firstNarrowed)}, against ${ms(firstPlain)} for the host above | |`,
  ];
}
