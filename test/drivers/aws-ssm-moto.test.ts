/**
 * The SSM channel against moto in server mode, as far as moto emulates SSM. Tried against moto 5.2.1:
 * - SendCommand: stored as sent (any instance id, even one that does not exist), listed by
 *   ListCommands; it runs nothing, and every invocation is Success at once with ResponseCode 0 and
 *   empty output.
 * - GetCommandInvocation: that canned Success; InvocationDoesNotExist for an instance the command
 *   was not sent to; InvalidCommandId for an unknown command.
 * - Not emulated (HTTP 500 with an HTML page): DescribeInstanceInformation (so no instance is ever
 *   registered or Online, and the agent check cannot pass), CancelCommand,
 *   ListCommandInvocations. Statuses other than Success, timeouts, real output and the per-command
 *   exit codes are therefore covered by src/drivers/aws/ssm.test.ts (mocked SSM, real /bin/sh), not here.
 */
import { DescribeInstancesCommand, RunInstancesCommand, TerminateInstancesCommand } from '@aws-sdk/client-ec2';
import { ListCommandsCommand, SSMClient } from '@aws-sdk/client-ssm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveAwsConfig } from '../../src/drivers/aws/config.js';
import { SsmChannel, type SsmCommandDoc } from '../../src/drivers/aws/ssm.js';
import { failFastScript } from '../../src/drivers/aws/ssm-status.js';
import { rejection } from '../helpers/errors.js';
import { motoAvailable, MOTO_CREDENTIALS, MOTO_REGION, startMoto, type Moto } from '../helpers/moto.js';
import { motoNetwork, type MotoNetwork } from './aws-fixtures.js';

const DOC: SsmCommandDoc = { commands: ['cd /tmp', 'echo "$GREETING"', 'false', 'echo never'], workingDirectory: '/var/tmp', executionTimeoutS: 300, deliveryTimeoutS: 60, env: { GREETING: `it's $HOME` }, comment: 'berth moto test' };

