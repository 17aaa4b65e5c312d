// One kind of stored record (VMs, volumes, hosts, ...) kept current from its
// KV bucket, written only by the active controller, and guarded against a
// deposed one. Every controller follows the bucket, so a standby is ready
// the moment it takes over. A record written by an older epoch after the
// takeover barrier is a deposed controller's late write: while active, this
// store never applies one and writes back what it replaced. It owns the
// records and their revisions; what they mean is its users' business.

import { barrierKey, type Bucket, type Change } from "@simdc/bus";
import { type Logger } from "@simdc/common";
import type { Lease } from "../lease/lease.js";

export interface Entry<T> {
  value: T;
  revision: number;
  epoch: number;
}

/**
 * What to do with a deposed controller's late write: undo it from the key's
 * history (and be told), or apply it and let the owner rewrite (documents,
 * which hosts judge by epoch themselves).
 */
export type LateWrites = { undo: (key: string, fromEpoch: number) => void } | "accept";

/** Told of every change applied, with the entry before and after (undefined: absent). */
export type ChangeListener<T> = (key: string, before: Entry<T> | undefined, after: Entry<T> | undefined) => void;

export class FencedStore<T> {
  private readonly entries = new Map<string, Entry<T>>();
  private readonly listeners: ChangeListener<T>[] = [];
  /** The highest revision applied from the bucket. */
  private applied = 0;
  /** While active: the epoch, and the bucket's last revision when the lease was taken. */
  private fence: { epoch: number; barrier: number } | null = null;
  private revertsInFlight = new Set<string>();
  private revertCount = 0;
  private readonly catchUpWaiters: { revision: number; resolve: () => void }[] = [];

  private constructor(
    readonly bucket: Bucket<T>,
    readonly noun: string,
    private readonly lease: Lease,
    private readonly logger: Logger,
    private readonly lateWrites: LateWrites,
  ) {}

  /** Follows the bucket; resolves once every stored record is loaded. */
  static async open<T>(bucket: Bucket<T>, noun: string, lease: Lease, logger: Logger, lateWrites: LateWrites): Promise<FencedStore<T>> {
    const store = new FencedStore(bucket, noun, lease, logger, lateWrites);
    await bucket.follow({
      onChange: (change) => store.receive(change),
      onCorrupt: (key, err) => logger.error({ key, err }, `skipping a stored ${noun} that does not decode`),
      // This controller's own writes come back: they are applied already, so they are not decoded again.
      isKnown: (key, revision) => (store.entries.get(key)?.revision ?? -1) >= revision,
      onKnown: (revision) => store.advance(revision),
    });
    return store;
  }

  get size(): number {
    return this.entries.size;
  }

  get(key: string): Entry<T> | undefined {
    return this.entries.get(key);
  }

  all(): IterableIterator<[string, Entry<T>]> {
    return this.entries.entries();
  }

  /** Deposed controllers' writes this store has undone. */
  get reverted(): number {
    return this.revertCount;
  }

  onChange(listener: ChangeListener<T>): void {
    this.listeners.push(listener);
  }

  /**
   * Creates a key that holds nothing (or, with `revision`, replaces what it
   * holds at that revision). Only while active.
   * @returns the new revision.
   * @throws SimdcError ALREADY_EXISTS, CONFLICT, UNAVAILABLE (also when not active).
   */
  async write(key: string, value: T, revision?: number): Promise<number> {
    this.lease.requireActive();
    const written = revision === undefined ? await this.bucket.create(key, value) : await this.bucket.update(key, value, revision);
    this.apply(key, { value, revision: written, epoch: this.lease.epoch }, written);
    return written;
  }

  /** Writes whatever the key holds. Only while active. @returns the new revision. */
  async put(key: string, value: T): Promise<number> {
    this.lease.requireActive();
    const written = await this.bucket.put(key, value);
    this.apply(key, { value, revision: written, epoch: this.lease.epoch }, written);
    return written;
  }

  /** Removes a key if it is still at `revision`. Only while active. */
  async remove(key: string, revision: number): Promise<void> {
    this.lease.requireActive();
    await this.bucket.delete(key, revision);
    this.apply(key, undefined, revision + 0.5);
  }

