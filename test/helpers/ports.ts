/** TCP ports free on loopback right now (the OS picks them), for servers a test starts itself. */
import { createServer, type Server } from 'node:net';

export async function freePort(): Promise<number> {
  const [port] = await freePorts(1);
  if (port === undefined) throw new Error('no free port');
  return port;
}

/**
 * `count` distinct free ports. Every probe stays open until all are known: a port closed before the
 * next probe listens can be handed out again, and two servers would then be told the same one.
 */
export async function freePorts(count: number): Promise<number[]> {
  const probes: Server[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const probe = createServer();
      probes.push(probe);
      await new Promise<void>((resolve, reject) => {
        probe.once('error', reject);
        probe.listen(0, '127.0.0.1', resolve);
      });
    }
    return probes.map((probe) => {
      const address = probe.address();
      if (typeof address !== 'object' || !address) throw new Error('a probe has no port');
      return address.port;
    });
  } finally {
    await Promise.all(probes.map((probe) => new Promise<void>((resolve) => probe.close(() => resolve()))));
  }
}
