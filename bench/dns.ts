/**
 * What a name lookup costs a host with egress (dns-forwarder.ts): a resolver inside the host asks
 * the gateway, which relays to the machine's name server; beside it, the same resolver code on the
 * machine asking that name server directly. The name server is a test one on loopback (answers at
 * once), so the difference is the relay's own cost (the bridge, the server's event loop, a socket
 * per query). Turns alternate, two of each.
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
  const res = await srv.api.post<HostView>('/v1/hosts', { resources: { egress: true } });
  if (res.status !== 201) throw new Error(`launch failed: ${JSON.stringify(res.body)}`);
  const host = res.body;
  const relayed: number[] = [];
  const direct: number[] = [];
  const half = Math.ceil(opts.queries / 2);
  try {
    for (let turn = 1; turn <= 2; turn++) {
      opts.progress(`name lookups ${turn}/2: x${half} from a host, through the gateway…`);
      const cmd = await srv.api.post<CommandView>('/v1/commands', { targets: { hostIds: [host.id] }, parameters: { commands: [`node -e '${lookupLoop(opts.gateway, 'upstream.test', half)}'`] }, wait: 120 });
      const inv = cmd.body.invocations[0];
      if (inv?.status !== 'Success') throw new Error(`lookups in the host failed: ${JSON.stringify(inv)}`);
      relayed.push(...(JSON.parse(inv.stdout) as number[]));
      opts.progress(`name lookups ${turn}/2: x${half} from the machine, straight to the name server…`);
      const out = await execFileAsync(process.execPath, ['-e', lookupLoop(`127.0.0.1:${opts.dnsPort}`, 'upstream.test', half)]);
      direct.push(...(JSON.parse(out.stdout) as number[]));
    }
  } finally {
    await srv.api.delete(`/v1/hosts/${host.id}`);
    await names.close();
  }
  opts.progress('');
  const r = summarize(relayed);
  const d = summarize(direct);
  return [
    `| name lookup (A record) from a host with egress, relayed at the gateway to the machine's name server (a test one on loopback) | ${r.n} | ${ms(r.p50)} | ${ms(r.p99)} | asked directly from the machine: ${ms(d.p50)} / ${ms(d.p99)}; the relay adds ${ms(r.p50 - d.p50)} at p50 | |`,
  ];
}
