// Proves the retry and heartbeat arithmetic: backoff doubles up to its cap with
// bounded jitter, and heartbeat slots are spread by phase, strictly after the
// given time (so a slot never fires twice), and stay spread when the interval
// changes.

import { describe, expect, it } from "vitest";
import { backoffDelayMs, nextHeartbeatAtMs } from "./timing.js";

describe("timing", () => {
  it("timing: backoff doubles per attempt, caps, and jitters within the upper half", () => {
    const policy = { initialMs: 100, maxMs: 1_000 };
    expect([1, 2, 3, 4, 5, 50].map((a) => backoffDelayMs(policy, a, () => 0))).toEqual([50, 100, 200, 400, 500, 500]);
    expect([1, 2, 3, 4, 5, 50].map((a) => backoffDelayMs(policy, a, () => 0.999_999))).toEqual(
      [100, 200, 400, 800, 1_000, 1_000].map((ms) => expect.closeTo(ms, 2)),
    );
  });

  it("timing: heartbeat slots are spread by phase and strictly after the given time", () => {
    const epochMs = 10_000;
    // Four hosts, interval 200 ms: slots at 0, 50, 100, 150 ms past each interval.
    expect([0, 0.25, 0.5, 0.75].map((phase) => nextHeartbeatAtMs(epochMs, epochMs, 200, phase))).toEqual([
      10_200, 10_050, 10_100, 10_150,
    ]);
    // At a slot, the next one is a full interval later, not the same slot again.
    expect(nextHeartbeatAtMs(10_050, epochMs, 200, 0.25)).toBe(10_250);
    expect(nextHeartbeatAtMs(10_049, epochMs, 200, 0.25)).toBe(10_050);
  });

  it("timing: after an interval change the phases still spread over the new interval", () => {
    const epochMs = 0;
    const now = 12_345;
    const offsets = [0, 0.25, 0.5, 0.75].map((phase) => nextHeartbeatAtMs(now, epochMs, 1_000, phase) % 1_000);
    expect(offsets).toEqual([0, 250, 500, 750]);
  });
});
