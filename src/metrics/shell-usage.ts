/**
 * What the server process counts itself, as families of the exposition (the store keeps no record
 * of them): shell sessions — open now, ended since the server started by how they ended, and the
 * terminal's bytes each way; and the hosts' name service — its answers by how.
 */
import { SHELL_END_CAUSES, type ShellTotals } from '../shells/shell-broker.js';
import type { NameServiceCounts } from '../drivers/types.js';
import type { MetricFamily } from './exposition.js';

export function shellFamilies(tenant: string, totals: ShellTotals): MetricFamily[] {
  return [
    { name: 'berth_shell_sessions_open', type: 'gauge', help: 'Shell sessions open now (berth host shell, the dashboard).', samples: [{ labels: { tenant }, value: totals.open }] },
    {
      name: 'berth_shell_sessions_ended_total',
      type: 'counter',
      help: 'Shell sessions ended since the server started, by how: exit (the program ended), client (it left), agent_gone, not_opened, idle, operator (berth shell end), server_stop.',
      samples: SHELL_END_CAUSES.map((ended) => ({ labels: { tenant, ended }, value: totals.ended[ended] })),
    },
    {
      name: 'berth_shell_bytes_total',
      type: 'counter',
      help: "Terminal bytes of shell sessions since the server started: in = typed into hosts' terminals, out = their output.",
      samples: [
        { labels: { tenant, direction: 'in' }, value: totals.bytesIn },
        { labels: { tenant, direction: 'out' }, value: totals.bytesOut },
      ],
    },
  ];
}

/** Machine-wide (the relay serves every tenant's hosts), so without a tenant label. */
export function nameServiceFamilies(counts: NameServiceCounts): MetricFamily[] {
  return [
    {
      name: 'berth_name_service_answers_total',
      type: 'counter',
      help: "Hosts' name queries answered at their gateway since the server started, by how: local (a group mate's name), relayed (a name server's answer), refused (no egress, or a name the host's allow list does not name), failed (SERVFAIL).",
      samples: (['local', 'relayed', 'refused', 'failed'] as const).map((answer) => ({ labels: { answer }, value: counts[answer] })),
    },
    { name: 'berth_name_service_tcp_connections_total', type: 'counter', help: 'TCP connections of hosts piped to a name server (answers too large for UDP).', samples: [{ labels: {}, value: counts.tcpConnections }] },
  ];
}
