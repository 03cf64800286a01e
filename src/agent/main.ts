/**
 * Entry point of the agent bundle that runs inside every host (`node /.berth/agent/berth-agent.cjs`).
 * Kept tiny: it is on the launch -> ready path.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { AGENT_IDENTITY_PATH, agentIdentity, IMAGE_ENV_PATH } from '../protocol/messages.js';
import { Agent } from './agent.js';
import { regenerateIdentity } from './firstboot.js';
import { readImageEnv } from './image-env.js';

export function runAgent(argv: string[] = process.argv.slice(2)): Agent {
  const identityPath = flag(argv, '--identity') ?? AGENT_IDENTITY_PATH;
  const stateDir = flag(argv, '--state-dir') ?? '/run/berth/agent';
  const identity = agentIdentity.parse(JSON.parse(readFileSync(identityPath, 'utf8')));
  const log = (line: string): void => void process.stderr.write(`berth-agent: ${line}\n`);
  const firstBoot = regenerateIdentity({ log });
  log(`first boot: machine-id ${firstBoot.machineId}, ssh host keys ${firstBoot.sshHostKeys}`);
  // Before the agent starts its warm shells: they and every command inherit this environment.
  Object.assign(process.env, readImageEnv(IMAGE_ENV_PATH, log));
  // Commands can run the agent's own tools (`$BERTH_NODE $BERTH_AGENT_BUNDLE follow …`, see log-follow.ts).
  Object.assign(process.env, { BERTH_NODE: process.execPath, BERTH_AGENT_BUNDLE: resolve(process.argv[1] ?? '') });
  const agent = new Agent({ identity, stateDir });
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

function flag(argv: string[], name: string): string | undefined {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
}
