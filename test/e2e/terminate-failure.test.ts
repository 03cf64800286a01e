/**
 * A host the driver cannot terminate: the API answers with the driver's own code and hint (a
 * missing permission says which, and what to do), the host is `failed` with the reason, and the
 * next `host rm` goes on once the driver can.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BerthError } from '../../src/core/errors.js';
import { LocalDriver } from '../../src/drivers/local/index.js';
import type { OperationOptions } from '../../src/drivers/types.js';
import type { HostView } from '../../src/hosts/views.js';
import { startServer, type InProcessServer } from '../helpers/server.js';

const NET = { bridge: 'berthtrm0', subnet: '10.207.0.0/24', cgroupName: 'berthtrm' };

/** The local driver, refusing to terminate the hosts in `refuse` as a cloud API refuses a call it is not allowed. */
class RefusingDriver extends LocalDriver {
  readonly refuse = new Set<string>();

  override terminate(id: string, driverData: Record<string, unknown>, opts?: OperationOptions & { replace?: boolean }): Promise<void> {
    if (this.refuse.has(id)) return Promise.reject(new BerthError('driver_unavailable', 'the cloud refused TerminateInstances: berth lacks the permission ec2:TerminateInstances', 'Grant it to the role berth runs with.', { operation: 'TerminateInstances' }));
    return super.terminate(id, driverData, opts);
  }
}

describe('a host the driver cannot terminate', () => {
  let srv: InProcessServer;
  let driver: RefusingDriver;

  beforeAll(async () => {
    srv = await startServer(NET, { driver: (config) => (driver = new RefusingDriver(config)) });
  });
  afterAll(async () => {
    await srv?.stop();
  });

  it("answers with the driver's code and hint, leaves the host failed with the reason, and a later rm goes on", async () => {
    const host = (await srv.api.post<HostView>('/v1/hosts', {})).body;
    driver.refuse.add(host.id);
    const refused = await srv.api.delete<{ code: string; message: string; hint: string; details?: Record<string, unknown> }>(`/v1/hosts/${host.id}`);
    expect(refused.status).toBe(503);
    expect(refused.body).toMatchObject({
      code: 'driver_unavailable',
      message: `host ${host.id} could not be terminated: the cloud refused TerminateInstances: berth lacks the permission ec2:TerminateInstances`,
      hint: `Grant it to the role berth runs with. Then retry \`berth host rm ${host.id}\`.`,
    });
    const failed = (await srv.api.get<HostView>(`/v1/hosts/${host.id}`)).body;
    expect(failed.state).toBe('failed');
    expect(failed.stateReason).toContain('termination failed: the cloud refused TerminateInstances');

    driver.refuse.delete(host.id);
    expect((await srv.api.delete(`/v1/hosts/${host.id}`)).status).toBeLessThan(300);
    expect((await srv.api.get<HostView>(`/v1/hosts/${host.id}`)).body.state).toBe('terminated');
  });
});
