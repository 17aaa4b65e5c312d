// Follows one bucket the controller writes and the hosts obey (the hosts'
// documents, the security groups'): until the controller has created it,
// tries again; when the watch ends, follows again; and when the bucket was
// deleted and made anew (a controller that lost its store), which ends no
// watch, notices by the bucket's creation time and follows the new one. The
// hosts run what they last had meanwhile.

import type { Bucket, Bus, MessageType } from "@simdc/bus";
import { wallClock, type Clock, type Logger, type Timer } from "@simdc/common";

/** How often to try again to follow a bucket the controller has not created yet, in simulated ms. */
export const bucketRetryMs = 1_000;
/** How often to check that the bucket followed is the one that exists, in real ms. */
export const bucketCheckMs = 5_000;

export interface BucketFollowing<T> {
  bus: Bus;
  clock: Clock;
  logger: Logger;
  bucket: string;
  type: MessageType<T>;
  /** What the bucket holds, for the logs ("the host documents"). */
  what: string;
  /** Only these keys (a NATS subject filter); all when absent. */
  key?: string;
  /** Each (re)start of the watch, before its first change: what was gathered from an earlier one is stale. */
  onStart(): void;
  onChange(key: string, value: T | null): void;
  onCorrupt(key: string, err: unknown): void;
}

export class BucketFollower<T> {
  private following: { stop(): void } | null = null;
  private madeAt = "";
  private retryTimer: Timer | null = null;
  private checkTimer: Timer | null = null;
  private stopped = false;

  constructor(private readonly options: BucketFollowing<T>) {}

  /** Starts following; resolves once the first attempt has loaded the bucket's keys or failed (it goes on trying). */
  start(): Promise<void> {
    return this.follow();
  }

  stop(): void {
    this.stopped = true;
    this.retryTimer?.cancel();
    this.checkTimer?.cancel();
    this.following?.stop();
  }

  private async follow(): Promise<void> {
    const { bus, clock, logger, what } = this.options;
    if (this.stopped) return;
    try {
      const bucket: Bucket<T> = await bus.bucket(this.options.bucket, this.options.type, { fenced: { epochOf: () => 0 }, bindOnly: true });
      const madeAt = await bucket.madeAt();
      this.options.onStart();
      const following = await bucket.follow({
        ...(this.options.key ? { key: this.options.key } : {}),
        onChange: (change) => this.options.onChange(change.key, change.value),
        onCorrupt: (key, err) => this.options.onCorrupt(key, err),
        onEnded: (err) => {
          if (this.stopped) return;
          logger.warn({ err: err === undefined ? null : String(err) }, `${what}' watch ended; following them again`);
          this.following = null;
          this.retryTimer = clock.after(bucketRetryMs, () => void this.follow());
        },
      });
      if (this.stopped) return following.stop();
      this.following = following;
      this.madeAt = madeAt;
      this.checkTimer?.cancel();
      // Real time, not simulated: this watches NATS, not the simulation.
      this.checkTimer = wallClock.every(bucketCheckMs, () => void this.check(bucket), { unref: true });
    } catch (err) {
      if (this.stopped) return;
      logger.debug({ err: String(err) }, `${what} are not available yet; trying again`);
      this.retryTimer = clock.after(bucketRetryMs, () => void this.follow());
    }
  }

  private async check(bucket: Bucket<T>): Promise<void> {
    let madeAt: string;
    try {
      madeAt = await bucket.madeAt();
    } catch {
      // Gone for now (or NATS away): looked at again next time.
      return;
    }
    if (this.stopped || madeAt === this.madeAt || !this.following) return;
    this.options.logger.warn({ was: this.madeAt, now: madeAt }, `${this.options.what}' bucket was made anew; following it`);
    this.following.stop();
    this.following = null;
    this.checkTimer?.cancel();
    await this.follow();
  }
}
