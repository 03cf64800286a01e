/**
 * Every way the control plane reaches hosts' agents, as one: berth's own agents over the gateway's
 * WebSockets, and a driver's backend agents (SSM on EC2) for the hosts they speak for. Commands,
 * services and hosts ask it without knowing which channel a host uses.
 */
import type { BackendAgents } from '../drivers/types.js';
import type { ServerMessage } from '../protocol/messages.js';
import type { AgentGateway } from './gateway.js';

export class AgentChannels {
  constructor(
    private readonly gateway: AgentGateway,
    private readonly backend: BackendAgents | undefined,
  ) {}

  isConnected(hostId: string): boolean {
    return this.gateway.isConnected(hostId) || (this.backend?.isConnected(hostId) ?? false);
  }

  session(hostId: string): { tenantId: string } | undefined {
    return this.gateway.session(hostId) ?? this.backend?.session(hostId);
  }

  send(hostId: string, msg: ServerMessage): boolean {
    return this.backend?.isAttached(hostId) ? this.backend.send(hostId, msg) : this.gateway.send(hostId, msg);
  }

  disconnect(hostId: string, reason: string): void {
    if (this.backend?.isAttached(hostId)) this.backend.detach(hostId);
    else this.gateway.disconnect(hostId, reason);
  }

  /** Whether berth's agent (and its supervisor) runs on the host, rather than a backend's agent. */
  supervises(hostId: string): boolean {
    return !this.backend?.isAttached(hostId);
  }

  connectedHostIds(): string[] {
    return [...this.gateway.connectedHostIds(), ...(this.backend?.connectedHostIds() ?? [])];
  }

  /** A host's machine exists (launched, admitted, or adopted after a restart): its backend agent, if it has one, is followed. */
  attach(host: { id: string; tenantId: string; driverData: Record<string, unknown> }): void {
    if (this.backend?.handles(host.driverData)) this.backend.attach(host);
  }
}
