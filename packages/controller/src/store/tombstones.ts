// A deleted network, security group, router or external endpoint stays in
// its bucket as a tombstone: the object gone, the ids of the requests that
// made and deleted it kept. A delete whose answer was lost (the controller
// crashed between its write and its answer) is then answered as it was when
// the client retries it, not NOT_FOUND; a create takes the name back by
// writing over the tombstone. Readers already treat a record without its
// object as absent.

import type { Logger } from "@simdc/common";
import type { Entry } from "./fenced-store.js";
import { withRequestId } from "./kinds.js";

/** What tombstones need of a store (a FencedStore is one). */
export interface RecordStore<R> {
  get(key: string): Entry<R> | undefined;
  all(): Iterable<[string, Entry<R>]>;
  write(key: string, value: R, revision?: number): Promise<number>;
  remove(key: string, revision: number): Promise<void>;
}

interface WithRequests {
  requestIds: string[];
  deletedAtMs: number;
}

export class Tombstones<R extends WithRequests> {
  constructor(
    private readonly store: RecordStore<R>,
    /** Whether a record holds its object (is not a tombstone). */
    private readonly isLive: (record: R) => boolean,
    /** A record without its object, remembering these requests, deleted at this simulated ms. */
    private readonly tombstone: (requestIds: string[], deletedAtMs: number) => R,
  ) {}

  /** The revision a create of `id` writes at: its tombstone's, or none for a key never used. */
  revisionFor(id: string): number | undefined {
    const entry = this.store.get(id);
    return entry && !this.isLive(entry.value) ? entry.revision : undefined;
  }

  /** Deletes the record held at `revision`, leaving the tombstone of `requestId` (none: no replay). */
  async bury(id: string, revision: number, record: R, requestId: string, nowMs: number): Promise<void> {
    await this.store.write(id, this.tombstone(withRequestId(record.requestIds, requestId), nowMs), revision);
  }

  /** Removes the tombstones older than `cutoffMs`: no retry can ask about them any more. */
  purge(cutoffMs: number, logger: Logger): Promise<void> {
    return purgeTombstones(this.store, (r) => !this.isLive(r), cutoffMs, logger);
  }

  /** Whether `requestId` deleted something (so its retry gets the same answer). */
  deletedBy(requestId: string): boolean {
    if (!requestId) return false;
    for (const [, entry] of this.store.all()) if (!this.isLive(entry.value) && entry.value.requestIds.includes(requestId)) return true;
    return false;
  }
}

/**
 * Removes a store's tombstones deleted before `cutoffMs` (VMs' and volumes'
 * too, which mark theirs with a deleted flag).
 */
export async function purgeTombstones<R extends { deletedAtMs: number }>(
  store: Pick<RecordStore<R>, "all" | "remove">,
  isTombstone: (record: R) => boolean,
  cutoffMs: number,
  logger: Logger,
): Promise<void> {
  const old = [...store.all()].filter(([, e]) => isTombstone(e.value) && e.value.deletedAtMs < cutoffMs);
  for (const [id, entry] of old) {
    // One that changed meanwhile (a new object of the name) is not a tombstone any more: the removal fails, and that is right.
    await store.remove(id, entry.revision).catch((err: unknown) => logger.debug({ id, err: String(err) }, "tombstone not purged"));
  }
}
