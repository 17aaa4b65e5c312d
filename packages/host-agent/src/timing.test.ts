// Proves the retry arithmetic: backoff doubles per attempt up to its cap,
// with jitter only in the upper half, so hosts that failed together spread
// their retries without any retrying sooner than half the step. (Heartbeat
// slots are the agent's one timer now; simulation.test.ts proves them.)

import { describe, expect, it } from "vitest";
import { backoffDelayMs } from "./timing.js";
import { bootBackoff, registerBackoff } from "./limits.js";

describe("timing", () => {
  it("timing: backoff doubles per attempt, caps, and jitters within the upper half", () => {
    // Always drawing 0 gives the lower bound, drawing almost 1 the upper one.
    const policy = { initialMs: 100, maxMs: 1_000 };
    expect([1, 2, 3, 4, 5, 50].map((a) => backoffDelayMs(policy, a, () => 0))).toEqual([50, 100, 200, 400, 500, 500]);
    expect([1, 2, 3, 4, 5, 50].map((a) => backoffDelayMs(policy, a, () => 0.999_999))).toEqual(
      [100, 200, 400, 800, 1_000, 1_000].map((ms) => expect.closeTo(ms, 2)),
    );
  });

  it("timing: attempts below one count as the first, and huge attempt numbers stay at the cap", () => {
    // A caller's off-by-one or a host that retried for days must not get a
    // zero, negative or infinite delay.
    expect(backoffDelayMs(registerBackoff, 0, () => 0.5)).toBe(backoffDelayMs(registerBackoff, 1, () => 0.5));
    expect(backoffDelayMs(registerBackoff, -3, () => 0)).toBe(registerBackoff.initialMs / 2);
    for (const attempt of [31, 1_000, Number.MAX_SAFE_INTEGER]) {
      expect(backoffDelayMs(bootBackoff, attempt, () => 0)).toBe(bootBackoff.maxMs / 2);
      expect(backoffDelayMs(bootBackoff, attempt, () => 0.999_999)).toBeCloseTo(bootBackoff.maxMs, 2);
    }
  });
});
