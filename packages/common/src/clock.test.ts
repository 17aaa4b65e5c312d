// Proves the clocks: the manual clock fires every timer that falls due, in
// order, at its own time, and instantly; intervals repeat and cancel; sleeps
// end early when aborted; and the wall clock at a time scale runs timers that
// many times faster while every process with the same origin reads the same time.

import { describe, expect, it } from "vitest";
import { ManualClock, WallClock } from "./clock.js";
import { Heap } from "./heap.js";

describe("clock", () => {
  it("clock: the manual clock fires due timers in order, each at its own time", () => {
    const clock = new ManualClock(1_000);
    const fired: string[] = [];
    clock.after(30, () => fired.push(`b@${clock.nowMs()}`));
    clock.after(10, () => {
      fired.push(`a@${clock.nowMs()}`);
      clock.after(5, () => fired.push(`a2@${clock.nowMs()}`));
    });
    clock.after(30, () => fired.push(`c@${clock.nowMs()}`));
    const cancelled = clock.after(20, () => fired.push("never"));
    cancelled.cancel();
    clock.advance(29);
    expect(fired).toEqual(["a@1010", "a2@1015"]);
    expect(clock.nowMs()).toBe(1_029);
    clock.advance(1);
    expect(fired).toEqual(["a@1010", "a2@1015", "b@1030", "c@1030"]);
  });

  it("clock: intervals repeat until cancelled, an hour in well under a second", () => {
    const clock = new ManualClock();
    let beats = 0;
    const timer = clock.every(1_000, () => (beats += 1));
    const started = performance.now();
    clock.advance(3_600_000);
    expect(performance.now() - started).toBeLessThan(1_000);
    expect(beats).toBe(3_600);
    timer.cancel();
    clock.advance(10_000);
    expect(beats).toBe(3_600);
  });

  it("clock: a sleep resolves when its time passes, or false at once when aborted", async () => {
    const clock = new ManualClock();
    const done = clock.sleep(500);
    const abort = new AbortController();
    const aborted = clock.sleep(500, abort.signal);
    abort.abort();
    expect(await aborted).toBe(false);
    await clock.advanceAsync(499);
    let settled = false;
    void done.then(() => (settled = true));
    await clock.advanceAsync(0);
    expect(settled).toBe(false);
    await clock.advanceAsync(1);
    expect(await done).toBe(true);
  });

  it("clock: advanceAsync lets async code driven by timers run as it would in time", async () => {
    const clock = new ManualClock();
    const steps: number[] = [];
    void (async () => {
      for (let i = 0; i < 5; i++) {
        await clock.sleep(100);
        steps.push(clock.nowMs());
      }
    })();
    const start = clock.nowMs();
    await clock.advanceAsync(1_000);
    expect(steps.map((t) => t - start)).toEqual([100, 200, 300, 400, 500]);
  });

  it("clock: a wall clock at a time scale runs timers faster and agrees with another of the same origin", async () => {
    const origin = Date.now() - 10_000;
    const a = new WallClock(100, origin);
    const b = new WallClock(100, origin);
    expect(Math.abs(a.nowMs() - b.nowMs())).toBeLessThan(200);
    expect(a.nowMs() - origin).toBeGreaterThanOrEqual(999_000);
    const started = Date.now();
    await a.sleep(2_000);
    expect(Date.now() - started).toBeLessThan(500);
    expect(() => new WallClock(0)).toThrow(/time scale/);
    expect(() => new WallClock(1_001)).toThrow(/time scale/);
  });

  it("clock: the heap keeps positions current for re-ranking and removal", () => {
    const position = new Map<string, number>();
    const heap = new Heap<{ id: string; v: number }>((x, y) => x.v < y.v, (item, index) => position.set(item.id, index));
    for (const [id, v] of [["a", 5], ["b", 3], ["c", 8], ["d", 1]] as const) heap.push({ id, v });
    heap.replaceAt(position.get("c")!, { id: "c", v: 0 });
    heap.removeAt(position.get("d")!);
    const order: string[] = [];
    for (let item = heap.pop(); item; item = heap.pop()) order.push(item.id);
    expect(order).toEqual(["c", "b", "a"]);
  });
});
