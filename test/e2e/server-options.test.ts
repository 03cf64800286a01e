/**
 * `berth server` refuses options it cannot use before it touches anything: exit code 2, a message
 * that names the value and says what to give instead, and no data dir made. And a port another
 * program holds: exit 2 naming it and the option that moves it, the process gone (not hanging on
 * what it had opened), and `berth down` then leaves nothing.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { makeCa, makeCertificate } from '../helpers/certs.js';

const bin = join(import.meta.dirname, '..', '..', 'bin', 'berth.js');
const dir = mkdtempSync(join(tmpdir(), 'berth-server-options-'));
const cert = makeCertificate(dir, 'router', ['*.example.test']);
const privateCa = makeCa(dir, 'private');
const issued = makeCertificate(dir, 'agents', ['10.213.0.1'], privateCa);

function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [bin, ...args], { timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

function server(...args: string[]): Promise<{ code: number; stderr: string }> {
  return run(['server', '--data-dir', join(dir, 'data'), '--port', '0', ...args]);
}

const canRun = process.platform === 'linux' && process.getuid?.() === 0;
const NET = { bridge: 'berthprt0', subnet: '10.209.0.0/24', name: 'berthprt' };

describe('berth server with options it cannot use', () => {
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it.each([
    [['--dns', 'dns.example'], /"dns\.example" is not a name server address/],
    [['--dns', '192.0.2.53:99999'], /not a name server address/],
    [['--egress-deny', '10.0.0.0/33'], /10\.0\.0\.0\/33/],
    [['--shell-idle-timeout', 'soon'], /--shell-idle-timeout "soon" is not a duration/],
    [['--router-tls-cert', 'router.crt'], /--router-tls-cert and --router-tls-key go together/],
    [['--tls-key', 'api.key'], /--tls-cert and --tls-key go together/],
    [['--tls-cert', cert.certFile, '--tls-key', join(dir, 'none.key')], /the API's TLS key .*none\.key cannot be read/],
    [['--router-redirect-port', '8080'], /--router-redirect-port redirects to HTTPS: give --router-tls-cert and --router-tls-key too/],
    [['--router-tls-cert', join(dir, 'none.crt'), '--router-tls-key', join(dir, 'none.key')], /the router's TLS certificate .*none\.crt cannot be read/],
    [['--router-tls-cert', cert.certFile, '--router-tls-key', cert.keyFile], /certificate is for DNS:\*\.example\.test, which does not cover the environments' names \(NAME\.localhost\)/],
    [['--standby'], /--standby waits for a PostgreSQL database another server holds: set BERTH_DATABASE_URL/],
    [['--aws-ami-keep', '0'], /--aws-ami-keep must be a whole number of at least 1 \(got 0\)/],
    [['--image-gc-after', 'weekly'], /--image-gc-after "weekly" is not a duration/],
    [['--agent-tls-key', 'agent.key'], /--agent-tls-cert and --agent-tls-key go together/],
    [['--agent-tls-ca', privateCa.certFile], /--agent-tls-ca names the CA of --agent-tls-cert/],
    [['--agent-tls-cert', issued.certFile, '--agent-tls-key', issued.keyFile], /agents would not accept the agent channel's certificate .*: unable to (verify the first certificate|get local issuer certificate)/],
    [['--agent-tls-cert', issued.certFile, '--agent-tls-key', issued.keyFile, '--agent-tls-ca', cert.certFile], /agents would not accept/],
  ])('%j: exit 2, nothing made', async (args, message) => {
    const out = await server(...args);
    expect(out.code).toBe(2);
    expect(out.stderr).toMatch(message);
    expect(out.stderr).toContain('hint:');
    expect(existsSync(join(dir, 'data'))).toBe(false);
  });
});

describe.skipIf(!canRun)('berth server on a port another program holds', () => {
  it('exits 2 naming the port and the option that moves it; berth down then leaves nothing', async () => {
    const data = join(dir, 'ports');
    const holder = createServer();
    await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
    const port = (holder.address() as AddressInfo).port;
    try {
      const out = await run(['server', '--data-dir', data, '--port', String(port), '--agent-port', '0', '--router-port', '0', '--bridge', NET.bridge, '--subnet', NET.subnet, '--name', NET.name]);
      expect(out.code, out.stderr).toBe(2);
      expect(out.stderr).toContain(`berth: the API cannot listen on 127.0.0.1:${port}: another program (or another berth server) uses that port\n  hint: Stop what holds that port, or start berth with another --port`);
    } finally {
      holder.close();
    }
    const down = await run(['down', '--data-dir', data, '--purge']);
    expect(down.code, down.stderr).toBe(0);
    expect(existsSync(`/sys/class/net/${NET.bridge}`)).toBe(false);
    expect(existsSync(data)).toBe(false);
  });
});
