/**
 * "Beyond the machine" for egress tests, made on this machine: a network namespace behind a veth
 * pair, with addresses on `<prefix>.0/24` (the machine's side `.1`, the upstream `.2`) and any extra
 * ones given, and a TCP server on `port` that answers with the address a connection comes from.
 * No traffic leaves the machine. Root only.
 */
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';

export interface Upstream {
  /** The upstream's address on `<prefix>.0/24`. */
  address: string;
  /** The machine's address facing it (what a masqueraded connection comes from). */
  machineSide: string;
  port: number;
  ns: string;
  close(): Promise<void>;
}

function ip(args: string[]): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => execFile('ip', args, (err, _stdout, stderr) => resolve({ code: err ? 1 : 0, stderr })));
}

async function must(args: string[]): Promise<void> {
  const out = await ip(args);
  if (out.code !== 0) throw new Error(`ip ${args.join(' ')}: ${out.stderr}`);
}

/** `prefix` is the first three octets, e.g. '198.18.0'; `extra` are more `address/len` pairs (machine side, upstream side). */
export async function startUpstream(prefix: string, port: number, opts: { extra?: [string, string][]; routeBack?: string } = {}): Promise<Upstream> {
  const tag = randomBytes(3).toString('hex');
  const ns = `berthup-${tag}`;
  const veth = `bup${tag}`;
  const machineSide = `${prefix}.1`;
  const address = `${prefix}.2`;
  await must(['netns', 'add', ns]);
  const server = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', `require('net').createServer(s=>s.end('from '+s.remoteAddress)).listen(${port},'0.0.0.0',()=>console.log('up'))`], { stdio: ['ignore', 'pipe', 'ignore'] });
  const close = async (): Promise<void> => {
    server.kill();
    await ip(['netns', 'del', ns]);
    await ip(['link', 'del', veth]);
  };
  try {
    await must(['link', 'add', veth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
    await must(['addr', 'add', `${machineSide}/24`, 'dev', veth]);
    for (const [outside] of opts.extra ?? []) await must(['addr', 'add', outside, 'dev', veth]);
    await must(['link', 'set', veth, 'up']);
    const inside = [['addr', 'add', `${address}/24`, 'dev', 'eth0'], ...(opts.extra ?? []).map(([, up]) => ['addr', 'add', up, 'dev', 'eth0']), ['link', 'set', 'eth0', 'up'], ['link', 'set', 'lo', 'up']];
    if (opts.routeBack) inside.push(['route', 'add', opts.routeBack, 'via', machineSide]);
    for (const cmd of inside) await must(['netns', 'exec', ns, 'ip', ...cmd]);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the upstream server did not start')), 10_000);
      server.stdout?.once('data', () => {
        clearTimeout(timer);
        resolve();
      });
    });
  } catch (err) {
    await close();
    throw err;
  }
  return { address, machineSide, port, ns, close };
}
