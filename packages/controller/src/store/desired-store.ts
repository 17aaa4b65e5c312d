// Desired state of one kind of object (VMs, volumes) as the API sees it,
// over a fenced store of its records: which objects live (deleted ones stay
// a while as tombstones, for retried deletes), their ids in order for
// paging, which objects each placement target (a host, a SAN node) holds and
// the totals it has been promised, counting creates whose write is still in
// flight so concurrent creates cannot overshoot a target.

import type { Entry, FencedStore } from "./fenced-store.js";
import { SortedKeys } from "./sorted-keys.js";

export interface DesiredKind<R, T extends { id: string }, A> {
  noun: string;
  objectOf(record: R): T;
  isDeleted(record: R): boolean;
  /** The host or SAN node the object is placed on ("" when none). */
  placementOf(object: T): string;
  emptyAllocation(): A;
  /** Adds (sign 1) or removes (sign -1) the object's resources to its target's totals. */
  account(allocation: A, object: T, sign: 1 | -1): void;
  /** Another object this one uses (a VM's boot volume), indexed for referencing(). */
  referenceOf?(object: T): string;
}

const noIds: ReadonlySet<string> = new Set();

export class DesiredStore<R, T extends { id: string }, A> {
  private readonly ids = new SortedKeys();
  private readonly byTarget = new Map<string, Set<string>>();
  private readonly byReference = new Map<string, Set<string>>();
  private readonly allocations = new Map<string, A>();
  /** Objects accepted whose create is not yet written. */
  private readonly pending = new Map<string, T>();
  private readonly targetListeners: ((target: string, id: string) => void)[] = [];
  private readonly allocationListeners: ((target: string) => void)[] = [];

  constructor(
    readonly records: FencedStore<R>,
    private readonly kind: DesiredKind<R, T, A>,
  ) {
    for (const [key, entry] of records.all()) this.changed(key, undefined, entry);
    records.onChange((key, before, after) => this.changed(key, before, after));
  }

  /** Told when an object on `target` appears, changes or goes (`id` says which). */
  onTargetChanged(listener: (target: string, id: string) => void): void {
    this.targetListeners.push(listener);
  }

  /** Told when what `target` has been promised changes (reservations included). */
  onAllocationChanged(listener: (target: string) => void): void {
    this.allocationListeners.push(listener);
  }

  get size(): number {
    return this.ids.size;
  }

  /** The live object, or undefined (also for a tombstone). */
  get(id: string): T | undefined {
    const entry = this.records.get(id);
    return entry && !this.kind.isDeleted(entry.value) ? this.kind.objectOf(entry.value) : undefined;
  }

  /** The stored record, live or tombstone, with its revision. */
  entry(id: string): Entry<R> | undefined {
    return this.records.get(id);
  }

  /** True while `id` is neither live nor being created (a tombstone is free). */
  isFree(id: string): boolean {
    return this.get(id) === undefined && !this.pending.has(id);
  }

  /** Up to `limit` live ids after `after`, in order. */
  idsAfter(after: string, limit: number): string[] {
    return this.ids.after(after, limit);
  }

  *all(): IterableIterator<T> {
    for (const [, entry] of this.records.all()) if (!this.kind.isDeleted(entry.value)) yield this.kind.objectOf(entry.value);
  }

  /** Ids of the live objects placed on `target`. */
  onTarget(target: string): ReadonlySet<string> {
    return this.byTarget.get(target) ?? noIds;
  }

  /** Ids of the live objects that use `reference` (the VMs booting from a volume). */
  referencing(reference: string): ReadonlySet<string> {
    return this.byReference.get(reference) ?? noIds;
  }

  /** What `target` has been promised, creates in flight included. */
  allocation(target: string): A {
    return this.allocations.get(target) ?? this.kind.emptyAllocation();
  }

  /**
   * Counts `object` against its target until the returned release is called
   * (once its create is written, when the stored record takes over, or
   * failed); marks the id taken meanwhile.
   */
  reserve(object: T): () => void {
    this.pending.set(object.id, object);
    this.account(object, 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.pending.delete(object.id);
      this.account(object, -1);
    };
  }

  private changed(id: string, before: Entry<R> | undefined, after: Entry<R> | undefined): void {
    const was = before && !this.kind.isDeleted(before.value) ? this.kind.objectOf(before.value) : undefined;
    const now = after && !this.kind.isDeleted(after.value) ? this.kind.objectOf(after.value) : undefined;
    if (was) {
      this.account(was, -1);
      this.index(was, false);
    }
    if (now) {
      this.account(now, 1);
      this.index(now, true);
    }
    if (now && !was) this.ids.add(id);
    if (was && !now) this.ids.delete(id);
    const targets = new Set([was ? this.kind.placementOf(was) : "", now ? this.kind.placementOf(now) : ""]);
    for (const target of targets) if (target) for (const listener of this.targetListeners) listener(target, id);
  }

  private index(object: T, present: boolean): void {
    indexIn(this.byTarget, this.kind.placementOf(object), object.id, present);
    if (this.kind.referenceOf) indexIn(this.byReference, this.kind.referenceOf(object), object.id, present);
  }

  private account(object: T, sign: 1 | -1): void {
    const target = this.kind.placementOf(object);
    if (!target) return;
    let allocation = this.allocations.get(target);
    if (!allocation) this.allocations.set(target, (allocation = this.kind.emptyAllocation()));
    this.kind.account(allocation, object, sign);
    for (const listener of this.allocationListeners) listener(target);
  }
}

function indexIn(index: Map<string, Set<string>>, key: string, id: string, present: boolean): void {
  if (!key) return;
  let ids = index.get(key);
  if (!ids) index.set(key, (ids = new Set()));
  if (present) ids.add(id);
  else {
    ids.delete(id);
    if (ids.size === 0) index.delete(key);
  }
}
