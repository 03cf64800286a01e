/**
 * moto in server mode (a real AWS wire-protocol emulator) on loopback, one per test file: started
 * on a port the OS picks, waited for until it answers, killed after. Tests skip when moto is not
 * installed, except in CI (CI or BERTH_REQUIRE_MOTO set), where a missing moto is an error.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';

/** The Python that has moto; .ci/run puts a venv's first on PATH when the system pip is locked. */
const PYTHON = process.env['BERTH_MOTO_PYTHON'] ?? 'python3';
const START_TIMEOUT_MS = 30_000;

export const motoRequired = Boolean(process.env['CI'] || process.env['BERTH_REQUIRE_MOTO']);

let installed: boolean | undefined;

/** Whether `python3 -m moto.server` can run (moto with its server extras). */
export function motoInstalled(): boolean {
  installed ??= spawnSync(PYTHON, ['-c', 'import moto.server'], { stdio: 'ignore', timeout: 20_000 }).status === 0;
  return installed;
}

/** Whether AWS tests should run; says why when they do not. */
export function motoAvailable(suite: string): boolean {
  if (motoInstalled()) return true;
  if (motoRequired) return true; // run, and fail in startMoto with the reason
  process.stderr.write(`${suite}: SKIPPED, moto is not installed (pip install 'moto[server]'); in CI these tests run.\n`);
  return false;
}

export interface Moto {
  endpoint: string;
  /** Stops the server; idempotent. */
  stop(): Promise<void>;
}

/**
 * `python -m moto.server`, with differences that make it answer as AWS does where berth relies on it:
 * - Requests are answered one at a time. moto's server is threaded but its models are not locked,
 *   so concurrent Auto Scaling calls corrupt its group lists (two concurrent detaches from one group
 *   can bring an instance back, or lose it); AWS applies each call atomically. Connections are
 *   still accepted concurrently.
 * - DetachInstances of an instance that is not in the group is refused (AWS: ValidationError "…is
 *   not part of Auto Scaling group…"). moto answered with no activity and still lowered the group's
 *   desired capacity by one, which then terminated another member: a user's claimed host vanished
 *   when a host that had already left their group was removed.
 * - An attached instance belongs to the group it was attached to. moto kept the group that launched
 *   it, so TerminateInstanceInAutoScalingGroup (and DescribeAutoScalingInstances) acted on that one.
 * - TerminateInstanceInAutoScalingGroup of an instance in no group is a ValidationError, as on AWS
 *   (moto failed with an internal error).
 * - DescribeInstances filtered by security group (group-id, instance.group-id, instance.group-name)
 *   matches an instance holding it among others, as on AWS (moto compared the first group only).
 * - DeleteSecurityGroup of a group an instance that is not terminated still holds is refused with
 *   DependencyViolation, as on AWS (moto deleted it, leaving the instance with a group that is gone).
 */
