/**
 * Nothing of the router keeps a process alive: after close() (with a WebSocket and keep-alive
 * connections open at the time), and even without close() for health checks alone. Each case runs in
 * a child process that must exit by itself.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const here = (file: string) => fileURLToPath(new URL(file, import.meta.url));

/** Runs an ES module body in a child node (with tsx for the .ts imports); resolves when it exits. */
function runChild(body: string, timeoutMs: number): Promise<{ code: number | null; stdout: string; stderr: string; timedOut: boolean }> {
  const script = `
    const { EnvironmentRouter } = await import(${JSON.stringify(here('./router.ts'))});
    const { startBackend, send } = await import(${JSON.stringify(here('./test-backends.ts'))});
    // If something still holds the process, say what (this timer itself holds nothing).
    const report = () => setTimeout(() => console.error('still alive:', JSON.stringify(process.getActiveResourcesInfo())), 1500).unref();
    ${body}
  `;
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, timedOut });
    });
  });
}

describe('EnvironmentRouter handles', () => {
  it('leaves no open handle after close(), with a WebSocket and keep-alive connections open', async () => {
    const result = await runChild(
      `
      const http = await import('node:http');
      const { once } = await import('node:events');
      const { WebSocket, WebSocketServer } = await import('ws');
      const backend = await startBackend('h-1');
      const wss = new WebSocketServer({ server: backend.server });
      wss.on('connection', (s) => s.on('message', (d) => s.send(d)));
      const router = new EnvironmentRouter();
      router.setRoute('shop', { backends: [{ id: 'h-1', url: backend.url }], healthIntervalMs: 20 });
      // A backend that never answers: its health checks are in flight when the router closes.
      const silent = await startBackend('h-2', () => {});
      router.setRoute('silent', { backends: [{ id: 'h-2', url: silent.url }], healthIntervalMs: 20 });
      const port = await router.listen({ port: 0, host: '127.0.0.1' });
      const agent = new http.Agent({ keepAlive: true });
      const res = await send(port, 'shop.localhost', '/', { agent });
      const ws = new WebSocket('ws://127.0.0.1:' + port + '/', { headers: { host: 'shop.localhost' } });
      await once(ws, 'open');
      ws.send('hi');
      const [echo] = await once(ws, 'message');
      await new Promise((r) => setTimeout(r, 100));
      const wsClosed = once(ws, 'close');
      await router.close();
      await wsClosed;
      wss.close();
      await backend.kill();
      await silent.kill();
      console.log(JSON.stringify({ status: res.status, echo: String(echo) }));
      report();
      `,
      15_000,
    );
    expect(result.stderr).not.toContain('still alive');
    expect(result).toMatchObject({ code: 0, timedOut: false });
    expect(JSON.parse(result.stdout)).toEqual({ status: 200, echo: 'hi' });
  });

  it('lets the process exit with routes and health checks running, even without close()', async () => {
    const result = await runChild(
      `
      const backend = await startBackend('h-1');
      const router = new EnvironmentRouter();
      router.setRoute('shop', { backends: [{ id: 'h-1', url: backend.url }], healthIntervalMs: 10 });
      await new Promise((r) => setTimeout(r, 100));
      console.log(router.route('shop').backends[0].lastCheckedAt ? 'checked' : 'not checked');
      await backend.kill();
      report();
      `,
      15_000,
    );
    expect(result.stderr).not.toContain('still alive');
    expect(result).toMatchObject({ code: 0, timedOut: false, stdout: 'checked\n' });
  });
});
