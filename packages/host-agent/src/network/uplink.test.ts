// A host NIC on the manual clock: packets cross it at the line rate, wait
// behind the backlog, are dropped when the queue would overflow, and the
// storage traffic on it takes its share of the line; a fault reshapes it for
// a while.

import { describe, expect, it } from "vitest";
import { ManualClock } from "@simdc/common";
import { Uplink } from "./uplink.js";

// 8 Mbit/s: 1,000 bytes a millisecond.
const spec = { name: "nic0", bandwidthMbps: 8, queueBytes: 5_000, latencyMs: 2 };

describe("uplink", () => {
  it("uplink: packets leave at the line rate plus the wire latency, and one that would overflow the queue is dropped and reported", () => {
    const clock = new ManualClock(0);
    const arrived: number[] = [];
    const drops: number[] = [];
    const nic = new Uplink(spec, clock, (u) => drops.push(u.drops));
    const send = (i: number): boolean => {
      const delayMs = nic.transmit(1_000);
      if (delayMs >= 0) nic.later(delayMs, () => arrived.push(i));
      return delayMs >= 0;
    };
    const results = Array.from({ length: 6 }, (_, i) => send(i));
    expect(results).toEqual([true, true, true, true, true, false]);
    expect(drops).toEqual([1]);
    expect(nic.backlogBytes()).toBe(5_000);
    clock.advance(2);
    expect(arrived).toEqual([]);
    clock.advance(1);
    expect(arrived).toEqual([0]);
    clock.advance(4);
    expect(arrived).toEqual([0, 1, 2, 3, 4]);
    expect(nic).toMatchObject({ txPackets: 5, txBytes: 5_000, drops: 1, backlogBytesMax: 5_000 });
    // Drained: the queue takes packets again.
    expect(send(5)).toBe(true);
  });

  it("uplink: storage traffic takes the line's time, so the packets behind it wait", () => {
    const clock = new ManualClock(0);
    const at: number[] = [];
    const nic = new Uplink({ ...spec, queueBytes: 10_000, latencyMs: 0 }, clock, () => undefined);
    nic.reserve(3_000);
    nic.later(nic.transmit(1_000), () => at.push(clock.nowMs()));
    clock.advance(10);
    expect(at).toEqual([4]);
    expect(nic.storageBytes).toBe(3_000);
  });

  it("uplink: reshaped to a shorter queue and a slower line, it drops what no longer fits and sends slower; restored, it is as configured", () => {
    const clock = new ManualClock(0);
    const nic = new Uplink({ ...spec, latencyMs: 0 }, clock, () => undefined);
    nic.reshape({ queueBytes: 2_000, bandwidthMbps: 4 });
    expect([nic.transmit(1_000), nic.transmit(1_000), nic.transmit(1_000)]).toEqual([2, 4, -1]);
    expect(nic.drops).toBe(1);
    clock.advance(4);
    nic.reshape(nic.configured);
    expect(nic.spec).toEqual({ ...spec, latencyMs: 0 });
    // 1,000 bytes a millisecond again, and the 5,000-byte queue.
    expect(Array.from({ length: 6 }, () => nic.transmit(1_000))).toEqual([1, 2, 3, 4, 5, -1]);
  });
});
