/**
 * How the image a host boots is resolved: a machine image of the driver's own (an AMI) is booted
 * as it is; berth's images resolve to their layers through the image service, which the server
 * makes after the hosts' service (hence the getter).
 */
import type { ImageResolver } from '../hosts/host-types.js';

const AMI_ID = /^ami-[0-9a-f]{8,17}$/;

export function bootImageResolver(driverName: string, images: () => ImageResolver | undefined): ImageResolver {
  const machineImage = driverName === 'aws' ? AMI_ID : undefined;
  return {
    resolve: (tenantId, ref) => {
      if (machineImage?.test(ref)) return Promise.resolve({ image: ref, imageId: null, base: ref, layers: [] });
      const service = images();
      if (!service) throw new Error('images used before the server started');
      return service.resolve(tenantId, ref);
    },
  };
}
