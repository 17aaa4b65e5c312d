// Pure arithmetic for when retries happen: capped exponential backoff with
// jitter, so hosts that failed together do not retry together. No timers here.

/** A capped doubling backoff; delays in ms. */
export interface BackoffPolicy {
  initialMs: number;
  maxMs: number;
}

/**
 * The delay before retry number `attempt` (1 for the first retry): initialMs
 * doubled per attempt and capped at maxMs, of which the upper half is random,
 * so hosts that failed together do not retry together.
 * @param random returns a number in [0, 1).
 * @returns the delay in ms.
 */
export function backoffDelayMs(policy: BackoffPolicy, attempt: number, random: () => number): number {
  const cappedMs = Math.min(policy.maxMs, policy.initialMs * 2 ** Math.min(Math.max(attempt - 1, 0), 30));
  return cappedMs / 2 + (random() * cappedMs) / 2;
}
