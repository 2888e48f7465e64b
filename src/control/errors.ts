/** A run control request that cannot be done as asked (no such run, no report yet, nothing to retry). */
export class RunControlError extends Error {
  override name = 'RunControlError';
}
