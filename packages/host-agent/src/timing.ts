// Pure arithmetic for when things happen: capped exponential backoff with
// jitter for retries, and the staggered heartbeat schedule that keeps many
// hosts in one process from publishing at the same instant. No timers here.

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

/**
 * When the next heartbeat of a host is due. Each host beats at
 * `epochMs + phase * intervalMs + k * intervalMs`, so hosts with phases spread
 * over [0, 1) spread their heartbeats over the interval, and they stay spread
 * when the interval changes (the slots are recomputed, not shifted).
 * @param afterMs the earliest time the beat may be (now, or the slot that just fired).
 * @param phase this host's place in the interval, in [0, 1).
 * @returns the time of the first slot strictly after `afterMs`, in ms.
 */
export function nextHeartbeatAtMs(afterMs: number, epochMs: number, intervalMs: number, phase: number): number {
  const firstSlotMs = epochMs + phase * intervalMs;
  const beats = Math.floor((afterMs - firstSlotMs) / intervalMs) + 1;
  return firstSlotMs + beats * intervalMs;
}
