import { spawn, spawnSync } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { AGENT_NODE_FLAGS, agentBundleDir } from '../cli/paths.js';
import { writeAgentCodeCache } from '../../scripts/agent-code-cache.mjs';
import { AGENT_CODE_CACHE } from './loader.js';

// A copy of the built bundle (`npm test` builds first), so the cache can be spoiled without harm.
const dir = mkdtempSync(join(tmpdir(), 'berth-loader-'));
cpSync(agentBundleDir(), dir, { recursive: true });
const REFUSED = `${AGENT_CODE_CACHE} was made by another node`;

/** Starts the agent as hosts do, with an identity that does not exist: it stops right after loading. */
function startAgent(): { status: number | null; stderr: string } {
  return spawnSync(process.execPath, [...AGENT_NODE_FLAGS, join(dir, 'berth-agent.cjs'), '--identity', join(dir, 'no-such-identity.json')], { encoding: 'utf8', env: {} });
}

describe('the agent loader (berth-agent.cjs)', () => {
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("loads the agent with the build's code cache, which V8 takes", () => {
    const run = startAgent();
    // The agent itself ran: it looked for its identity.
    expect(run.stderr).toContain('no-such-identity.json');
    expect(run.stderr).not.toContain(REFUSED);
  });

  it('runs the tools through it, the built-in modules they load when needed included', async () => {
    const run = spawnSync(process.execPath, [...AGENT_NODE_FLAGS, join(dir, 'berth-agent.cjs'), 'follow'], { encoding: 'utf8', env: {} });
    expect(run.stderr).toContain('usage: follow');
    // `fetch` loads node:http only then (as the agent does node:tls): no import() is left to fail.
    const server = createServer((_req, res) => res.end('slug bytes'));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/slug.tgz`;
      const child = spawn(process.execPath, [...AGENT_NODE_FLAGS, join(dir, 'berth-agent.cjs'), 'fetch', url], { env: {} });
      let out = '';
      let err = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      const code = await new Promise((resolve) => child.on('close', resolve));
      expect({ code, out, err }).toEqual({ code: 0, out: 'slug bytes', err: '' });
    } finally {
      server.close();
    }
  });

  it('starts the agent all the same when the cache is not one V8 takes, saying so, and --write-code-cache makes a good one', () => {
    const cache = join(dir, AGENT_CODE_CACHE);
    const good = readFileSync(cache);
    writeFileSync(cache, Buffer.alloc(good.length, 7));
    const spoiled = startAgent();
    expect(spoiled.stderr).toContain(REFUSED);
    expect(spoiled.stderr).toContain('no-such-identity.json');

    rmSync(cache);
    expect(startAgent().stderr).not.toContain(REFUSED); // none at all: compiled, nothing to say
    const made = spawnSync(process.execPath, [...AGENT_NODE_FLAGS, join(dir, 'berth-agent.cjs'), '--write-code-cache'], { encoding: 'utf8', env: {} });
    expect(made.status, made.stderr).toBe(0);
    expect(readFileSync(cache).length).toBeGreaterThan(10_000);
    expect(startAgent().stderr).not.toContain(REFUSED);
  });

  it("holds a first command's path compiled: the build rehearses one through the agent before it takes the cache", async () => {
    const cache = join(dir, AGENT_CODE_CACHE);
    const plain = spawnSync(process.execPath, [...AGENT_NODE_FLAGS, join(dir, 'berth-agent.cjs'), '--write-code-cache'], { encoding: 'utf8', env: {} });
    expect(plain.status, plain.stderr).toBe(0);
    const loadedOnly = readFileSync(cache).length;
    // The stand-in server plays welcome, tags, `run` of `true`, ack, close; the agent's real
    // channel, journal and warm shell answer, and the result it saw was a success.
    expect(await writeAgentCodeCache(dir, AGENT_NODE_FLAGS)).toEqual({ rehearsed: true });
    // What the command's path compiled is in it (its parse, journal, shell, result frame: ~60 KiB).
    expect(readFileSync(cache).length).toBeGreaterThan(loadedOnly + 30_000);
    expect(startAgent().stderr).not.toContain(REFUSED);
  });
});
