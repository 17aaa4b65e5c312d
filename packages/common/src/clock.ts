// Time as a dependency: every timer and every reading of "now" in models and
// services goes through a Clock, so a process can run at a time scale (an
// hour of simulated time in six minutes) and a test can run a host for a
// simulated hour in well under a second on the manual clock. This is the only
// module (with random.ts) that may touch the global timers and Date.now.

import { Heap } from "./heap.js";

/** A scheduled callback; cancel() is idempotent. */
export interface Timer {
  cancel(): void;
}

export interface TimerOptions {
  /** A wall-clock timer that must not keep the process alive on its own. */
  unref?: boolean;
}

export interface Clock {
  /** Simulated time, in ms since the Unix epoch. */
  nowMs(): number;
  /** Simulated ms per real ms: 1 in real time, 10 when ten times faster. */
  readonly timeScale: number;
  /** Calls `fn` once after `delayMs` simulated ms. */
  after(delayMs: number, fn: () => void, options?: TimerOptions): Timer;
  /** Calls `fn` every `intervalMs` simulated ms until cancelled. */
  every(intervalMs: number, fn: () => void, options?: TimerOptions): Timer;
  /**
   * Waits `delayMs` simulated ms unless `signal` aborts first.
   * @returns true when the time passed, false when aborted (never rejects).
   */
  sleep(delayMs: number, signal?: AbortSignal): Promise<boolean>;
}

/** Bounds of --time-scale: slower than real time down to 1/100, faster up to 1000x. */
export const timeScaleMin = 0.01;
export const timeScaleMax = 1000;

function sleepOn(clock: Clock, delayMs: number, signal?: AbortSignal): Promise<boolean> {
  if (signal?.aborted) return Promise.resolve(false);
  return new Promise((resolve) => {
    const onAbort = (): void => {
      timer.cancel();
      resolve(false);
    };
    const timer = clock.after(delayMs, () => {
      signal?.removeEventListener("abort", onAbort);
      resolve(true);
    });
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * The wall clock at a time scale. Simulated time is
 * `originMs + (wall now - originMs) * timeScale`, so processes given the same
 * origin and scale agree on simulated time; at scale 1 it is wall time.
 */
export class WallClock implements Clock {
  constructor(
    readonly timeScale = 1,
    readonly originMs = 0,
  ) {
    if (!(timeScale >= timeScaleMin && timeScale <= timeScaleMax)) {
      throw new RangeError(`time scale must be from ${timeScaleMin} to ${timeScaleMax}, got ${timeScale}`);
    }
  }

  nowMs(): number {
    const wall = Date.now();
    return this.timeScale === 1 ? wall : this.originMs + (wall - this.originMs) * this.timeScale;
  }

  after(delayMs: number, fn: () => void, options: TimerOptions = {}): Timer {
    const handle = setTimeout(fn, Math.max(0, delayMs) / this.timeScale);
    if (options.unref) handle.unref();
    return { cancel: () => clearTimeout(handle) };
  }

  every(intervalMs: number, fn: () => void, options: TimerOptions = {}): Timer {
    const handle = setInterval(fn, Math.max(1, intervalMs / this.timeScale));
    if (options.unref) handle.unref();
    return { cancel: () => clearInterval(handle) };
  }

  sleep(delayMs: number, signal?: AbortSignal): Promise<boolean> {
    return sleepOn(this, delayMs, signal);
  }
}

/** Real time, for the CLI and for measuring; processes build theirs from their settings. */
export const wallClock: Clock = new WallClock();

/** The wall clock's reading, for code that stamps real events (logs, benchmarks, the CLI). */
export function wallNowMs(): number {
  return Date.now();
}

interface Scheduled {
  dueMs: number;
  /** Tie-breaker: timers due together fire in the order they were set. */
  order: number;
  fn: () => void;
  intervalMs: number;
  cancelled: boolean;
}

/**
 * A clock that moves only when told, for tests: `advance` fires every timer
 * due in order, at its own time, instantly. Timers set by a firing timer run
 * in the same advance when they fall due within it.
 */
export class ManualClock implements Clock {
  readonly timeScale = 1;
  private now: number;
  private order = 0;
  private readonly timers = new Heap<Scheduled>((a, b) => a.dueMs < b.dueMs || (a.dueMs === b.dueMs && a.order < b.order));

  constructor(startMs = 1_700_000_000_000) {
    this.now = startMs;
  }

  nowMs(): number {
    return this.now;
  }

  /** Timers waiting to fire (cancelled ones may still count until they fall due). */
  get pending(): number {
    return this.timers.size;
  }

  after(delayMs: number, fn: () => void): Timer {
    return this.schedule(Math.max(0, delayMs), fn, 0);
  }

  every(intervalMs: number, fn: () => void): Timer {
    const step = Math.max(1, intervalMs);
    return this.schedule(step, fn, step);
  }

  sleep(delayMs: number, signal?: AbortSignal): Promise<boolean> {
    return sleepOn(this, delayMs, signal);
  }

  /** Moves time forward by `ms`, firing every timer that falls due, synchronously. */
  advance(ms: number): void {
    const end = this.now + Math.max(0, ms);
    for (let next = this.peekDue(); next !== null && next <= end; next = this.peekDue()) this.fireNext();
    this.now = end;
  }

  /**
   * Moves time forward by `ms` like advance, but lets promise continuations
   * run after each timer, so async code driven by timers (a sleep in a loop)
   * makes progress as it would in real time.
   */
  async advanceAsync(ms: number): Promise<void> {
    const end = this.now + Math.max(0, ms);
    for (;;) {
      await settle();
      const next = this.peekDue();
      if (next === null || next > end) break;
      this.fireNext();
    }
    this.now = end;
    await settle();
  }

  private peekDue(): number | null {
    while (this.timers.size > 0 && this.timers.peek()!.cancelled) this.timers.pop();
    return this.timers.peek()?.dueMs ?? null;
  }

  private fireNext(): void {
    const timer = this.timers.pop()!;
    this.now = Math.max(this.now, timer.dueMs);
    if (timer.intervalMs > 0) {
      timer.dueMs += timer.intervalMs;
      timer.order = this.order++;
      this.timers.push(timer);
    }
    timer.fn();
  }

  private schedule(delayMs: number, fn: () => void, intervalMs: number): Timer {
    const timer: Scheduled = { dueMs: this.now + delayMs, order: this.order++, fn, intervalMs, cancelled: false };
    this.timers.push(timer);
    return { cancel: () => void (timer.cancelled = true) };
  }
}

/** Lets every pending promise continuation (and I/O callback already queued) run. */
function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
