/**
 * A fleet on the AWS driver (moto) whose agent channel serves TLS: the pool's boot script carries
 * the CA with the enrolment, so each machine's agent sends the pool's secret only over https:// to
 * a server it trusts, is given an identity that trusts the same CA, and dials wss://. The machines
 * are real agents standing in for moto's instances (test/helpers/emulated-fleet.ts).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DescribeLaunchTemplateVersionsCommand } from '@aws-sdk/client-ec2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { filesFromUserData } from '../../src/drivers/aws/user-data.js';
import { AGENT_ENROLMENT_PATH, agentEnrolment } from '../../src/protocol/messages.js';
import type { ClaimView, PoolStatusView } from '../../src/pools/views.js';
import { startFleetServer, type FleetServer } from '../helpers/aws-fleet-server.js';
import { makeCa, makeCertificate } from '../helpers/certs.js';
import { motoAvailable } from '../helpers/moto.js';
import { waitFor } from '../helpers/wait.js';

const NAME = 'btlsfleet';

describe.skipIf(!motoAvailable('AWS fleet with a TLS agent channel'))('AWS fleet with a TLS agent channel', () => {
  const certs = mkdtempSync(join(tmpdir(), 'berth-awstls-certs-'));
  const ca = makeCa(certs, 'vpc');
  const cert = makeCertificate(certs, 'control', ['control.berth.test', '127.0.0.1'], ca);
  const caFile = join(certs, 'agents-ca.pem'); // rewritten below, as an operator rolling the CA over would
  let h: FleetServer;

  beforeAll(async () => {
    writeFileSync(caFile, ca.cert);
    h = await startFleetServer(NAME, { agentTls: { certFile: cert.certFile, keyFile: cert.keyFile, caFile } });
  }, 60_000);

  afterAll(async () => {
    await h?.stop();
    rmSync(certs, { recursive: true, force: true });
  }, 60_000);

  /** The enrolment the pool's machines boot with, from the emulator's launch template. */
  const bootEnrolment = async () => {
    const versions = await h.net.ec2.send(new DescribeLaunchTemplateVersionsCommand({ LaunchTemplateName: `${NAME}-pool-web`, Versions: ['$Latest'] }));
    const userData = Buffer.from(versions.LaunchTemplateVersions?.[0]?.LaunchTemplateData?.UserData ?? '', 'base64').toString();
    return agentEnrolment.parse(JSON.parse(filesFromUserData(userData).get(AGENT_ENROLMENT_PATH) ?? '{}'));
  };

  it('enrols machines over https:// with the CA from the boot script, and their agents dial wss://', async () => {
    expect(h.server.agentUrl).toMatch(/^wss:\/\/127\.0\.0\.1:\d+\/v1\/agent$/);
    const created = await h.api.post<PoolStatusView>('/v1/pools', { name: 'web', size: 2, onEmpty: 'fail' });
    expect(created.status).toBe(201);
    await waitFor('the pool to fill through enrolment', async () => ((await h.api.get<PoolStatusView>('/v1/pools/web')).body.status.ready >= 2 ? true : undefined), { timeoutMs: 60_000 });
    expect(h.fleet.refused.size).toBe(0);

    // What the pool's machines boot with: the enrolment URL over https and the CA beside it.
    const enrolment = await bootEnrolment();
    expect(enrolment.enrolUrl).toMatch(/^https:\/\/127\.0\.0\.1:\d+\/v1\/agent\/enrol$/);
    expect(enrolment.ca?.trim()).toBe(ca.cert.toString().trim());

    // A claim's init runs over the encrypted channel.
    const claim = await h.api.post<ClaimView>('/v1/pools/web/claims', { group: 'alice', init: ['echo "hello from $(hostname)"'] });
    expect(claim.status, JSON.stringify(claim.body)).toBe(201);
    expect(claim.body.host).toMatchObject({ group: 'alice', slot: 'claimed' });

    // The CA rolled over (the next beside the old): machines launched from now on boot trusting both.
    const next = makeCa(certs, 'next');
    const both = `${ca.cert.toString().trim()}\n${next.cert.toString().trim()}\n`;
    writeFileSync(caFile, both);
    await waitFor('the pool\'s template to carry the new bundle', async () => ((await bootEnrolment()).ca === both ? true : undefined), { timeoutMs: 20_000 });
  }, 120_000);
});
