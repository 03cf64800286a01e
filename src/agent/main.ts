/**
 * Entry point of the agent bundle that runs inside every host (`node /.berth/agent/berth-agent.cjs`).
 * Kept tiny: it is on the launch -> ready path.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { AGENT_ENROLMENT_PATH, AGENT_IDENTITY_PATH, agentEnrolment, agentIdentity, IMAGE_ENV_PATH, type AgentIdentity } from '../protocol/messages.js';
import { Agent } from './agent.js';
import { regenerateIdentity } from './firstboot.js';
import { readImageEnv } from './image-env.js';
import { tuneAgentV8 } from './v8-tuning.js';

export function runAgent(argv: string[] = process.argv.slice(2)): void {
  const identityPath = flag(argv, '--identity') ?? AGENT_IDENTITY_PATH;
  const enrolmentPath = flag(argv, '--enrolment') ?? AGENT_ENROLMENT_PATH;
  const stateDir = flag(argv, '--state-dir') ?? '/run/berth/agent';
  const log = (line: string): void => void process.stderr.write(`berth-agent: ${line}\n`);
  const start = (identity: AgentIdentity): Promise<Agent> => tuneFor(identity).then(() => startAgent(identity, identityPath, stateDir, log));
  // A host launched with its identity (or a fleet host that enrolled before a restart) has it;
  // a fleet host's first start enrols for one (loaded only then: the agent's RSS is on every host).
  if (existsSync(identityPath) || !existsSync(enrolmentPath)) {
    void start(agentIdentity.parse(JSON.parse(readFileSync(identityPath, 'utf8'))));
    return;
  }
  const enrolment = agentEnrolment.parse(JSON.parse(readFileSync(enrolmentPath, 'utf8')));
  import('./enrol.js')
    .then(({ enrol }) => enrol(enrolment, { identityPath, log }))
    .then(
      (identity) => void start(identity),
      (err: unknown) => {
        log(`cannot enrol: ${err instanceof Error ? err.message : String(err)}`);
        process.exit(1);
      },
    );
}

/**
 * Sets the agent's V8 flags (v8-tuning.ts) once what it runs on is loaded: a built-in module loaded
 * after them compiles without node's code cache. The agent channel loads TLS only when it needs it
 * (ws-client.ts), so that comes first; the idle GC uses the `gc` this returns.
 */
async function tuneFor(identity: AgentIdentity): Promise<void> {
  if (identity.serverUrl.startsWith('wss:')) await import('node:tls');
  // stderr (the host's console log, a file) is made on first use, with a module of its own.
  void process.stderr.writable;
  // The first Date made reads the zone (/etc/localtime): here, not in the first command's path.
  void new Date().toISOString();
  (globalThis as { gc?: () => void }).gc ??= tuneAgentV8();
}

function startAgent(identity: AgentIdentity, identityPath: string, stateDir: string, log: (line: string) => void): Agent {
  const firstBoot = regenerateIdentity({ log });
  log(`first boot: machine-id ${firstBoot.machineId}, ssh host keys ${firstBoot.sshHostKeys}`);
  // Before the agent starts its warm shells: they and every command inherit this environment.
  Object.assign(process.env, readImageEnv(IMAGE_ENV_PATH, log));
  // The slug a command downloads comes from the agent channel's port: over https it trusts the same CA.
  if (identity.ca) Object.assign(process.env, { BERTH_SERVER_CA_FILE: keepServerCa(identity.ca, stateDir) });
  // Commands can run the agent's own tools (`$BERTH_NODE $BERTH_AGENT_BUNDLE follow …`, see log-follow.ts).
  Object.assign(process.env, { BERTH_NODE: process.execPath, BERTH_AGENT_BUNDLE: resolve(process.argv[1] ?? '') });
  // What the server says to dial and trust from now on (a CA roll-over, a switch to TLS) is kept: a
  // restarted agent dials with it.
  let current = identity;
  const keep = (next: AgentIdentity): void => {
    try {
      writeAtomically(identityPath, `${JSON.stringify(next)}\n`, 0o600);
      current = next;
      if (next.ca) process.env['BERTH_SERVER_CA_FILE'] = keepServerCa(next.ca, stateDir);
      else delete process.env['BERTH_SERVER_CA_FILE'];
    } catch (err) {
      log(`cannot keep the server's new address or CA bundle in ${identityPath}: ${err instanceof Error ? err.message : String(err)}`);
    }
  };
  const onTrust = (ca: string): void => keep({ ...current, ca });
  const onSwitch = (serverUrl: string, ca: string | undefined): void => {
    const { ca: _old, ...rest } = current;
    keep({ ...rest, serverUrl, ...(ca ? { ca } : {}) });
  };
  const agent = new Agent({ identity, stateDir, onTrust, onSwitch });
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    void agent.shutdown().finally(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  agent.start();
  return agent;
}

function keepServerCa(ca: string, stateDir: string): string {
  const path = `${stateDir}/server-ca.pem`;
  mkdirSync(stateDir, { recursive: true });
  writeAtomically(path, ca, 0o644);
  return path;
}

function writeAtomically(path: string, text: string, mode: number): void {
  writeFileSync(`${path}.tmp`, text, { mode });
  renameSync(`${path}.tmp`, path);
}

function flag(argv: string[], name: string): string | undefined {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
}
