/**
 * What the server does when an agent says hello, reports, or goes. The gateway is made before the
 * services it hands these to, so the handlers find them late, in `LateServices`.
 */
import type { CommandDispatcher } from '../commands/dispatch.js';
import type { AgentStats } from '../hosts/agent-stats.js';
import type { HostService } from '../hosts/host-service.js';
import type { AgentMessage } from '../protocol/messages.js';
import type { ServicesService } from '../services/services-service.js';
import type { StackSync } from '../services/stack-sync.js';
import type { ShellBroker } from '../shells/shell-broker.js';

/** The services the agent handlers reach; set once the server has made them. */
export interface LateServices {
  hosts?: HostService;
  dispatcher?: CommandDispatcher;
  services?: ServicesService;
  stacks?: StackSync;
  shells?: ShellBroker;
  agentStats?: AgentStats;
}

export interface AgentHandlers {
  onHello(hostId: string, hello: Extract<AgentMessage, { type: 'hello' }>): void;
  onMessage(hostId: string, msg: AgentMessage): void;
  onDisconnect(hostId: string): void;
}

export function agentHandlersFor(late: LateServices, report: (what: string) => (err: unknown) => void): AgentHandlers {
  return {
    onHello: (hostId, hello) => {
      late.services?.onAgentSession(hostId);
      void (async () => {
        const row = await late.hosts?.onAgentConnected(hostId, hello.agentVersion);
        await late.dispatcher?.onHello(hostId, hello);
        if (!row) return;
        // Tags changed while the agent was away (or booting) reach it now.
        if (!sameTags(hello.tags, row.tags)) late.services?.pushTags(hostId, row.tags);
        // The stored set first, then what the host's tags ask now (if that differs, it follows):
        // the agent converges to the last. No extra read for a host without either.
        late.services?.onAgentHello(row);
        await late.stacks?.syncTagged(row);
      })().catch(report(`host ${hostId}: enrolment`));
    },
    onMessage: (hostId, msg) => {
      if (msg.type === 'services') late.services?.onAgentReport(hostId, msg.statuses);
      else if (msg.type === 'stats') late.agentStats?.onReply(hostId, msg);
      else if (late.shells?.onAgentMessage(hostId, msg)) return;
      else void late.dispatcher?.onMessage(hostId, msg).catch(report(`host ${hostId}: ${msg.type}`));
    },
    onDisconnect: (hostId) => {
      late.shells?.onAgentGone(hostId);
      late.agentStats?.onGone(hostId);
      void late.hosts?.onAgentDisconnected(hostId).catch(report(`host ${hostId}: disconnect`));
    },
  };
}

function sameTags(a: Record<string, string> | undefined, b: Record<string, string>): boolean {
  if (!a) return false;
  const keys = Object.keys(b);
  return Object.keys(a).length === keys.length && keys.every((k) => a[k] === b[k]);
}
