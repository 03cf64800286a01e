/**
 * An emulator of AWS Systems Manager's Run Command API for the SSM agents moto's instances would
 * run (moto keeps the books of EC2 but runs nothing, and does not emulate
 * DescribeInstanceInformation or CancelCommand). It speaks SSM's JSON wire protocol on loopback,
 * so the real SDK client of berth's SSM channel talks to it as to AWS:
 *
 * - An instance moto shows running (tagged `berth:managed-by=<driver name>`) registers after
 *   `registerAfterMs` and is Online; tests can take it offline (`setPing`).
 * - SendCommand of AWS-RunShellScript to a registered instance runs the script with /bin/sh, as
 *   the SSM agent does, in a scratch directory of that instance (the commands tests send touch
 *   nothing else); an unregistered instance is InvalidInstanceId; an offline one stays Pending until
 *   it is back or the delivery timeout passes (TimedOut/DeliveryTimedOut).
 * - executionTimeout kills the script's process group (TimedOut); CancelCommand kills it
 *   (Cancelled); output is cut at SSM's 24,000 characters.
 * - GetCommandInvocation, ListCommands (by instance) and DescribeInstanceInformation answer from
 *   that state.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { EC2Client, paginateDescribeInstances } from '@aws-sdk/client-ec2';
import { MOTO_CREDENTIALS, MOTO_REGION } from './moto.js';

const OUTPUT_LIMIT = 24_000;

interface Invocation {
  commandId: string;
  instanceId: string;
  status: 'Pending' | 'InProgress' | 'Success' | 'Failed' | 'TimedOut' | 'Cancelled';
  details: string;
  responseCode: number;
  stdout: string;
  stderr: string;
  startedAt?: Date;
  endedAt?: Date;
  child?: ChildProcess;
  deliverBy: number;
}

interface Command {
  commandId: string;
  comment: string;
  instanceIds: string[];
  script: string;
  workingDirectory: string | undefined;
  executionTimeoutS: number;
  requestedAt: Date;
}

class SsmFault extends Error {
  constructor(
    readonly type: string,
    message: string,
  ) {
    super(message);
  }
}

export class EmulatedSsm {
  private readonly http: Server;
  private readonly ec2: EC2Client;
  private readonly pings = new Map<string, string>();
  private readonly seenAt = new Map<string, number>();
  private readonly forcedPing = new Map<string, string>();
  private readonly commands = new Map<string, Command>();
  private readonly invocations = new Map<string, Invocation>();
  private timer: NodeJS.Timeout | undefined;
  endpoint = '';
  /** Every call by operation, as the emulator received them. */
  readonly calls = new Map<string, number>();

  constructor(private readonly opts: { motoEndpoint: string; driverName: string; dir: string; registerAfterMs?: number; pollMs?: number }) {
    this.ec2 = new EC2Client({ region: MOTO_REGION, endpoint: opts.motoEndpoint, credentials: MOTO_CREDENTIALS });
    this.http = createServer((req, res) => void this.handle(req, res));
  }

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.http.listen(0, '127.0.0.1', resolve));
    const address = this.http.address();
    this.endpoint = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
    const tick = (): void => {
      this.scan()
        .catch((err: unknown) => void process.stderr.write(`emulated SSM: ${String(err)}\n`))
        .finally(() => {
          if (this.timer) this.timer = setTimeout(tick, this.opts.pollMs ?? 100);
        });
    };
    this.timer = setTimeout(tick, 0);
  }

  async stop(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    for (const inv of this.invocations.values()) inv.child?.kill('SIGKILL');
    this.http.closeAllConnections();
    await new Promise<void>((resolve) => this.http.close(() => resolve()));
    this.ec2.destroy();
  }

  /** Makes an instance's agent report this PingStatus (e.g. ConnectionLost) until set back to Online. */
  setPing(instanceId: string, ping: string): void {
    if (ping === 'Online') this.forcedPing.delete(instanceId);
    else this.forcedPing.set(instanceId, ping);
    this.deliverPending();
  }

  /** Commands sent to an instance, oldest first (what a test checks ran, and ran once). */
  commandsFor(instanceId: string): { commandId: string; comment: string; script: string }[] {
    return [...this.commands.values()].filter((c) => c.instanceIds.includes(instanceId)).map((c) => ({ commandId: c.commandId, comment: c.comment, script: c.script }));
  }

  private ping(instanceId: string): string | undefined {
    return this.pings.has(instanceId) ? (this.forcedPing.get(instanceId) ?? 'Online') : undefined;
  }

  /** Registers the driver's running instances (after registerAfterMs), drops terminated ones. */
  private async scan(): Promise<void> {
    const running = new Set<string>();
    for await (const page of paginateDescribeInstances({ client: this.ec2 }, { Filters: [{ Name: 'instance-state-name', Values: ['pending', 'running'] }] })) {
      for (const r of page.Reservations ?? []) {
        for (const i of r.Instances ?? []) {
          const mine = (i.Tags ?? []).some((t) => t.Key === 'berth:managed-by' && t.Value === this.opts.driverName);
          if (i.InstanceId && mine) running.add(i.InstanceId);
        }
      }
    }
    const now = Date.now();
    for (const id of running) {
      if (!this.seenAt.has(id)) this.seenAt.set(id, now);
      if (!this.pings.has(id) && now - (this.seenAt.get(id) ?? now) >= (this.opts.registerAfterMs ?? 300)) this.pings.set(id, 'Online');
    }
    for (const id of [...this.pings.keys()]) if (!running.has(id)) this.pings.set(id, 'ConnectionLost');
    this.deliverPending();
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of req as AsyncIterable<Buffer>) chunks.push(chunk);
    const target = String(req.headers['x-amz-target'] ?? '');
    const op = target.replace(/^AmazonSSM\./, '');
    this.calls.set(op, (this.calls.get(op) ?? 0) + 1);
    let body: Record<string, unknown>;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') as Record<string, unknown>;
      const out = this.answer(op, body);
      res.writeHead(200, { 'content-type': 'application/x-amz-json-1.1', 'x-amzn-requestid': randomUUID() });
      res.end(JSON.stringify(out));
    } catch (err) {
      const fault = err instanceof SsmFault ? err : new SsmFault('InternalServerError', String(err));
      res.writeHead(400, { 'content-type': 'application/x-amz-json-1.1', 'x-amzn-requestid': randomUUID() });
      res.end(JSON.stringify({ __type: fault.type, message: fault.message }));
    }
  }

  private answer(op: string, body: Record<string, unknown>): unknown {
    switch (op) {
      case 'DescribeInstanceInformation': {
        const filters = (body['Filters'] as { Key: string; Values: string[] }[] | undefined) ?? [];
        const wanted = filters.find((f) => f.Key === 'InstanceIds')?.Values;
        const ids = [...this.pings.keys()].filter((id) => !wanted || wanted.includes(id));
        return { InstanceInformationList: ids.map((id) => ({ InstanceId: id, PingStatus: this.ping(id), AgentVersion: '3.3.0.0', PlatformType: 'Linux' })) };
      }
      case 'SendCommand':
        return { Command: this.send(body) };
      case 'GetCommandInvocation': {
        const inv = this.invocations.get(`${String(body['CommandId'])}/${String(body['InstanceId'])}`);
        if (!this.commands.has(String(body['CommandId']))) throw new SsmFault('InvalidCommandId', 'no such command');
        if (!inv) throw new SsmFault('InvocationDoesNotExist', 'no such invocation');
        return {
          CommandId: inv.commandId,
          InstanceId: inv.instanceId,
          Status: inv.status,
          StatusDetails: inv.details,
          ResponseCode: inv.responseCode,
          StandardOutputContent: inv.stdout.slice(0, OUTPUT_LIMIT),
          StandardErrorContent: inv.stderr.slice(0, OUTPUT_LIMIT),
          ...(inv.startedAt ? { ExecutionStartDateTime: inv.startedAt.toISOString() } : {}),
          ...(inv.endedAt ? { ExecutionEndDateTime: inv.endedAt.toISOString() } : {}),
        };
      }
      case 'CancelCommand': {
        const commandId = String(body['CommandId']);
        if (!this.commands.has(commandId)) throw new SsmFault('InvalidCommandId', 'no such command');
        for (const inv of this.invocations.values()) {
          if (inv.commandId !== commandId || !['Pending', 'InProgress'].includes(inv.status)) continue;
          this.end(inv, 'Cancelled', 'Cancelled', -1);
        }
        return {};
      }
      case 'ListCommands': {
        const instanceId = body['InstanceId'] as string | undefined;
        const list = [...this.commands.values()].filter((c) => !instanceId || c.instanceIds.includes(instanceId)).reverse();
        return { Commands: list.map((c) => ({ CommandId: c.commandId, Comment: c.comment, InstanceIds: c.instanceIds, RequestedDateTime: c.requestedAt.getTime() / 1000, Status: this.aggregate(c) })) };
      }
      default:
        throw new SsmFault('UnknownOperationException', `the emulator does not implement ${op}`);
    }
  }

  private send(body: Record<string, unknown>): unknown {
    const ids = (body['InstanceIds'] as string[] | undefined) ?? [];
    const unknown = ids.filter((id) => !this.pings.has(id));
    if (unknown.length) throw new SsmFault('InvalidInstanceId', `Instances [${unknown.join(', ')}] not in a valid state for account`);
    if (body['DocumentName'] !== 'AWS-RunShellScript') throw new SsmFault('InvalidDocument', 'only AWS-RunShellScript is emulated');
    const params = (body['Parameters'] as Record<string, string[]> | undefined) ?? {};
    const command: Command = {
      commandId: randomUUID(),
      comment: typeof body['Comment'] === 'string' ? body['Comment'] : '',
      instanceIds: ids,
      script: (params['commands'] ?? []).join('\n'),
      workingDirectory: params['workingDirectory']?.[0],
      executionTimeoutS: Number(params['executionTimeout']?.[0] ?? 3600),
      requestedAt: new Date(),
    };
    this.commands.set(command.commandId, command);
    const deliverBy = Date.now() + Number(body['TimeoutSeconds'] ?? 3600) * 1000;
    for (const id of ids) this.invocations.set(`${command.commandId}/${id}`, { commandId: command.commandId, instanceId: id, status: 'Pending', details: 'Pending', responseCode: -1, stdout: '', stderr: '', deliverBy });
    this.deliverPending();
    return { CommandId: command.commandId, Comment: command.comment, InstanceIds: ids, Status: 'Pending', RequestedDateTime: command.requestedAt.getTime() / 1000 };
  }

  /** Starts what waits for an agent that is online now; times out what waited too long. */
  private deliverPending(): void {
    for (const inv of this.invocations.values()) {
      if (inv.status !== 'Pending') continue;
      if (Date.now() > inv.deliverBy) this.end(inv, 'TimedOut', 'DeliveryTimedOut', -1);
      else if (this.ping(inv.instanceId) === 'Online') this.run(inv);
    }
  }

  private run(inv: Invocation): void {
    const command = this.commands.get(inv.commandId);
    if (!command) return;
    const home = join(this.opts.dir, inv.instanceId);
    mkdirSync(home, { recursive: true });
    inv.status = 'InProgress';
    inv.details = 'InProgress';
    inv.startedAt = new Date();
    const child = spawn('/bin/sh', ['-c', command.script], { cwd: home, detached: true, stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: home } });
    inv.child = child;
    child.stdout?.on('data', (d: Buffer) => (inv.stdout += d.toString('utf8')));
    child.stderr?.on('data', (d: Buffer) => (inv.stderr += d.toString('utf8')));
    const timer = setTimeout(() => this.end(inv, 'TimedOut', 'ExecutionTimedOut', -1), command.executionTimeoutS * 1000);
    child.on('close', (code) => {
      clearTimeout(timer);
      if (inv.status !== 'InProgress') return;
      inv.child = undefined;
      const ok = code === 0;
      this.finish(inv, ok ? 'Success' : 'Failed', ok ? 'Success' : 'Failed', code ?? -1);
    });
  }

  private end(inv: Invocation, status: Invocation['status'], details: string, code: number): void {
    const child = inv.child;
    inv.child = undefined;
    this.finish(inv, status, details, code);
    if (child?.pid) {
      try {
        process.kill(-child.pid, 'SIGKILL'); // the whole script, as the agent kills its process tree
      } catch {
        // already gone
      }
    }
  }

  private finish(inv: Invocation, status: Invocation['status'], details: string, code: number): void {
    inv.status = status;
    inv.details = details;
    inv.responseCode = code;
    inv.endedAt = new Date();
  }

  private aggregate(c: Command): string {
    const statuses = c.instanceIds.map((id) => this.invocations.get(`${c.commandId}/${id}`)?.status ?? 'Pending');
    if (statuses.some((s) => s === 'Pending' || s === 'InProgress')) return 'InProgress';
    return statuses.every((s) => s === 'Success') ? 'Success' : (statuses.find((s) => s !== 'Success') ?? 'Failed');
  }
}