  /**
   * Becomes the writer at `epoch`: waits until every write made before the
   * lease was taken is applied here, then undoes the records a deposed
   * controller wrote since (found by their older epoch above the barrier).
   */
  async activate(epoch: number): Promise<void> {
    // The fence goes up before the mark is written, so nothing written after
    // the mark can slip in unjudged; the mark's own revision is the barrier.
    this.fence = { epoch, barrier: Number.MAX_SAFE_INTEGER };
    const barrier = await this.bucket.writeBarrier();
    this.fence = { epoch, barrier };
    await this.caughtUp(barrier);
    if (this.lateWrites === "accept") return;
    const late = [...this.entries].filter(([, e]) => this.isLate(e)).map(([key]) => key);
    for (const key of late) await this.revert(key, this.entries.get(key)?.epoch ?? 0);
  }

  /** True when `entry` was written by a deposed controller after this one took the lease. */
  isLate(entry: { revision: number; epoch: number }): boolean {
    const fence = this.fence;
    return fence !== null && entry.revision > fence.barrier && entry.epoch < fence.epoch;
  }

  /** Stops writing: changes are applied as they come, as a standby does. */
  deactivate(): void {
    this.fence = null;
  }

  private caughtUp(revision: number): Promise<void> {
    if (this.applied >= revision) return Promise.resolve();
    return new Promise((resolve) => this.catchUpWaiters.push({ revision, resolve }));
  }

  /** Notes that the bucket's changes up to `revision` have been seen. */
  private advance(revision: number): void {
    if (revision > this.applied) this.applied = revision;
    for (let i = this.catchUpWaiters.length - 1; i >= 0; i--) {
      const waiter = this.catchUpWaiters[i]!;
      if (this.applied >= waiter.revision) {
        this.catchUpWaiters.splice(i, 1);
        waiter.resolve();
      }
    }
  }

  private receive(change: Change<T>): void {
    this.advance(change.revision);
    if (change.key === barrierKey) return;
    const current = this.entries.get(change.key);
    if (current && change.revision <= current.revision) return;
    if (this.lateWrites !== "accept" && change.value !== null && this.isLate(change)) {
      // A deposed controller wrote after this one took the lease: its client
      // was never answered (confirm failed), so the write is undone.
      void this.revert(change.key, change.epoch);
      return;
    }
    this.apply(change.key, change.value === null ? undefined : { value: change.value, revision: change.revision, epoch: change.epoch }, change.revision);
  }

  private apply(key: string, after: Entry<T> | undefined, revision: number): void {
    const before = this.entries.get(key);
    if (before && revision <= before.revision) return;
    if (!before && !after) return;
    if (after) this.entries.set(key, after);
    else this.entries.delete(key);
    for (const listener of this.listeners) listener(key, before, after);
  }

  /** Writes back the newest legitimate record of `key`: before the barrier, or by this epoch. */
  private async revert(key: string, fromEpoch: number): Promise<void> {
    const fence = this.fence;
    if (!fence || this.revertsInFlight.has(key)) return;
    this.revertsInFlight.add(key);
    try {
      const history = await this.bucket.history(key);
      const latest = history[history.length - 1];
      if (!latest || latest.epoch >= fence.epoch) return;
      let legit: Change<T> | undefined;
      for (let i = history.length - 1; i >= 0; i--) {
        const h = history[i]!;
        if (h.revision <= fence.barrier || h.epoch >= fence.epoch) {
          legit = h;
          break;
        }
      }
      if (!legit && history.length >= this.bucket.historyKept) {
        this.logger.error({ key, kept: history.length }, `cannot undo a deposed controller's write to ${this.noun} ${key}: its history is gone; keeping it`);
        return;
      }
      // With the whole history at hand and no legitimate revision in it, the key held nothing before.
      const restored = legit?.value ?? null;
      if (restored === null) {
        await this.bucket.delete(key, latest.revision);
        this.apply(key, undefined, latest.revision + 0.5);
      } else {
        const revision = await this.bucket.update(key, restored, latest.revision);
        this.apply(key, { value: restored, revision, epoch: fence.epoch }, revision);
      }
      this.revertCount += 1;
      this.logger.warn({ key, fromEpoch, epoch: fence.epoch }, `undid a deposed controller's write to ${this.noun} ${key}`);
      if (this.lateWrites !== "accept") this.lateWrites.undo(key, fromEpoch);
    } catch (err) {
      this.logger.error({ key, err: String(err) }, `could not undo a deposed controller's write to ${this.noun} ${key}`);
    } finally {
      this.revertsInFlight.delete(key);
    }
  }
}
