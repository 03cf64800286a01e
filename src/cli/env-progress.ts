/**
 * What a long environment command (create, deploy, set, restart) is doing, as it happens, on
 * stderr: the hosts it claims, each service of its hosts starting, ready, reloading or failing, and
 * the environment's own state. Read from the server's event stream (GET /v1/events?follow, from the
 * next event on), opened before the command's request so nothing it does is missed. A server that
 * cannot stream events only costs the lines: the command itself goes on.
 */
import type { BerthEvent } from '../events/types.js';
import { SERVICE_REMOVED_REASON } from '../protocol/reasons.js';
import type { ApiClient } from './client.js';
import type { Context } from './context.js';
import type { Printer } from './output.js';

export interface EnvProgress {
  stop(): void;
}

/** A line for an event about environment `name` (whose hosts are in `hosts`, which claims add to), or undefined. */
export function progressLine(event: BerthEvent, name: string, hosts: Set<string>): string | undefined {
  if (event.kind === 'claim' && event.group === name) {
    if (event.state === 'ready' && event.hostId) {
      hosts.add(event.hostId);
      return `claimed ${event.hostId} from pool ${event.pool ?? '?'}`;
    }
    if (event.state === 'failed') return `a claim failed: ${event.reason ?? 'no reason given'}`;
    return undefined;
  }
  if (event.kind === 'service' && event.hostId && hosts.has(event.hostId)) {
    const reason = event.reason ?? '';
    // A pool host stopping the services that are not its own (service mode): housekeeping, not progress.
    if (reason === SERVICE_REMOVED_REASON && event.state !== 'failed') return undefined;
    // Reasons often restate the state ("ready after 67 ms"): then the reason says it all.
    return `${event.hostId}: ${event.service ?? '?'} ${reason.startsWith(event.state) ? reason : `${event.state}${reason ? ` (${reason})` : ''}`}`;
  }
  // `creating` says nothing the command has not said already.
  if (event.kind === 'environment' && event.environment === name && event.state !== 'creating') return `${name} ${event.state}${event.reason ? `: ${event.reason}` : ''}`;
  return undefined;
}

/** Starts writing progress lines for environment `name`; resolves once the stream is open (or could not be). */
export async function watchEnvironment(client: ApiClient, name: string, knownHosts: readonly string[], write: (line: string) => void): Promise<EnvProgress> {
  const controller = new AbortController();
  const hosts = new Set(knownHosts);
  let opened: () => void = () => undefined;
  const open = new Promise<void>((resolve) => (opened = resolve));
  const reading = (async () => {
    try {
      for await (const message of client.sse('/v1/events?follow=true&replay=false&kind=claim,service,environment', { signal: controller.signal, onOpen: () => opened() })) {
        const line = progressLine(JSON.parse(message.data) as BerthEvent, name, hosts);
        if (line !== undefined) write(`  ${line}\n`);
      }
    } catch {
      // Stopped, or the server streams no events to this token: the command goes on without lines.
    }
  })();
  const tooLong = new Promise<void>((resolve) => setTimeout(resolve, 2000).unref());
  await Promise.race([open, reading, tooLong]);
  return { stop: () => controller.abort() };
}

/**
 * Runs a long environment command, saying `what` first and then, as they happen, the hosts it
 * claims and their services' states; with --json, only the command.
 */
export async function withProgress<T>(ctx: Context, printer: Printer, name: string, what: string, knownHosts: readonly string[], run: () => Promise<T>): Promise<T> {
  if (printer.json) return run();
  printer.err(`${what}…\n`);
  const progress = await watchEnvironment(ctx.client(), name, knownHosts, (line) => printer.err(line));
  try {
    return await run();
  } finally {
    progress.stop();
  }
}

const TIMING_ORDER = ['claimMs', 'initMs', 'servicesMs', 'readyMs', 'routeMs', 'totalMs'];

/** `claim 3.1 ms, init 0 ms, …` (total left out: callers say it their way). */
export function formatTimings(timings: Record<string, number>): string {
  return TIMING_ORDER.filter((k) => k !== 'totalMs' && timings[k] !== undefined)
    .map((k) => `${k.replace(/Ms$/, '')} ${timings[k]} ms`)
    .join(', ');
}
