// The controller lease: which of several controllers is active. The lease is
// one KV key; the active controller renews it with a compare-and-set, a
// standby that sees it unchanged for a whole TTL takes it over with a
// compare-and-set that bumps the epoch, and a controller whose renewal fails
// knows it was deposed. Every record a controller writes carries its epoch,
// and an answer to a client goes out only after a renewal that began after
// the change was written (confirm), so a controller that was deposed while
// paused can never acknowledge a change its successor will undo; nor does it
// answer anything, reads included, once its last renewal began a whole TTL
// ago (requireFresh), since a standby may have taken over meanwhile.

import type { Bucket, Bus } from "@simdc/bus";
import { SimdcError, unavailable, type Clock, type Logger, type Timer } from "@simdc/common";
import { simdc } from "@simdc/proto";

import v1 = simdc.v1;

export const leaseKey = "lease";
export const datacenterKey = "datacenter";
export const controllerBucket = "controller";

export type LeaseRole = "standby" | "active";

export interface LeaseOptions {
  controllerId: string;
  bootId: string;
  /** A lease unchanged for this long (simulated ms) is taken over. */
  ttlMs: number;
  clock: Clock;
  logger: Logger;
}

interface Waiter {
  resolve(): void;
  reject(err: Error): void;
}

export class Lease {
  private role: LeaseRole = "standby";
  /** The lease as last seen in KV, and its revision (0: absent). */
  private seen: v1.ControllerLease | null = null;
  private seenRevision = 0;
  /** Simulated time at which the lease last changed, as seen here. */
  private seenChangedAtMs: number;
  private myEpoch = 0;
  /**
   * Local time at which the newest successful write of the lease by this
   * controller (its takeover or a renewal) began. A standby takes over only
   * after it saw the lease unchanged for a whole TTL, so until this plus the
   * TTL no other controller can be active; after it (a pause, a stalled
   * renewal) this one may have been deposed without knowing it yet.
   */
  private heldFromMs = -Infinity;
  private renewing = false;
  private renewTimer: Timer | null = null;
  private checkTimer: Timer | null = null;
  /** Confirmations waiting for the next renewal to start. */
  private waiting: Waiter[] = [];
  private stopped = false;
  private takingOver = false;
  private readonly activeListeners: ((epoch: number) => Promise<void>)[] = [];
  private readonly deposedListeners: ((reason: string) => void)[] = [];

  private constructor(
    private readonly bucket: Bucket<v1.ControllerLease>,
    private readonly options: LeaseOptions,
  ) {
    this.seenChangedAtMs = options.clock.nowMs();
  }

  /** Opens the lease key and starts following it; starts as a standby. */
  static async open(bus: Bus, replicas: number, options: LeaseOptions): Promise<Lease> {
    // Made (or found) with the usual patience: creating a replicated stream
    // in a NATS cluster takes longer than a lease's half TTL.
    await bus.bucket(controllerBucket, v1.ControllerLease, { replicas });
    // A renewal that hangs is a renewal that failed: the store's answer must come within the lease's own time.
    const bucket = await bus.bucket(controllerBucket, v1.ControllerLease, { replicas, bindOnly: true, timeoutMs: Math.max(100, Math.floor(options.ttlMs / 2)) });
    const lease = new Lease(bucket, options);
    await bucket.follow({
      key: leaseKey,
      onChange: (change) => lease.observe(change.value, change.revision),
      onCorrupt: (_key, err) => options.logger.error({ err }, "the stored lease does not decode; treating it as absent"),
    });
    return lease;
  }

  get isActive(): boolean {
    return this.role === "active";
  }

  /** The epoch this controller writes with while active (0 before it ever was). */
  get epoch(): number {
    return this.myEpoch;
  }

  /** The lease as last seen. */
  get current(): v1.ControllerLease | null {
    return this.seen;
  }

  /** Called (and awaited) when this controller becomes active, with its epoch. */
  onActive(listener: (epoch: number) => Promise<void>): void {
    this.activeListeners.push(listener);
  }

  onDeposed(listener: (reason: string) => void): void {
    this.deposedListeners.push(listener);
  }

  /** Starts competing for the lease. */
  start(): void {
    const { ttlMs, clock } = this.options;
    this.checkTimer = clock.every(Math.max(10, Math.floor(ttlMs / 10)), () => this.check());
    this.check();
  }

  stop(): void {
    this.stopped = true;
    this.checkTimer?.cancel();
    this.renewTimer?.cancel();
    this.failWaiters(unavailable("the controller is stopping"));
  }

