// A deleted network, security group, router or external endpoint stays in
// its bucket as a tombstone: the object gone, the ids of the requests that
// made and deleted it kept. A delete whose answer was lost (the controller
// crashed between its write and its answer) is then answered as it was when
// the client retries it, not NOT_FOUND; a create takes the name back by
// writing over the tombstone. Readers already treat a record without its
// object as absent.

import type { FencedStore } from "./fenced-store.js";
import { withRequestId } from "./kinds.js";

interface WithRequests {
  requestIds: string[];
}

export class Tombstones<R extends WithRequests> {
  constructor(
    private readonly store: FencedStore<R>,
    /** Whether a record holds its object (is not a tombstone). */
    private readonly isLive: (record: R) => boolean,
    /** A record without its object, remembering these requests. */
    private readonly tombstone: (requestIds: string[]) => R,
  ) {}

  /** The revision a create of `id` writes at: its tombstone's, or none for a key never used. */
  revisionFor(id: string): number | undefined {
    const entry = this.store.get(id);
    return entry && !this.isLive(entry.value) ? entry.revision : undefined;
  }

  /** Deletes the record held at `revision`, leaving the tombstone of `requestId` (none: no replay). */
  async bury(id: string, revision: number, record: R, requestId: string): Promise<void> {
    await this.store.write(id, this.tombstone(withRequestId(record.requestIds, requestId)), revision);
  }

  /** Whether `requestId` deleted something (so its retry gets the same answer). */
  deletedBy(requestId: string): boolean {
    if (!requestId) return false;
    for (const [, entry] of this.store.all()) if (!this.isLive(entry.value) && entry.value.requestIds.includes(requestId)) return true;
    return false;
  }
}
