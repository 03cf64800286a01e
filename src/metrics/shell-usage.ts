/**
 * Shell sessions as families of the exposition, counted by the server process (the store keeps no
 * record of them; their events do): open now, ended since the server started by how they ended,
 * and the terminal's bytes each way.
 */
import { SHELL_END_CAUSES, type ShellTotals } from '../shells/shell-broker.js';
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