const SERIALIZED_MOTO = `
import sys, threading
from werkzeug.serving import run_simple
from moto.autoscaling.exceptions import ValidationError
from moto.autoscaling.models import AutoScalingBackend
from moto.ec2.exceptions import DependencyViolationError
from moto.ec2.models.security_groups import SecurityGroupBackend
import moto.ec2.utils as ec2_utils
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

def group_of(backend, instance_id):
    return next((g for g in backend.autoscaling_groups.values() if any(s.instance.id == instance_id for s in g.instance_states)), None)

moto_attach, moto_detach, moto_terminate = AutoScalingBackend.attach_instances, AutoScalingBackend.detach_instances, AutoScalingBackend.terminate_instance

def attach_instances(self, group_name, instance_ids):
    group = self.autoscaling_groups[group_name]
    instances = [self.ec2_backend.get_instance(i) for i in instance_ids]
    before = [getattr(i, 'autoscaling_group', None) for i in instances]
    for i in instances:
        i.autoscaling_group = group
    try:
        return moto_attach(self, group_name, instance_ids)
    except Exception:
        for i, g in zip(instances, before):
            i.autoscaling_group = g
        raise

def detach_instances(self, group_name, instance_ids, should_decrement):
    group = self.autoscaling_groups.get(group_name)
    members = {s.instance.id for s in group.instance_states} if group else set()
    for i in instance_ids:
        if group is not None and i not in members:
            raise ValidationError(f"The instance {i} is not part of Auto Scaling group {group_name}.")
    return moto_detach(self, group_name, instance_ids, should_decrement)

def terminate_instance(self, instance_id, should_decrement):
    if group_of(self, instance_id) is None:
        raise ValidationError(f"Instance Id not found - No managed instance found for instance ID: {instance_id}")
    return moto_terminate(self, instance_id, should_decrement)

moto_delete_security_group = SecurityGroupBackend.delete_security_group

def delete_security_group(self, name=None, group_id=None):
    group = self.get_security_group_from_id(group_id) if group_id else None
    if group is not None:
        for i in self.all_instances():
            if i._state.name != 'terminated' and any(g.id == group.id for g in i.security_groups):
                raise DependencyViolationError(f"resource {group.id} has a dependent object")
    return moto_delete_security_group(self, name, group_id)

SecurityGroupBackend.delete_security_group = delete_security_group

moto_passes_filter_dict = ec2_utils.passes_filter_dict

def passes_filter_dict(instance, filter_dict):
    rest = dict(filter_dict)
    for name in ('group-id', 'instance.group-id', 'instance.group-name'):
        values = rest.pop(name, None)
        if values is None:
            continue
        held = {(g.name if name.endswith('group-name') else g.id) for g in getattr(instance, 'security_groups', [])}
        if not set(values) & held:
            return False
    return moto_passes_filter_dict(instance, rest)

ec2_utils.passes_filter_dict = passes_filter_dict
AutoScalingBackend.attach_instances = attach_instances
AutoScalingBackend.detach_instances = detach_instances
AutoScalingBackend.terminate_instance = terminate_instance

app = DomainDispatcherApplication(create_backend_app)
lock = threading.Lock()
def serialized(environ, start_response):
    with lock:
        return list(app(environ, start_response))
run_simple(sys.argv[1], 0, serialized, threaded=True)
`;

export async function startMoto(): Promise<Moto> {
  if (!motoInstalled()) {
    throw new Error(`moto is not installed for ${PYTHON} (python3 -m pip install 'moto[server]'); CI must run the AWS driver tests`);
  }
  // Port 0: the OS picks a free port and werkzeug prints it, so parallel runs never collide.
  const child = spawn(PYTHON, ['-c', SERIALIZED_MOTO, '127.0.0.1'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, PYTHONUNBUFFERED: '1', MOTO_PORT: '0' } });
  const killOnExit = (): void => void child.kill('SIGKILL');
  process.once('exit', killOnExit); // a crashed test run must not leave moto behind
  const stop = async (): Promise<void> => {
    process.off('exit', killOnExit);
    await stopChild(child);
  };
  try {
    const endpoint = await waitForPort(child);
    await waitUntilAnswers(endpoint);
    return { endpoint, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

function waitForPort(child: ChildProcess): Promise<string> {
  return new Promise((resolve, reject) => {
    let output = '';
    const timer = setTimeout(() => done(new Error(`moto did not start within ${START_TIMEOUT_MS / 1000} s:\n${output}`)), START_TIMEOUT_MS);
    const onData = (chunk: Buffer): void => {
      output += chunk.toString();
      const port = /Running on http:\/\/127\.0\.0\.1:(\d+)/.exec(output)?.[1];
      if (port) done(undefined, `http://127.0.0.1:${port}`);
    };
    const onExit = (code: number | null): void => done(new Error(`moto exited (code ${code}) before it listened:\n${output}`));
    function done(err: Error | undefined, endpoint?: string): void {
      clearTimeout(timer);
      child.stdout?.off('data', onData);
      child.stderr?.off('data', onData);
      child.off('exit', onExit);
      // Keep draining its output, or moto blocks once a pipe buffer fills.
      child.stdout?.resume();
      child.stderr?.resume();
      if (err) reject(err);
      else resolve(endpoint ?? '');
    }
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.on('exit', onExit);
  });
}

async function waitUntilAnswers(endpoint: string): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    try {
      const res = await fetch(`${endpoint}/moto-api/data.json`);
      await res.arrayBuffer();
      if (res.ok) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`moto at ${endpoint} did not answer within ${START_TIMEOUT_MS / 1000} s`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), 3_000);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

/** Dummy credentials: moto accepts any, and the SDK's chain must not find real ones. */
export const MOTO_CREDENTIALS = { accessKeyId: 'testing', secretAccessKey: 'testing' };
export const MOTO_REGION = 'us-east-1';
