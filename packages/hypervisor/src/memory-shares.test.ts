// Proves the share-based split of reclamation on a water level worked by hand
// from ρ = S / (P (f + k (1 − f))), and the compression cache's slot
// accounting and least-recently-used eviction on hand-sized batches.

import { describe, expect, it } from "vitest";
import { CompressionCache } from "./memory-compression.js";
import { reclaimByShares } from "./memory-shares.js";

const f64 = (...xs: number[]) => Float64Array.from(xs);

describe("memory shares and cache", () => {
  it("memory: reclamation goes to the lowest ρ first and levels the VMs that give at one ρ", () => {
    // S = 100, 100, 200; P = 100 each; f = 0, 1, 0; τ = 0.75 (k = 4): c = 4, 1, 4 and ρ = 0.25, 1, 0.5.
    const shares = f64(100, 100, 200);
    const pages = f64(100, 100, 100);
    const active = f64(0, 1, 0);
    const out = new Float64Array(3);
    // 60 pages: VMs 0 and 2 give, at λ with 200 − 25/λ − 50/λ = 60, λ = 75/140 (below VM 1's ρ of 1, so it gives nothing).
    const lambda = 75 / 140;
    expect(reclaimByShares(60, 3, shares, pages, active, f64(100, 100, 100), 0.75, out)).toBe(60);
    expect(out[0]).toBeCloseTo(100 - 25 / lambda, 6);
    expect(out[1]).toBe(0);
    expect(out[2]).toBeCloseTo(100 - 50 / lambda, 6);
    // VM 0 can give only 20: VM 2 gives the other 40 (λ = 50/60, still under 1).
    reclaimByShares(60, 3, shares, pages, active, f64(20, 100, 100), 0.75, out);
    expect([...out].map((x) => Number(x.toFixed(6)))).toEqual([20, 0, 40]);
    // More than all can give: each gives all it can.
    expect(reclaimByShares(500, 3, shares, pages, active, f64(10, 20, 30), 0.75, out)).toBe(60);
    expect([...out]).toEqual([10, 20, 30]);
    // Without an idle tax (k = 1) activity does not matter: equal S and P give equally.
    reclaimByShares(50, 2, f64(100, 100), f64(100, 100), f64(0, 1), f64(100, 100), 0, out);
    expect(out[0]).toBeCloseTo(25, 6);
    expect(out[1]).toBeCloseTo(25, 6);
  });

  it("memory: the compression cache charges 1 KB a quarter-slot and 2 KB a half-slot, and evicts the oldest pages first", () => {
    const cache = new CompressionCache(300);
    const evicted = new Float64Array(3);
    cache.insert(1000, f64(0, 0, 100), f64(0, 0, 50), evicted);
    expect(cache.usedKb()).toBe(200);
    cache.insert(2000, f64(40, 0, 0), f64(0, 30, 0), evicted);
    expect(cache.usedKb()).toBe(300);
    expect([...evicted]).toEqual([0, 0, 0]);
    // 100 KB more: the oldest batch (200 KB of private pages) loses half of its pages, no one else any.
    cache.insert(3000, f64(0, 0, 0), f64(0, 50, 0), evicted);
    expect(cache.usedKb()).toBeCloseTo(300, 9);
    expect(evicted[2]).toBeCloseTo(75, 9);
    expect(evicted[0]! + evicted[1]!).toBe(0);
    expect(cache.batches()).toEqual([
      { compressedAtMs: 1000, pages: 75 },
      { compressedAtMs: 2000, pages: 70 },
      { compressedAtMs: 3000, pages: 50 },
    ]);
    // Touched pages leave evenly from every batch.
    const taken = new Float64Array(3);
    expect(cache.takeUniform(39, taken)).toBeCloseTo(39, 9);
    expect(cache.totalPages()).toBeCloseTo(195 - 39, 9);
    expect(cache.batches().map((b) => Number(b.pages.toFixed(6)))).toEqual([60, 56, 40]);
  });
});
