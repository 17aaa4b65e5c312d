// Proves the seeded randomness: a seed and a stream name give the same
// numbers every time, different streams under one seed differ, draws are
// spread over [0, 1), and message hashes depend only on their parts.

import { describe, expect, it } from "vitest";
import { memberDigest } from "./digest.js";
import { Rng, unitHash } from "./random.js";

describe("random", () => {
  it("random: the same seed and stream draw the same numbers; other streams and seeds differ", () => {
    const draw = (rng: Rng): number[] => Array.from({ length: 20 }, () => rng.nextUint32());
    expect(draw(new Rng(7, "host-1"))).toEqual(draw(new Rng(7, "host-1")));
    expect(draw(new Rng(7, "host-1"))).not.toEqual(draw(new Rng(7, "host-2")));
    expect(draw(new Rng(7, "host-1"))).not.toEqual(draw(new Rng(8, "host-1")));
    expect(draw(new Rng(7).derive("agent-1").derive("host-3"))).toEqual(draw(new Rng(7, "agent-1/host-3")));
  });

  it("random: draws are spread evenly over [0, 1)", () => {
    const rng = new Rng(123, "spread");
    const buckets = new Array<number>(10).fill(0);
    let low = 1;
    let high = 0;
    for (let i = 0; i < 100_000; i++) {
      const x = rng.next();
      low = Math.min(low, x);
      high = Math.max(high, x);
      buckets[Math.floor(x * 10)]! += 1;
    }
    expect(low).toBeGreaterThanOrEqual(0);
    expect(high).toBeLessThan(1);
    for (const count of buckets) expect(Math.abs(count - 10_000)).toBeLessThan(500);
  });

  it("random: a unit hash is a function of the seed and its parts only", () => {
    expect(unitHash(1, "rule", "host-1", 17)).toBe(unitHash(1, "rule", "host-1", 17));
    expect(unitHash(1, "rule", "host-1", 17)).not.toBe(unitHash(2, "rule", "host-1", 17));
    expect(unitHash(1, "rule", "host-1", 17)).not.toBe(unitHash(1, "rule", "host-1", 18));
    expect(memberDigest("vm-1", "inc", 3, 1)).not.toBe(memberDigest("vm-1", "inc", 3, 2));
  });
});
