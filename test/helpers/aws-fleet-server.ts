/**
 * A berth server on the AWS driver against moto, with a real agent for each instance moto
 * "launches" (EmulatedFleet): what the AWS end-to-end files start before their tests and stop after.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AwsDriver } from '../../src/drivers/aws/aws-driver.js';
import { agentBundleDir } from '../../src/cli/paths.js';
import { BerthServer } from '../../src/server/berth-server.js';
import type { ServerConfig } from '../../src/server/server-config.js';
import { motoDriverConfig, motoNetwork, type MotoNetwork } from '../drivers/aws-fixtures.js';
import { EmulatedFleet } from './emulated-fleet.js';
import { startMoto, type Moto } from './moto.js';
import { freePort } from './ports.js';
import { Api } from './server.js';

export interface FleetServer {
  moto: Moto;
  net: MotoNetwork;
  driver: AwsDriver;
  server: BerthServer;
  fleet: EmulatedFleet;
  api: Api;
  /** A temporary directory: the server's data dir is `data` in it, the machines' `machines`. */
  dir: string;
  stop(): Promise<void>;
}

/** `name` names the driver's resources (groups, templates); `config` adds to the server's. */
export async function startFleetServer(name: string, config: Partial<ServerConfig> = {}): Promise<FleetServer> {
  const moto = await startMoto();
  const net = await motoNetwork(moto.endpoint);
  const dir = await mkdtemp(join(tmpdir(), `berth-${name}-`));
  const driver = new AwsDriver(motoDriverConfig(moto.endpoint, net, name, { agentListenHost: '127.0.0.1' }));
  const server = await BerthServer.start({
    dataDir: join(dir, 'data'),
    port: 0,
    agentPort: await freePort(),
    driver,
    agentDir: agentBundleDir(),
    log: process.env['BERTH_TEST_LOG'] ? (line: string) => process.stderr.write(`berth: ${line}\n`) : () => {},
    monitorIntervalMs: 500,
    router: { port: 0 },
    ...config,
  });
  const fleet = new EmulatedFleet({ endpoint: moto.endpoint, driverName: name, dir: join(dir, 'machines') });
  fleet.start();
  return {
    moto, net, driver, server, fleet, dir,
    api: new Api(server.url, server.token),
    async stop() {
      // The machines first: agents of a stopped server would keep redialling it.
      await fleet.stop();
      await server.stop();
      driver.close();
      net.ec2.destroy();
      await moto.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