  /**
   * Resolves once a renewal that began after this call has succeeded, so
   * everything written before the call was written by the lease holder.
   * @throws SimdcError UNAVAILABLE when the lease was lost (or this
   * controller is not active).
   */
  confirm(): Promise<void> {
    if (this.role !== "active") return Promise.reject(notActive(this.seen));
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      if (!this.renewing) void this.renew();
    });
  }

  /** @throws SimdcError UNAVAILABLE naming the active controller unless this one is active. */
  requireActive(): void {
    if (this.role !== "active") throw notActive(this.seen);
  }

  /**
   * As requireActive, and also refuses once this controller's last renewal
   * began a whole TTL ago: another controller may have taken over meanwhile
   * (this one was paused) and the next renewal will tell. For answering
   * clients, reads included, never from state that may be stale.
   * @throws SimdcError UNAVAILABLE.
   */
  requireFresh(): void {
    this.requireActive();
    const { clock, ttlMs } = this.options;
    if (clock.nowMs() >= this.heldFromMs + ttlMs) {
      throw unavailable(`this controller has not renewed its lease for ${ttlMs} ms and may have been replaced; retry`);
    }
  }

  private observe(lease: v1.ControllerLease | null, revision: number): void {
    const changed = revision !== this.seenRevision;
    this.seen = lease;
    this.seenRevision = lease ? revision : 0;
    if (changed) this.seenChangedAtMs = this.options.clock.nowMs();
    if (this.role === "active" && lease && (lease.epoch !== this.myEpoch || lease.holderBootId !== this.options.bootId)) {
      this.depose(`controller ${lease.holderId} took the lease at epoch ${lease.epoch}`);
    }
  }

  private check(): void {
    if (this.stopped || this.role === "active" || this.takingOver) return;
    const { clock, ttlMs, controllerId } = this.options;
    const lease = this.seen;
    // A restarted controller takes back its own lease at once: the process
    // that held it is gone, and the new epoch fences it if it is not.
    const mine = lease?.holderId === controllerId && lease.holderBootId !== this.options.bootId;
    const stale = clock.nowMs() - this.seenChangedAtMs >= ttlMs;
    if (lease && !mine && !stale) return;
    void this.takeOver(lease, this.seenRevision);
  }

  private async takeOver(previous: v1.ControllerLease | null, revision: number): Promise<void> {
    this.takingOver = true;
    const { controllerId, bootId, ttlMs, clock, logger } = this.options;
    const epoch = (previous?.epoch ?? 0) + 1;
    const startedMs = clock.nowMs();
    const next = v1.ControllerLease.create({ holderId: controllerId, holderBootId: bootId, epoch, renewedAtMs: startedMs, ttlMs });
    try {
      const written = revision > 0 ? await this.bucket.update(leaseKey, next, revision) : await this.bucket.create(leaseKey, next);
      this.observe(next, written);
      this.myEpoch = epoch;
      this.heldFromMs = startedMs;
      this.role = "active";
      logger.warn({ epoch, previousHolder: previous?.holderId ?? null }, "took the controller lease");
      for (const listener of this.activeListeners) await listener(epoch);
      this.scheduleRenew();
    } catch (err) {
      if (this.role === "active") {
        // Taking over failed halfway (becoming active threw): give the lease up.
        this.depose(`taking over failed: ${(err as Error).message}`);
      } else if (!(err instanceof SimdcError && (err.code === "CONFLICT" || err.code === "ALREADY_EXISTS"))) {
        logger.warn({ err: String(err) }, "could not take the controller lease; will try again");
      }
    } finally {
      this.takingOver = false;
    }
  }

  private scheduleRenew(): void {
    this.renewTimer?.cancel();
    if (this.stopped || this.role !== "active") return;
    this.renewTimer = this.options.clock.after(Math.max(5, Math.floor(this.options.ttlMs / 5)), () => void this.renew());
  }

  private async renew(): Promise<void> {
    if (this.renewing || this.stopped || this.role !== "active") return;
    this.renewing = true;
    const batch = this.waiting;
    this.waiting = [];
    const { controllerId, bootId, ttlMs, clock } = this.options;
    const startedMs = clock.nowMs();
    const next = v1.ControllerLease.create({ holderId: controllerId, holderBootId: bootId, epoch: this.myEpoch, renewedAtMs: startedMs, ttlMs });
    try {
      const revision = await this.bucket.update(leaseKey, next, this.seenRevision);
      if (this.role === "active") {
        this.observe(next, revision);
        this.heldFromMs = startedMs;
      }
      for (const waiter of batch) waiter.resolve();
    } catch (err) {
      const conflict = err instanceof SimdcError && err.code === "CONFLICT";
      const lapsed = clock.nowMs() >= this.heldFromMs + ttlMs;
      if (conflict && (await this.stillMine())) {
        // An earlier renewal that timed out landed after all: the lease is ours at a newer revision. Renew again.
        this.waiting = [...batch, ...this.waiting];
      } else if (!conflict && !lapsed) {
        // A slow store, not a lost lease: the waiters wait for the next renewal, which starts at once.
        this.waiting = [...batch, ...this.waiting];
        this.options.logger.warn({ err: String(err) }, "a lease renewal failed; trying again");
      } else {
        const reason = conflict ? "another controller took the lease" : `renewal failed for ${ttlMs} ms: ${(err as Error).message}`;
        for (const waiter of batch) waiter.reject(unavailable(`this controller could not confirm its lease (${reason}); the change may not have been made, retry`));
        if (conflict) this.depose(reason);
      }
    } finally {
      this.renewing = false;
    }
    if (this.role === "active") {
      if (this.waiting.length > 0) void this.renew();
      else this.scheduleRenew();
    }
  }

  /** Reads the lease: true (and taken in) when it is still this controller's, at its epoch. */
  private async stillMine(): Promise<boolean> {
    try {
      const stored = await this.bucket.get(leaseKey);
      if (!stored || stored.value.holderBootId !== this.options.bootId || stored.value.epoch !== this.myEpoch) return false;
      this.observe(stored.value, stored.revision);
      return true;
    } catch {
      // Unreadable now: judged as lost, and the next check competes for it again.
      return false;
    }
  }

  private depose(reason: string): void {
    if (this.role !== "active") return;
    this.role = "standby";
    this.renewTimer?.cancel();
    this.options.logger.warn({ epoch: this.myEpoch, reason }, "lost the controller lease");
    this.failWaiters(unavailable(`this controller was deposed (${reason}); retry`));
    for (const listener of this.deposedListeners) listener(reason);
  }

  private failWaiters(err: Error): void {
    const batch = this.waiting;
    this.waiting = [];
    for (const waiter of batch) waiter.reject(err);
  }
}

function notActive(lease: v1.ControllerLease | null): SimdcError {
  const holder = lease ? `${lease.holderId} (epoch ${lease.epoch})` : "none yet";
  return unavailable(`this controller is a standby; the active one is ${holder}`);
}
