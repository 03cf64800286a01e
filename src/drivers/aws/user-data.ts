/**
 * The boot script an instance runs once (cloud-init user data): it gives the host its identity and
 * starts the berth agent baked into the AMI, which then dials the control plane exactly as on the
 * local driver. Everything variable is either JSON inside a quoted heredoc (no shell expansion) or
 * single-quoted, so nothing in a spec can inject shell.
 */
import { AGENT_ENROLMENT_PATH, AGENT_IDENTITY_PATH, HOST_TAGS_PATH, type AgentEnrolment } from '../../protocol/messages.js';
import type { FleetEnrolment, HostSpec } from '../types.js';

/** EC2 refuses user data over 16 KiB (before base64). */
export const USER_DATA_LIMIT = 16 * 1024;

/** For an over-long boot script: the agent channel's CA bundle rides in it too. */
export function caHint(ca: string | undefined): string {
  return ca ? `; the agent channel's CA bundle takes ${Buffer.byteLength(ca)} bytes of it: keep in --agent-tls-ca only the CAs agents need` : '';
}
const UNIT = '/etc/systemd/system/berth-agent.service';
const LOG = '/var/log/berth-agent.log';

export function shellQuote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

/** A heredoc whose delimiter cannot occur in `body` (JSON on one line never equals a bare word). */
function fileFrom(path: string, body: string, mode: string): string {
  return [`cat > ${shellQuote(path)} <<'BERTH_EOF'`, body, 'BERTH_EOF', `chmod ${mode} ${shellQuote(path)}`].join('\n');
}

/**
 * `agentCommand` null: the host's commands go through the SSM agent of the AMI (command channel
 * `ssm`), so the script writes no berth identity (no token to leak) and starts no berth agent.
 */
export function buildUserData(spec: HostSpec, agentCommand: string[] | null): string {
  return script(
    [
      ...(agentCommand ? [fileFrom(AGENT_IDENTITY_PATH, JSON.stringify(spec.agent), '600')] : []),
      fileFrom(HOST_TAGS_PATH, JSON.stringify(spec.tags), '644'),
      `echo ${shellQuote(spec.hostname)} > /etc/hostname`,
      `hostnamectl set-hostname ${shellQuote(spec.hostname)} 2>/dev/null || hostname ${shellQuote(spec.hostname)} || true`,
    ],
    agentCommand,
  );
}

/**
 * The boot script of a pool's instances, which its Auto Scaling group launches: one script for
 * all of them, so no host identity in it, only the pool's enrolment (the agent asks for an
 * identity with it and the instance id from the metadata service). A restarted agent keeps the
 * identity it got.
 */
export function buildFleetUserData(enrolment: FleetEnrolment, tags: Record<string, string>, agentCommand: string[] | null): string {
  const file: AgentEnrolment = { enrolUrl: enrolment.url, tenantId: enrolment.tenantId, pool: enrolment.pool, token: enrolment.token, generation: enrolment.generation, ...(enrolment.ca ? { ca: enrolment.ca } : {}) };
  // Without berth's agent (SSM) nothing enrols: the control plane finds the group's instances itself.
  return script([...(agentCommand ? [fileFrom(AGENT_ENROLMENT_PATH, JSON.stringify(file), '600')] : []), fileFrom(HOST_TAGS_PATH, JSON.stringify(tags), '644')], agentCommand);
}

/**
 * The files a boot script of this module writes, by path: what an emulated instance starts from
 * (tests stand in for the instance, which would run the script).
 */
export function filesFromUserData(userData: string): Map<string, string> {
  const files = new Map<string, string>();
  const lines = userData.split('\n');
  lines.forEach((line, i) => {
    const m = /^cat > '([^']+)' <<'BERTH_EOF'$/.exec(line);
    const body = lines[i + 1];
    if (m?.[1] && body !== undefined && lines[i + 2] === 'BERTH_EOF') files.set(m[1], body);
  });
  return files;
}

/** The hostname a boot script of buildUserData sets, if any (for emulated instances, as filesFromUserData). */
export function hostnameFromUserData(userData: string): string | undefined {
  const m = /^echo '((?:[^']|'\\'')*)' > \/etc\/hostname$/m.exec(userData);
  return m?.[1]?.replace(/'\\''/g, "'");
}

function script(files: string[], agentCommand: string[] | null): string {
  const dir = AGENT_IDENTITY_PATH.slice(0, AGENT_IDENTITY_PATH.lastIndexOf('/'));
  const head = [
    '#!/bin/sh',
    '# berth host bootstrap, written by the berth AWS driver.',
    'set -eu',
    // The identity holds the host's secret token: nobody but root reads it, not even for a moment.
    'umask 077',
    `mkdir -p ${shellQuote(dir)}`,
    ...files,
  ];
  if (!agentCommand) return [...head, '# commands reach this host through its SSM agent: no berth agent to start', ''].join('\n');
  const command = agentCommand.map(shellQuote).join(' ');
  return [
    ...head,
    // systemd restarts the agent if it dies; without systemd (minimal AMIs) it is started once.
    'if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then',
    `  cat > ${UNIT} <<'BERTH_EOF'`,
    '[Unit]',
    'Description=berth agent',
    'After=network-online.target',
    'Wants=network-online.target',
    '[Service]',
    `ExecStart=/usr/bin/env ${command}`,
    'Restart=always',
    'RestartSec=1',
    '[Install]',
    'WantedBy=multi-user.target',
    'BERTH_EOF',
    `  chmod 644 ${UNIT}`,
    '  systemctl daemon-reload',
    '  systemctl enable --now berth-agent.service',
    'else',
    `  nohup ${command} >>${LOG} 2>&1 </dev/null &`,
    'fi',
    '',
  ].join('\n');
}
