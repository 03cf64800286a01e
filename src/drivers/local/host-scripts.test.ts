import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { hostNames, resolveLocalConfig } from './config.js';
import { buildFstab, buildLauncherScript, pathInsideImage } from './host-scripts.js';
import { outerNetworkBatch } from './network.js';
import { shQuote } from './proc.js';

const cfg = resolveLocalConfig({ stateDir: '/var/lib/berth/hosts', agentDir: '/opt/berth/agent', agentCommand: ['true'] });
const names = hostNames(cfg, 'h-1');

describe('buildFstab', () => {
  it('mounts the overlay first and hides the state dir when the image contains it', () => {
    const fstab = buildFstab({ image: '/', names, agentDir: cfg.agentDir, toolsDir: '/var/lib/berth/hosts/.host-tools', sysrqTrigger: true, hiddenPaths: cfg.hiddenPaths }).trim().split('\n');
    expect(fstab[0]).toBe(
      'overlay /var/lib/berth/hosts/h-1/root overlay lowerdir=/,upperdir=/var/lib/berth/hosts/h-1/upper,workdir=/var/lib/berth/hosts/h-1/work,index=off,redirect_dir=off,metacopy=off 0 0',
    );
    expect(fstab[1]).toMatch(/^berth-hidden \/var\/lib\/berth\/hosts\/h-1\/root\/var\/lib\/berth\/hosts tmpfs ro,/);
    expect(fstab.map((l) => l.split(' ')[1])).toEqual([
      names.rootDir,
      `${names.rootDir}/var/lib/berth/hosts`,
      `${names.rootDir}/proc`,
      `${names.rootDir}/proc/sys`,
      `${names.rootDir}/proc/sysrq-trigger`,
      `${names.rootDir}/dev`,
      `${names.rootDir}/dev/pts`,
      `${names.rootDir}/dev/shm`,
      `${names.rootDir}/tmp`,
      `${names.rootDir}/run`,
      `${names.rootDir}/sys`,
      `${names.rootDir}/.berth/agent`,
      `${names.rootDir}/.berth/tools`,
    ]);
    expect(fstab.at(-1)).toContain('bind,ro');
  });

  it('hides nothing when the image does not contain the hidden paths', () => {
    const fstab = buildFstab({ image: '/srv/images/alpine', names, agentDir: cfg.agentDir, toolsDir: '/var/lib/berth/hosts/.host-tools', sysrqTrigger: true, hiddenPaths: cfg.hiddenPaths });
    expect(fstab).not.toContain('berth-hidden');
    expect(pathInsideImage('/srv/images/alpine', '/srv/images/alpine/var/x')).toBe('/var/x');
    expect(pathInsideImage('/srv/images/alpine', '/srv/images/alpine2/x')).toBeUndefined();
  });
});

describe('shell quoting', () => {
  it('passes arbitrary words through sh verbatim', () => {
    const words = ["it's", 'a "b" $HOME `id` \\ ;|&', '', 'multi\nline'];
    const out = execFileSync('/bin/sh', ['-c', `printf '%s\\0' ${words.map(shQuote).join(' ')}`], { encoding: 'utf8' });
    expect(out.split('\0').slice(0, -1)).toEqual(words);
  });

  it('produces a launcher script that sh can parse', () => {
    const script = buildLauncherScript({
      tools: { sh: '/bin/sh', ip: '/sbin/ip', nsenter: '/usr/bin/nsenter', unshare: '/usr/bin/unshare', mount: '/bin/mount', pivotRoot: '/sbin/pivot_root', cp: '/bin/cp', umount: '/bin/umount' },
      names,
      cgroupJoins: [{ file: '/sys/fs/cgroup/pids/berth/h-1/tasks', value: '0' }],
      outerNetworkBatch: outerNetworkBatch(names, 'berth0'),
      setupScript: "echo 'inner'",
    });
    expect(() => execFileSync('/bin/sh', ['-n', '-c', script])).not.toThrow();
    expect(script).toContain('echo 0 > \'/sys/fs/cgroup/pids/berth/h-1/tasks\'');
  });
});

describe('host names', () => {
  it('derives every resource name from the id, within kernel limits', () => {
    expect(names.netns).toBe('berth-h-1');
    expect(names.veth).toMatch(/^brt[0-9a-f]{11}$/);
    expect(names.vethAlias).toBe('berth:h-1');
    expect(() => hostNames(cfg, '../etc')).toThrow(/not usable/);
  });

  it('rejects paths overlayfs and fstab cannot carry', () => {
    expect(() => resolveLocalConfig({ stateDir: '/var/lib/my hosts', agentDir: '/a', agentCommand: ['x'] })).toThrow(/stateDir/);
    expect(() => resolveLocalConfig({ stateDir: '/var/lib/a,b', agentDir: '/a', agentCommand: ['x'] })).toThrow(/stateDir/);
    expect(() => resolveLocalConfig({ stateDir: '/s', agentDir: '/a', agentCommand: [] })).toThrow(/agentCommand/);
    expect(() => resolveLocalConfig({ stateDir: '/s', agentDir: '/a', agentCommand: ['x'], bridge: 'this-name-is-too-long' })).toThrow(/bridge/);
  });
});
