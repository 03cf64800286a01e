/**
 * A fleet on the AWS driver (moto) whose agent channel serves TLS: the pool's boot script carries
 * the CA with the enrolment, so each machine's agent sends the pool's secret only over https:// to
 * a server it trusts, is given an identity that trusts the same CA, and dials wss://. The machines
 * are real agents standing in for moto's instances (test/helpers/emulated-fleet.ts).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DescribeLaunchTemplateVersionsCommand } from '@aws-sdk/client-ec2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AwsDriver } from '../../src/drivers/aws/aws-driver.js';
import { filesFromUserData } from '../../src/drivers/aws/user-data.js';
import { AGENT_ENROLMENT_PATH, agentEnrolment } from '../../src/protocol/messages.js';
import { BerthServer } from '../../src/server/berth-server.js';
import type { ClaimView, PoolStatusView } from '../../src/pools/views.js';
import { agentBundleDir } from '../../src/cli/paths.js';
import { makeCa, makeCertificate, type TestCertificate } from '../helpers/certs.js';
import { EmulatedFleet } from '../helpers/emulated-fleet.js';
import { motoAvailable, startMoto, type Moto } from '../helpers/moto.js';
import { Api } from '../helpers/server.js';
import { waitFor } from '../helpers/wait.js';
import { motoDriverConfig, motoNetwork, type MotoNetwork } from '../drivers/aws-fixtures.js';

const NAME = 'btlsfleet';

describe.skipIf(!motoAvailable('AWS fleet with a TLS agent channel'))('AWS fleet with a TLS agent channel', () => {
  let moto: Moto;
  let net: MotoNetwork;
  let driver: AwsDriver;
  let server: BerthServer;
  let fleet: EmulatedFleet;
  let api: Api;
  let dir: string;
  let ca: TestCertificate;

  beforeAll(async () => {
    moto = await startMoto();
    net = await motoNetwork(moto.endpoint);
    dir = await mkdtemp(join(tmpdir(), 'berth-awstls-'));
    ca = makeCa(dir, 'vpc');
    const cert = makeCertificate(dir, 'control', ['control.berth.test', '127.0.0.1'], ca);
    driver = new AwsDriver(motoDriverConfig(moto.endpoint, net, NAME, { agentListenHost: '127.0.0.1' }));
    server = await BerthServer.start({
      dataDir: join(dir, 'data'),
      port: 0,
      agentPort: 0,
      agentTls: { certFile: cert.certFile, keyFile: cert.keyFile, caFile: ca.certFile },
      driver,
      agentDir: agentBundleDir(),
      log: process.env['BERTH_TEST_LOG'] ? (line: string) => process.stderr.write(`berth: ${line}\n`) : () => {},
      monitorIntervalMs: 500,
      router: { port: 0 },
    });
    api = new Api(server.url, server.token);
    fleet = new EmulatedFleet({ endpoint: moto.endpoint, driverName: NAME, dir: join(dir, 'machines') });
    fleet.start();
  }, 60_000);

  afterAll(async () => {
    await fleet?.stop();
    await server?.stop();
    driver?.close();
    net?.ec2.destroy();
    await moto?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  }, 60_000);

  it('enrols machines over https:// with the CA from the boot script, and their agents dial wss://', async () => {
    expect(server.agentUrl).toMatch(/^wss:\/\/127\.0\.0\.1:\d+\/v1\/agent$/);
    const created = await api.post<PoolStatusView>('/v1/pools', { name: 'web', size: 2, onEmpty: 'fail' });
    expect(created.status).toBe(201);
    await waitFor('the pool to fill through enrolment', async () => ((await api.get<PoolStatusView>('/v1/pools/web')).body.status.ready >= 2 ? true : undefined), { timeoutMs: 60_000 });
    expect(fleet.refused.size).toBe(0);

    // What the pool's machines boot with: the enrolment URL over https and the CA beside it.
    const versions = await net.ec2.send(new DescribeLaunchTemplateVersionsCommand({ LaunchTemplateName: `${NAME}-pool-web`, Versions: ['$Latest'] }));
    const userData = Buffer.from(versions.LaunchTemplateVersions?.[0]?.LaunchTemplateData?.UserData ?? '', 'base64').toString();
    const enrolment = agentEnrolment.parse(JSON.parse(filesFromUserData(userData).get(AGENT_ENROLMENT_PATH) ?? '{}'));
    expect(enrolment.enrolUrl).toMatch(/^https:\/\/127\.0\.0\.1:\d+\/v1\/agent\/enrol$/);
    expect(enrolment.ca?.trim()).toBe(ca.cert.toString().trim());

    // A claim's init runs over the encrypted channel.
    const claim = await api.post<ClaimView>('/v1/pools/web/claims', { group: 'alice', init: ['echo "hello from $(hostname)"'] });
    expect(claim.status, JSON.stringify(claim.body)).toBe(201);
    expect(claim.body.host).toMatchObject({ group: 'alice', slot: 'claimed' });
  }, 120_000);
});
