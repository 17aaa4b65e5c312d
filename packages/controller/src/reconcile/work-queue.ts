// A deduplicating work queue in the style of controller-runtime: an event only
// enqueues a key; a key is never processed twice at once (one re-added while
// running runs again afterwards); a failure requeues it with capped
// exponential backoff, reset by the next success.

import type { Clock, Logger, Timer } from "@simdc/common";

export type WorkResult = "done" | "retry";

export interface WorkQueueOptions {
  concurrency: number;
  backoffBaseMs: number;
  backoffMaxMs: number;
}

export class WorkQueue {
  private readonly queued = new Set<string>();
  private readonly running = new Set<string>();
  /** Keys re-added while running, to run again when they finish. */
  private readonly dirty = new Set<string>();
  private readonly failures = new Map<string, number>();
  private readonly timers = new Map<string, Timer>();
  private stopped = false;

  constructor(
    private readonly work: (key: string) => Promise<WorkResult>,
    private readonly options: WorkQueueOptions,
    private readonly clock: Clock,
    private readonly logger: Logger,
  ) {}

  get depth(): number {
    return this.queued.size;
  }

  add(key: string): void {
    if (this.stopped) return;
    this.timers.get(key)?.cancel();
    this.timers.delete(key);
    if (this.running.has(key)) {
      this.dirty.add(key);
      return;
    }
    this.queued.add(key);
    this.pump();
  }

  /** Adds the key after a delay (one pending timer per key; the earliest wins). */
  addAfter(key: string, delayMs: number): void {
    if (this.stopped || this.timers.has(key)) return;
    const timer = this.clock.after(
      delayMs,
      () => {
        this.timers.delete(key);
        this.add(key);
      },
      { unref: true },
    );
    this.timers.set(key, timer);
  }

  /** Starts taking keys again after stop(). */
  restart(): void {
    this.stopped = false;
  }

  stop(): void {
    this.stopped = true;
    for (const timer of this.timers.values()) timer.cancel();
    this.timers.clear();
    this.queued.clear();
  }

  private pump(): void {
    while (this.running.size < this.options.concurrency && this.queued.size > 0) {
      const key = this.queued.values().next().value as string;
      this.queued.delete(key);
      this.running.add(key);
      void this.run(key);
    }
  }

  private async run(key: string): Promise<void> {
    let result: WorkResult;
    try {
      result = await this.work(key);
    } catch (err) {
      this.logger.warn({ key, err }, "reconcile failed");
      result = "retry";
    }
    this.running.delete(key);
    if (result === "retry") {
      const failures = (this.failures.get(key) ?? 0) + 1;
      this.failures.set(key, failures);
      const delayMs = Math.min(this.options.backoffMaxMs, this.options.backoffBaseMs * 2 ** (failures - 1));
      this.addAfter(key, delayMs);
    } else {
      this.failures.delete(key);
    }
    if (this.dirty.delete(key)) this.add(key);
    this.pump();
  }
}
