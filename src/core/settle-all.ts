/**
 * Waits for every promise, then throws the first failure: unlike Promise.all, nothing is still
 * running behind the throw (each launch's id is recorded, each change is known to have ended).
 */
export async function settleAll<T>(promises: readonly Promise<T>[]): Promise<T[]> {
  const settled = await Promise.allSettled(promises);
  const rejected = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (rejected) throw rejected.reason;
  return settled.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
}
