// Time as a dependency, so models and loops can run on simulated time in
// tests and on the wall clock in processes.

export interface Clock {
  /** Unix time in milliseconds. */
  nowMs(): number;
}

export const systemClock: Clock = { nowMs: () => Date.now() };
