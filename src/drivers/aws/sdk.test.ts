/**
 * The AWS driver's SDK plumbing with the real SDK (retry strategy, middleware, abort) and a fake
 * HTTP handler instead of the network: throttling is retried with back-off and counted, a hung call
 * is bounded by the driver's timeout, and the caller's AbortSignal stops a launch at once.
 */
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { BerthError } from '../../core/errors.js';
import { AwsDriver } from './aws-driver.js';
import type { RequestHandler } from './sdk.js';

interface FakeRequest {
  body?: unknown;
}
type Reply = { status: number; xml: string } | 'hang';

const THROTTLED: Reply = { status: 503, xml: '<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors><RequestID>req-1</RequestID></Response>' };
const NO_INSTANCES: Reply = { status: 200, xml: '<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>req-2</requestId><reservationSet/></DescribeInstancesResponse>' };
const TEMPLATE: Reply = {
  status: 200,
  xml: `<DescribeLaunchTemplateVersionsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>r</requestId><launchTemplateVersionSet><item>
    <launchTemplateName>berth-hosts</launchTemplateName><versionNumber>1</versionNumber>
    <launchTemplateData><imageId>ami-0123456789abcdef0</imageId><instanceType>t3.micro</instanceType><metadataOptions><httpTokens>required</httpTokens></metadataOptions></launchTemplateData>
  </item></launchTemplateVersionSet></DescribeLaunchTemplateVersionsResponse>`,
};

/** Answers each EC2 action from its own queue of replies (the last one repeats); records the actions asked. */
function fakeEc2(replies: Record<string, Reply[]>): { handler: RequestHandler; actions: string[] } {
  const actions: string[] = [];
  const handler = {
    handle: async (request: FakeRequest, options?: { abortSignal?: AbortSignal }) => {
      const action = /Action=(\w+)/.exec(String(request.body))?.[1] ?? '?';
      actions.push(action);
      const queue = replies[action] ?? [];
      const reply = queue.length > 1 ? queue.shift() : queue[0];
      if (!reply) throw new Error(`unexpected ${action}`);
      if (reply === 'hang') {
        // Like a socket that never answers: only the abort ends it.
        await new Promise<never>((_, reject) => {
          const abort = (): void => reject(Object.assign(new Error('Request aborted'), { name: 'AbortError' }));
          if (options?.abortSignal?.aborted) abort();
          options?.abortSignal?.addEventListener('abort', abort, { once: true });
        });
      }
      const body = reply === 'hang' ? '' : reply.xml;
      return { response: { statusCode: reply === 'hang' ? 500 : reply.status, reason: '', headers: { 'content-type': 'text/xml' }, body: Readable.from([Buffer.from(body)]) } };
    },
    updateHttpClientConfig: () => undefined,
    httpHandlerConfigs: () => ({}),
  };
  return { handler, actions };
}

function driver(handler: RequestHandler, extra: { maxAttempts?: number; callTimeoutMs?: number } = {}): AwsDriver {
  return new AwsDriver(
    { region: 'eu-west-1', credentials: { accessKeyId: 'a', secretAccessKey: 'b' }, imageId: 'ami-0123456789abcdef0', instanceType: 't3.micro', ...extra },
    { requestHandler: handler },
  );
}

const spec = (id: string) => ({ id, hostname: id, image: '/', tags: {}, resources: {}, agent: { hostId: id, token: 't', serverUrl: 'ws://x' } });

describe('AWS driver SDK plumbing', () => {
  it('retries a throttled call with back-off, then succeeds; counts one call and two attempts', async () => {
    const { handler, actions } = fakeEc2({ DescribeInstances: [THROTTLED, NO_INSTANCES] });
    const d = driver(handler);
    expect(await d.list()).toEqual([]);
    expect(actions).toEqual(['DescribeInstances', 'DescribeInstances']);
    expect(d.callCounts()).toEqual({ DescribeInstances: 1 });
    expect(d.attemptCounts()).toEqual({ DescribeInstances: 2 });
  });

  it('still throttled after every attempt: a berth error that says so', async () => {
    const { handler, actions } = fakeEc2({ DescribeInstances: [THROTTLED] });
    const err = await driver(handler, { maxAttempts: 2 }).list().catch((e: unknown) => e);
    expect(actions).toHaveLength(2);
    expect(err).toBeInstanceOf(BerthError);
    expect(err).toMatchObject({ code: 'driver_unavailable', details: { awsCode: 'RequestLimitExceeded', operation: 'DescribeInstances', attempts: 2 } });
    expect((err as BerthError).message).toBe('AWS throttled DescribeInstances in region eu-west-1 and was still throttling after 2 attempts');
    expect((err as BerthError).hint).toMatch(/rate/);
  });

  it("the caller's abort stops a launch under way promptly, and what it may have made is looked for", async () => {
    const { handler, actions } = fakeEc2({ DescribeLaunchTemplateVersions: [TEMPLATE], RunInstances: ['hang'], DescribeInstances: [NO_INSTANCES] });
    const d = driver(handler);
    await d.init();
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 50);
    const started = Date.now();
    const err = await d.launch(spec('h-abort'), { signal: controller.signal }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'deadline_exceeded', message: 'launch of host h-abort was cancelled' });
    // The launch's outcome is unknown, so it looks for an orphan a few times (0, 0.5, 1.5 s).
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(actions.filter((a) => a === 'RunInstances')).toHaveLength(1);
    expect(actions.filter((a) => a === 'DescribeInstances').length).toBeGreaterThanOrEqual(2);
  });

  it('a call that never answers is bounded by callTimeoutMs', async () => {
    const { handler } = fakeEc2({ DescribeInstances: ['hang'] });
    const started = Date.now();
    const err = await driver(handler, { callTimeoutMs: 300 }).describe('h-1', { instanceId: 'i-0123456789abcdef0' }).catch((e: unknown) => e);
    expect(Date.now() - started).toBeLessThan(3_000);
    expect(err).toMatchObject({ code: 'deadline_exceeded', message: 'AWS call DescribeInstances did not complete within 0.3 s (region eu-west-1)' });
  });
});
