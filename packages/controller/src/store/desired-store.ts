// Desired state of one kind of object (VMs, volumes), cached in memory and
// persisted in a JetStream KV bucket before any change is acknowledged. It
// also keeps the totals each placement target (a host, a SAN node) has been
// promised, counting objects whose creation is still being persisted, so
// concurrent creates cannot overshoot a target.

import type { Bucket, Bus, MessageType } from "@simdc/bus";
import { alreadyExists, notFound, type Logger } from "@simdc/common";

export interface StoreKind<T, A> {
  /** KV bucket name. */
  bucket: string;
  noun: string;
  type: MessageType<T>;
  /** The host or SAN node the object is placed on ("" when none). */
  placementOf(object: T): string;
  emptyAllocation(): A;
  /** Adds (sign 1) or removes (sign -1) the object's resources to its target's totals. */
  account(allocation: A, object: T, sign: 1 | -1): void;
}

const noIds: ReadonlySet<string> = new Set();

interface Entry<T> {
  object: T;
  revision: number;
}

export class DesiredStore<T extends { id: string }, A> {
  private readonly objects = new Map<string, Entry<T>>();
  /** Accepted objects whose KV write has not been acknowledged yet. */
  private readonly pending = new Map<string, T>();
  private readonly allocations = new Map<string, A>();
  private readonly byTarget = new Map<string, Set<string>>();

  private constructor(
    private readonly kind: StoreKind<T, A>,
    private readonly bucket: Bucket<T>,
  ) {}

  /** Opens the bucket and loads every object into memory. */
  static async open<T extends { id: string }, A>(
    bus: Bus,
    kind: StoreKind<T, A>,
    options: { replicas: number; logger: Logger },
  ): Promise<DesiredStore<T, A>> {
    const bucket = await bus.bucket(kind.bucket, kind.type, { replicas: options.replicas });
    const store = new DesiredStore(kind, bucket);
    const all = await bucket.loadAll((key, err) =>
      options.logger.error({ key, err }, `skipping a ${kind.noun} record that does not decode`),
    );
    for (const { value, revision } of all.values()) {
      store.store(value, revision);
      store.account(value, 1);
    }
    return store;
  }

  get size(): number {
    return this.objects.size;
  }

  get(id: string): T | undefined {
    return this.objects.get(id)?.object;
  }

  /** @throws SimdcError NOT_FOUND. */
  require(id: string): Entry<T> {
    const entry = this.objects.get(id);
    if (!entry) throw notFound(`${this.kind.noun} ${id} not found`);
    return entry;
  }

  *all(): IterableIterator<T> {
    for (const entry of this.objects.values()) yield entry.object;
  }

  ids(): IterableIterator<string> {
    return this.objects.keys();
  }

  /** Ids of the stored objects placed on `target`. */
  onTarget(target: string): ReadonlySet<string> {
    return this.byTarget.get(target) ?? noIds;
  }

  /** What `target` has been promised, pending creates included. */
  allocation(target: string): A {
    return this.allocations.get(target) ?? this.kind.emptyAllocation();
  }

  /** True while `id` is neither stored nor being created. */
  isFree(id: string): boolean {
    return !this.objects.has(id) && !this.pending.has(id);
  }

  /**
   * Persists a new object. Its resources count against its target from the
   * moment this is called, before the write is acknowledged.
   * @throws SimdcError ALREADY_EXISTS, UNAVAILABLE when KV does not answer.
   */
  async create(object: T): Promise<void> {
    if (!this.isFree(object.id)) throw alreadyExists(`${this.kind.noun} ${object.id} exists already`);
    this.pending.set(object.id, object);
    this.account(object, 1);
    try {
      const revision = await this.bucket.create(object.id, object);
      this.store(object, revision);
    } catch (err) {
      this.account(object, -1);
      throw err;
    } finally {
      this.pending.delete(object.id);
    }
  }

  /**
   * Persists a changed object if nobody changed it since `revision`.
   * @throws SimdcError CONFLICT, UNAVAILABLE.
   */
  async update(object: T, revision: number): Promise<void> {
    const newRevision = await this.bucket.update(object.id, object, revision);
    const previous = this.objects.get(object.id);
    if (previous) {
      this.account(previous.object, -1);
      this.index(previous.object, false);
    }
    this.store(object, newRevision);
    this.account(object, 1);
  }

  /** @throws SimdcError NOT_FOUND, UNAVAILABLE. */
  async delete(id: string): Promise<T> {
    const entry = this.require(id);
    await this.bucket.delete(id);
    if (this.objects.get(id) === entry) {
      this.objects.delete(id);
      this.index(entry.object, false);
      this.account(entry.object, -1);
    }
    return entry.object;
  }

  private store(object: T, revision: number): void {
    this.objects.set(object.id, { object, revision });
    this.index(object, true);
  }

  private index(object: T, present: boolean): void {
    const target = this.kind.placementOf(object);
    if (!target) return;
    let ids = this.byTarget.get(target);
    if (!ids) this.byTarget.set(target, (ids = new Set()));
    if (present) ids.add(object.id);
    else ids.delete(object.id);
  }

  private account(object: T, sign: 1 | -1): void {
    const target = this.kind.placementOf(object);
    if (!target) return;
    let allocation = this.allocations.get(target);
    if (!allocation) this.allocations.set(target, (allocation = this.kind.emptyAllocation()));
    this.kind.account(allocation, object, sign);
  }
}
