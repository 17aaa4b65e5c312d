// Proves minFree's sliding scale against the published figure for a 100 GB
// host, and the state machine's thresholds and hysteresis on hand-picked free
// memory figures (the thresholds are the percentages of Epping's table).

import { describe, expect, it } from "vitest";
import { memoryLevelStates, minFreeMb } from "./mod.js";
import { memoryLevelThresholdsMb, nextMemoryLevel, type MemoryLevel } from "./memory-states.js";

describe("memory states", () => {
  it("memory: minFree of a 100 GB host is about 1619 MB, and Mem.MemMinFreePct overrides the scale", () => {
    // The published shortcut: 899 MB for the first 28 GB plus 1 % of the rest gives "about 1619 MB"; sources round differently, so ±2 %.
    expect(Math.abs(minFreeMb(100 * 1024) - 1619) / 1619).toBeLessThan(0.02);
    // The scale by hand for 64 GB: 6 % of 4096 + 4 % of 8192 + 2 % of 16384 + 1 % of 36864.
    expect(minFreeMb(64 * 1024)).toBeCloseTo(245.76 + 327.68 + 327.68 + 368.64, 6);
    // A small host stays on the first slices: 6 % of 4 GB and 4 % of the next 2 GB.
    expect(minFreeMb(6 * 1024)).toBeCloseTo(245.76 + 81.92, 6);
    expect(minFreeMb(100 * 1024, 5)).toBeCloseTo(5120, 6);
  });

  it("memory: each state starts below its threshold × minFree; above 400 % nothing is done; going up needs the hysteresis band", () => {
    const minFree = 1000;
    const t = memoryLevelThresholdsMb(minFree);
    expect(t).toEqual([4000, 1000, 640, 320, 160]);
    const at = (level: MemoryLevel, free: number) => nextMemoryLevel(level, free, t, 10);
    const state = (level: MemoryLevel) => memoryLevelStates[level];
    expect(at(0, 5000)).toBe(0);
    // Below 400 %: still "high", but large pages break.
    expect(at(0, 3999)).toBe(1);
    expect(state(at(0, 3999))).toBe("high");
    expect(state(at(0, 999))).toBe("clear");
    expect(state(at(0, 500))).toBe("soft");
    expect(state(at(0, 200))).toBe("hard");
    expect(state(at(0, 150))).toBe("low");
    // Down is at once, to the deepest threshold crossed.
    expect(state(at(1, 100))).toBe("low");
    // Up: low leaves only at 16 % × 1.1 = 176, soft only at 64 % × 1.1 = 704.
    expect(state(at(5, 170))).toBe("low");
    expect(state(at(5, 180))).toBe("hard");
    expect(state(at(3, 690))).toBe("soft");
    expect(state(at(3, 710))).toBe("clear");
    // Several levels at once when free memory is back past all of them.
    expect(at(5, 10_000)).toBe(0);
    // Without a band the thresholds are the same both ways.
    expect(nextMemoryLevel(3, 640, t, 0)).toBe(2);
  });
});
