/** Two hosts from one image are really isolated from each other and from the image. */
import { existsSync, readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CommandView } from '../../src/commands/views.js';
import type { HostView } from '../../src/hosts/views.js';
import { startServer, type InProcessServer } from '../helpers/server.js';

const NET = { bridge: 'berthiso0', subnet: '10.216.0.0/24', cgroupName: 'berthiso' };

describe('local hosts are isolated', () => {
  let srv: InProcessServer;
  let a: HostView;
  let b: HostView;
  let before: ReturnType<InProcessServer['leftovers']>;

  const run = async (host: HostView, ...commands: string[]) => {
    const res = await srv.api.post<CommandView>('/v1/commands', { targets: { hostIds: [host.id] }, parameters: { commands, executionTimeout: 20 }, wait: 30 });
    expect(res.status).toBe(201);
    const inv = res.body.invocations[0];
    if (!inv) throw new Error('no invocation');
    return inv;
  };

  beforeAll(async () => {
    srv = await startServer(NET);
    before = srv.leftovers();
    const launched = await Promise.all([
      srv.api.post<HostView>('/v1/hosts', { tags: { role: 'a' } }),
      srv.api.post<HostView>('/v1/hosts', { tags: { role: 'b' } }),
    ]);
    for (const res of launched) expect(res.status).toBe(201);
    [a, b] = launched.map((r) => r.body) as [HostView, HostView];
  });

  afterAll(async () => {
    await srv?.stop();
  });

  it('launches hosts that are running with their agent connected', () => {
    for (const host of [a, b]) {
      expect(host.state).toBe('running');
      expect(host.agent.connected).toBe(true);
      expect(host.ip).toMatch(/^10\.216\.0\.\d+$/);
    }
  });

  it('gives each host its own hostname and IP address', async () => {
    const [ia, ib] = await Promise.all([run(a, 'hostname', "ip -4 -o addr show eth0 | awk '{print $4}'"), run(b, 'hostname', "ip -4 -o addr show eth0 | awk '{print $4}'")]);
    expect(ia.status).toBe('Success');
    expect(ia.stdout).toBe(`${a.hostname}\n${a.ip}/24\n`);
    expect(ib.stdout).toBe(`${b.hostname}\n${b.ip}/24\n`);
    expect(a.hostname).not.toBe(b.hostname);
    expect(a.ip).not.toBe(b.ip);
  });

  it('keeps a file written in one host out of the other host and out of the image', async () => {
    const marker = `/root/berth-isolation-${a.id}`;
    expect((await run(a, `echo secret > ${marker}`, `cat ${marker}`)).stdout).toBe('secret\n');
    const inB = await run(b, `test -e ${marker} && echo present || echo absent`);
    expect(inB.stdout).toBe('absent\n');
    expect(existsSync(marker)).toBe(false);
  });

  it('lets neither host see nor signal the other host\'s processes', async () => {
    const started = await run(b, 'sleep 300 >/dev/null 2>&1 &', 'echo $!');
    const pidInB = Number(started.stdout.trim());
    // The same process seen from the machine, by its per-invocation marker: find its global pid.
    const seenFromA = await run(a, 'ps -eo pid=,comm= | grep -c sleep || true', 'ls /proc | grep -cE "^[0-9]+$"');
    const [sleeps, procs] = seenFromA.stdout.trim().split('\n').map(Number);
    expect(sleeps).toBe(0);
    expect(procs).toBeLessThan(20);
    // Signalling B's sleep by its pid from A fails: that pid does not exist in A (or is A's own).
    const kill = await run(a, `ps -o comm= -p ${pidInB} || echo no-such-process`);
    expect(kill.stdout).not.toContain('sleep');
    expect((await run(b, `kill -0 ${pidInB} && echo alive`)).stdout).toBe('alive\n');
  });

  it('lets two hosts bind the same port', async () => {
    const listen = (port: number) =>
      `nohup node -e "require('net').createServer().listen(${port}, () => console.log('listening'))" > /tmp/listen.log 2>&1 & sleep 0.5; cat /tmp/listen.log`;
    expect((await run(a, listen(8080))).stdout).toContain('listening');
    expect((await run(b, listen(8080))).stdout).toContain('listening');
    // and the port is really taken inside A
    expect((await run(a, listen(8080))).stdout).toContain('EADDRINUSE');
  });

  it("keeps a host's root from the machine: no device nodes, mounts, clock or kernel knobs", async () => {
    // Each probe is harmless even where it succeeds (it writes back what it read, sets the clock
    // to the second it reads); each must be refused.
    const machineCorePattern = readFileSync('/proc/sys/kernel/core_pattern', 'utf8');
    const probe = await run(
      a,
      [
        'grep CapBnd /proc/self/status',
        'mknod /root/disk b 254 0 2>/dev/null && echo MKNOD || echo no-mknod',
        'mount -t tmpfs probe /mnt 2>/dev/null && echo MOUNT || echo no-mount',
        'date -s "@$(date +%s)" >/dev/null 2>&1 && echo CLOCK || echo no-clock',
        '(cat /proc/sys/kernel/core_pattern > /proc/sys/kernel/core_pattern) 2>/dev/null && echo KERNEL-SYSCTL || echo no-kernel-sysctl',
        '(cat /proc/sys/vm/overcommit_memory > /proc/sys/vm/overcommit_memory) 2>/dev/null && echo VM-SYSCTL || echo no-vm-sysctl',
        'test -e /proc/sysrq-trigger && { test -w /proc/sysrq-trigger && echo SYSRQ || echo no-sysrq; } || echo no-sysrq',
        // No address, link or raw frame of its own making on the shared bridge (no spoofing),
        'ip addr add 10.216.0.250/32 dev lo 2>/dev/null && echo NET-ADMIN || echo no-net-admin',
        '(cat /proc/sys/net/ipv4/ip_forward > /proc/sys/net/ipv4/ip_forward) 2>/dev/null && echo NET-SYSCTL || echo no-net-sysctl',
        // yet ping works, as an ICMP datagram socket (what ping uses without CAP_NET_RAW)
        `python3 -c "import socket,struct;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM,socket.IPPROTO_ICMP);s.settimeout(5);s.sendto(struct.pack('!BBHHH',8,0,0,0,1)+b'x',('10.216.0.1',0));print('pong' if s.recvfrom(64)[0][0]==0 else 'no pong')"`,
        // and root in it still owns its files and can change users
        'touch /etc/berth-probe && chown nobody /etc/berth-probe && su -s /bin/sh nobody -c "id -un"',
      ].join('; '),
    );
    const lines = probe.stdout.trim().split('\n');
    // CAP_CHOWN … CAP_AUDIT_WRITE as listed in confinement.ts: 0xa00c05fb.
    expect(lines[0]).toBe('CapBnd:\t00000000a00c05fb');
    expect(lines.slice(1)).toEqual(['no-mknod', 'no-mount', 'no-clock', 'no-kernel-sysctl', 'no-vm-sysctl', 'no-sysrq', 'no-net-admin', 'no-net-sysctl', 'pong', 'nobody']);
    expect(readFileSync('/proc/sys/kernel/core_pattern', 'utf8')).toBe(machineCorePattern);
  });

  it('applies CPU, memory and process limits', async () => {
    const res = await srv.api.post<HostView>('/v1/hosts', { resources: { pids: 64, memoryMiB: 256 } });
    expect(res.status).toBe(201);
    const limited = res.body;
    const fork = await run(limited, 'for i in $(seq 1 100); do sleep 5 & done 2>&1 | tail -1; echo done');
    expect(fork.stdout + fork.stderr).toMatch(/fork|Resource temporarily unavailable|retry/i);
    await srv.api.delete(`/v1/hosts/${limited.id}`);
  });

  it('removes every trace of terminated hosts', async () => {
    for (const host of [a, b]) expect((await srv.api.delete<HostView>(`/v1/hosts/${host.id}`)).body.state).toBe('terminated');
    expect(srv.leftovers()).toEqual(before);
  });
});
