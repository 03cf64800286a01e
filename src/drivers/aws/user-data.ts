/**
 * The boot script an instance runs once (cloud-init user data): it gives the host its identity and
 * starts the berth agent baked into the AMI, which then dials the control plane exactly as on the
 * local driver. Everything variable is either JSON inside a quoted heredoc (no shell expansion) or
 * single-quoted, so nothing in a spec can inject shell.
 */
import { AGENT_IDENTITY_PATH, HOST_TAGS_PATH } from '../../protocol/messages.js';
import type { HostSpec } from '../types.js';

/** EC2 refuses user data over 16 KiB (before base64). */
export const USER_DATA_LIMIT = 16 * 1024;
const UNIT = '/etc/systemd/system/berth-agent.service';
const LOG = '/var/log/berth-agent.log';

export function shellQuote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

/** A heredoc whose delimiter cannot occur in `body` (JSON on one line never equals a bare word). */
function fileFrom(path: string, body: string, mode: string): string {
  return [`cat > ${shellQuote(path)} <<'BERTH_EOF'`, body, 'BERTH_EOF', `chmod ${mode} ${shellQuote(path)}`].join('\n');
}

export function buildUserData(spec: HostSpec, agentCommand: string[]): string {
  const command = agentCommand.map(shellQuote).join(' ');
  const dir = AGENT_IDENTITY_PATH.slice(0, AGENT_IDENTITY_PATH.lastIndexOf('/'));
  const script = [
    '#!/bin/sh',
    '# berth host bootstrap, written by the berth AWS driver.',
    'set -eu',
    // The identity holds the host's secret token: nobody but root reads it, not even for a moment.
    'umask 077',
    `mkdir -p ${shellQuote(dir)}`,
    fileFrom(AGENT_IDENTITY_PATH, JSON.stringify(spec.agent), '600'),
    fileFrom(HOST_TAGS_PATH, JSON.stringify(spec.tags), '644'),
    `echo ${shellQuote(spec.hostname)} > /etc/hostname`,
    `hostnamectl set-hostname ${shellQuote(spec.hostname)} 2>/dev/null || hostname ${shellQuote(spec.hostname)} || true`,
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
  return script;
}