describe.skipIf(!motoAvailable('SSM channel on moto'))('SSM channel on moto', () => {
  let moto: Moto;
  let net: MotoNetwork;
  let ssm: SSMClient;
  let channel: SsmChannel;
  let instanceId: string;

  const commandsFor = async (id: string) => (await ssm.send(new ListCommandsCommand({ InstanceId: id }))).Commands ?? [];

  beforeAll(async () => {
    moto = await startMoto();
    net = await motoNetwork(moto.endpoint);
    ssm = new SSMClient({ region: MOTO_REGION, endpoint: moto.endpoint, credentials: MOTO_CREDENTIALS });
    channel = new SsmChannel(resolveAwsConfig({ region: MOTO_REGION, endpoint: moto.endpoint, credentials: MOTO_CREDENTIALS, imageId: net.imageId, instanceType: 't3.micro', name: 'bssm' }));
    const run = await net.ec2.send(new RunInstancesCommand({ ImageId: net.imageId, InstanceType: 't3.micro', MinCount: 1, MaxCount: 1, SubnetId: net.subnetIds[0] }));
    instanceId = run.Instances?.[0]?.InstanceId ?? '';
  });

  afterAll(async () => {
    if (instanceId) await net.ec2.send(new TerminateInstancesCommand({ InstanceIds: [instanceId] }));
    channel?.close();
    ssm?.destroy();
    net?.ec2.destroy();
    await moto?.stop();
  });

  it('an instance RunInstances launched, with no SSM agent registered: the send is refused and nothing reaches SSM', async () => {
    const state = (await net.ec2.send(new DescribeInstancesCommand({ InstanceIds: [instanceId] }))).Reservations?.[0]?.Instances?.[0]?.State?.Name;
    expect(state).toBe('running');
    const err = await rejection(channel.send([instanceId], DOC));
    if (err.code === 'host_not_connected') {
      // A moto that emulates DescribeInstanceInformation answers as AWS does: no such managed instance.
      expect(err.message).toContain(`the SSM agent on ${instanceId} is not registered with SSM`);
      expect(err.hint).toContain('AmazonSSMManagedInstanceCore');
    } else {
      // moto 5.2 does not: HTTP 500 and an HTML page. The check fails closed and says which call the endpoint lacks.
      expect(err.code).toBe('driver_unavailable');
      expect(err.message).toBe(`the SSM endpoint answered DescribeInstanceInformation in region ${MOTO_REGION} with HTTP 500 and a body that is not an AWS answer`);
    }
    expect(channel.callCounts()).toEqual({ DescribeInstanceInformation: 1 });
    expect(await commandsFor(instanceId)).toEqual([]);
  });

  it('SendCommand end to end (agent check skipped: moto cannot register an agent): what SSM stores, and its canned Success', async () => {
    const before = channel.callCounts();
    const sent = await channel.send([instanceId], DOC, { skipAgentCheck: true });
    expect(sent.instanceIds).toEqual([instanceId]);

    const [stored] = await commandsFor(instanceId);
    expect(stored).toMatchObject({
      CommandId: sent.commandId,
      DocumentName: 'AWS-RunShellScript',
      InstanceIds: [instanceId],
      TimeoutSeconds: 60,
      Comment: 'berth moto test',
      Parameters: { commands: [failFastScript(DOC)], executionTimeout: ['300'], workingDirectory: ['/var/tmp'] },
    });

    // moto runs nothing: Success, ResponseCode 0, no output, so no per-command markers either.
    const inv = await channel.status(sent.commandId, instanceId);
    expect(inv).toMatchObject({ status: 'Success', ssmStatus: 'Success', exitCode: 0, stdout: '', stderr: '', commandExitCodes: [], failedCommand: undefined });
    const [waited] = await channel.wait(sent.commandId, [instanceId]);
    expect(waited).toMatchObject({ instanceId, status: 'Success' });
    const after = channel.callCounts();
    expect(after['SendCommand']).toBe((before['SendCommand'] ?? 0) + 1);
    // One status call, then one per wait round: terminal at once, so one round.
    expect(after['GetCommandInvocation']).toBe((before['GetCommandInvocation'] ?? 0) + 2);
    expect(after['DescribeInstanceInformation']).toBe(before['DescribeInstanceInformation']);
  });

  it('an invocation moto does not have: Pending right after the send, not found later; an unknown command is not found', async () => {
    const sent = await channel.send([instanceId], { commands: ['true'], executionTimeoutS: 60, deliveryTimeoutS: 30 }, { skipAgentCheck: true });
    const other = 'i-0123456789abcdef0';
    expect(await channel.status(sent.commandId, other)).toMatchObject({ status: 'Pending', instanceId: other });
    const late = await rejection(channel.status(sent.commandId, other, { sentAt: Date.now() - 3_600_000 }));
    expect(late).toMatchObject({ code: 'command_not_found', details: { awsCode: 'InvocationDoesNotExist' } });
    const unknown = await rejection(channel.status('00000000-0000-0000-0000-000000000000', instanceId));
    expect(unknown).toMatchObject({ code: 'command_not_found', details: { awsCode: 'InvalidCommandId' } });
  });

  it('CancelCommand: moto 5.2 does not emulate it; whatever the endpoint lacks is a clear error, not a parse failure', async () => {
    const sent = await channel.send([instanceId], { commands: ['sleep 60'], executionTimeoutS: 120, deliveryTimeoutS: 30 }, { skipAgentCheck: true });
    const outcome = await channel.cancel(sent.commandId, [instanceId]).then(
      () => undefined,
      (e: unknown) => e,
    );
    // A moto that emulates it returns nothing to check (moto's invocations are Success from the start).
    if (outcome !== undefined) expect(outcome).toMatchObject({ code: 'driver_unavailable', message: expect.stringContaining('answered CancelCommand') as unknown });
  });
});
