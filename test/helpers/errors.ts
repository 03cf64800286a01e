import { expect } from 'vitest';
import { BerthError } from '../../src/core/errors.js';

/** The BerthError a promise rejects with (fails the test if it resolves or rejects otherwise). */
export async function rejection(promise: Promise<unknown>): Promise<BerthError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(BerthError);
  return err as BerthError;
}

/** The BerthError a function throws (fails the test if it returns or throws otherwise). */
export function thrown(run: () => unknown): BerthError {
  let err: unknown;
  try {
    run();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(BerthError);
  return err as BerthError;
}
