/**
 * What a pool spec must agree with on this server, beyond its own schema: the driver it names, AWS
 * settings only on AWS, resources the driver can give, and an image that resolves. Run before a
 * pool is stored, so a spec this server cannot serve changes nothing.
 */
import { BerthError } from '../core/errors.js';
import type { HostDriver } from '../drivers/types.js';
import type { PoolSpec } from '../store/pools-repo.js';

export function poolSpecCheck(driver: Pick<HostDriver, 'name' | 'checkResources'>, resolveImage: (tenantId: string, ref: string) => Promise<unknown>): (tenantId: string, spec: PoolSpec) => Promise<void> {
  return async (tenantId, spec) => {
    if (spec.driver && spec.driver !== driver.name) {
      throw new BerthError('validation_failed', `pool ${spec.name} needs the ${spec.driver} driver; this server runs the ${driver.name} driver`, `Apply it to a server started with --driver ${spec.driver}, or remove its \`driver:\`.`, { pool: spec.name });
    }
    if (spec.template.aws && driver.name !== 'aws') {
      throw new BerthError('validation_failed', `pool ${spec.name} has AWS settings (template.aws) but this server runs the ${driver.name} driver`, 'Remove template.aws, or apply the pool to a server started with --driver aws.', { pool: spec.name });
    }
    const { tags: _tags, aws: _aws, ...resources } = spec.template;
    driver.checkResources?.(resources);
    await resolveImage(tenantId, spec.image);
  };
}
