/**
 * The driver conformance suite against the AWS driver, on moto in server mode (the real EC2 wire
 * protocol) started on loopback by the test. Skipped when moto is not installed, except in CI.
 */
import { DescribeInstancesCommand } from '@aws-sdk/client-ec2';
import { AwsDriver } from '../../src/drivers/aws/index.js';
import { motoAvailable, startMoto } from '../helpers/moto.js';
import { awsSpec, motoDriverConfig, motoNetwork, securityGroupsLetReach } from './aws-fixtures.js';
import { describeDriverConformance } from './conformance.js';

describeDriverConformance(
  'aws (moto)',
  async () => {
    const moto = await startMoto();
    try {
      const net = await motoNetwork(moto.endpoint);
      const make = (name: string): AwsDriver =>
        new AwsDriver(motoDriverConfig(moto.endpoint, net, name, { callTimeoutMs: 10_000 }));
      const driver = make('berthcnf');
      const other = make('berthcnf-other');
      return {
        driver,
        spec: awsSpec,
        readTags: async (host) => {
          const out = await net.ec2.send(new DescribeInstancesCommand({ InstanceIds: [String(host.driverData['instanceId'])] }));
          const tags = out.Reservations?.[0]?.Instances?.[0]?.Tags ?? [];
          return Object.fromEntries(tags.map((t) => [t.Key ?? '', t.Value ?? '']));
        },
        // moto's default group lets no instance in (AWS's own default group lets its members in).
        reaches: (from, to) => securityGroupsLetReach(net.ec2, from, to),
        other: { driver: other, spec: awsSpec },
        cleanup: async () => {
          driver.close();
          other.close();
          net.ec2.destroy();
          await moto.stop();
        },
      };
    } catch (err) {
      await moto.stop();
      throw err;
    }
  },
  { skip: !motoAvailable('AWS driver conformance') },
);
