/** What the AWS driver keeps of a host (its driverData): the instance id, when it has one. */
export function instanceIdOf(driverData: Record<string, unknown>): string | undefined {
  const value = driverData['instanceId'];
  return typeof value === 'string' && value.startsWith('i-') ? value : undefined;
}
