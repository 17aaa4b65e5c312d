// Proves the tombstone rules on their own (an in-memory store standing in for
// the KV bucket, whose compare-and-set it keeps): a delete leaves the record's
// request ids, so the request that deleted it is recognised; a create takes
// the name back over the tombstone; tombstones older than the cutoff are
// purged, newer ones and live records are not, nor one revived meanwhile.

import { describe, expect, it } from "vitest";
import { createLogger, SimdcError } from "@simdc/common";
import type { Entry } from "./fenced-store.js";
import { Tombstones, type RecordStore } from "./tombstones.js";

interface Thing {
  thing?: string;
  requestIds: string[];
  deletedAtMs: number;
}

/** A bucket's compare-and-set semantics: a write at the wrong revision is a conflict. */
class MemoryStore implements RecordStore<Thing> {
  readonly entries = new Map<string, Entry<Thing>>();
  private revision = 0;

  get(key: string): Entry<Thing> | undefined {
    return this.entries.get(key);
  }

  all(): Iterable<[string, Entry<Thing>]> {
    return [...this.entries];
  }

  async write(key: string, value: Thing, revision?: number): Promise<number> {
    const held = this.entries.get(key);
    if ((revision === undefined && held) || (revision !== undefined && held?.revision !== revision)) throw new SimdcError("CONFLICT", `${key} is at ${held?.revision}`);
    this.revision += 1;
    this.entries.set(key, { value, revision: this.revision, epoch: 1 });
    return this.revision;
  }

  async remove(key: string, revision: number): Promise<void> {
    if (this.entries.get(key)?.revision !== revision) throw new SimdcError("CONFLICT", `${key} moved`);
    this.entries.delete(key);
  }
}

const logger = createLogger({ service: "test", id: "test", level: "silent" });

function setUp(): { store: MemoryStore; tombstones: Tombstones<Thing> } {
  const store = new MemoryStore();
  return { store, tombstones: new Tombstones(store, (r) => r.thing !== undefined, (requestIds, deletedAtMs) => ({ requestIds, deletedAtMs })) };
}

describe("tombstones", () => {
  it("tombstones: a delete remembers its request, and a create takes the name back over the tombstone", async () => {
    const { store, tombstones } = setUp();
    await store.write("a", { thing: "a", requestIds: ["create-1"], deletedAtMs: 0 }, tombstones.revisionFor("a"));
    expect(tombstones.deletedBy("delete-1")).toBe(false);
    await tombstones.bury("a", store.get("a")!.revision, store.get("a")!.value, "delete-1", 5_000);
    expect(store.get("a")?.value).toEqual({ requestIds: ["create-1", "delete-1"], deletedAtMs: 5_000 });
    expect(tombstones.deletedBy("delete-1")).toBe(true);
    expect(tombstones.deletedBy("create-1")).toBe(true);
    expect(tombstones.deletedBy("")).toBe(false);
    // A plain create (no revision) would conflict with the tombstone; revisionFor gives its revision.
    await expect(store.write("a", { thing: "a2", requestIds: [], deletedAtMs: 0 })).rejects.toThrow(/CONFLICT|is at/);
    await store.write("a", { thing: "a2", requestIds: ["create-2"], deletedAtMs: 0 }, tombstones.revisionFor("a"));
    expect(store.get("a")?.value.thing).toBe("a2");
    expect(tombstones.revisionFor("a")).toBeUndefined();
    expect(tombstones.deletedBy("delete-1")).toBe(false);
  });

  it("tombstones: purge removes only tombstones older than the cutoff", async () => {
    const { store, tombstones } = setUp();
    for (const [id, deletedAtMs] of [["old", 1_000], ["new", 9_000]] as const) {
      await store.write(id, { thing: id, requestIds: [], deletedAtMs: 0 });
      await tombstones.bury(id, store.get(id)!.revision, store.get(id)!.value, `delete-${id}`, deletedAtMs);
    }
    await store.write("live", { thing: "live", requestIds: [], deletedAtMs: 0 });
    await tombstones.purge(5_000, logger);
    expect([...store.entries.keys()].sort()).toEqual(["live", "new"]);
  });
});
