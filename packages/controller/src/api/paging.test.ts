// Proves paging: pages in id order, a token that resumes after the last id,
// the default and maximum sizes, refusal of malformed requests, and the
// sorted key set the stores page from: complete and ordered pages, block
// splits and merges included, while keys come and go at random between
// pages (a page walk sees every key that stayed, once, in order).

import { describe, expect, it } from "vitest";
import { Rng } from "@simdc/common";
import { SortedKeys } from "../store/sorted-keys.js";
import { page, pageOf, pageSizeDefault, pageSizeMax } from "./paging.js";

const ids = Array.from({ length: 1203 }, (_, i) => `vm-${String(i).padStart(4, "0")}`);

function keysOf(list: string[]): SortedKeys {
  const keys = new SortedKeys();
  // Added out of order, so the set's own sorting is what the pages show.
  for (const id of [...list].reverse()) keys.add(id);
  return keys;
}

/** The stores page their SortedKeys through idsAfter. */
function source(keys: SortedKeys): { idsAfter(after: string, limit: number): string[] } {
  return { idsAfter: (after, limit) => keys.after(after, limit) };
}

/** Walks every page of `source` and returns the ids seen, in order. */
function walk(keys: SortedKeys, pageSize: number, between: () => void = () => undefined): string[] {
  const seen: string[] = [];
  let pageToken = "";
  do {
    const p = page(source(keys), { pageSize, pageToken });
    expect(p.ids.length).toBeLessThanOrEqual(pageSize);
    seen.push(...p.ids);
    pageToken = p.nextPageToken;
    between();
  } while (pageToken);
  return seen;
}

describe("paging", () => {
  it("paging: walks every item once, in id order", () => {
    expect(walk(keysOf(ids), 500)).toEqual(ids);
    expect(walk(keysOf(ids), 1)).toEqual(ids);
    expect(walk(keysOf(ids), ids.length)).toEqual(ids);
  });

  it("paging: 0 means the default size and the last page has no token", () => {
    const keys = keysOf(ids);
    const first = page(source(keys), { pageSize: 0, pageToken: "" });
    expect(first.ids).toHaveLength(pageSizeDefault);
    expect(first.nextPageToken).toBe(ids[pageSizeDefault - 1]);
    expect(page(source(keys), { pageSize: 2000, pageToken: "vm-1000" })).toEqual({ ids: ids.slice(1001), nextPageToken: "" });
    // A page that ends exactly at the last id has no token either.
    expect(page(source(keys), { pageSize: 202, pageToken: "vm-1000" })).toEqual({ ids: ids.slice(1001), nextPageToken: "" });
    expect(page(source(new SortedKeys()), { pageSize: 10, pageToken: "" })).toEqual({ ids: [], nextPageToken: "" });
  });

  it("paging: a token that names an id no longer present resumes after where it would be", () => {
    const keys = keysOf(ids);
    keys.delete("vm-0500");
    expect(page(source(keys), { pageSize: 2, pageToken: "vm-0500" }).ids).toEqual(["vm-0501", "vm-0502"]);
    expect(page(source(keys), { pageSize: 2, pageToken: "vm-0499" }).ids).toEqual(["vm-0501", "vm-0502"]);
  });

  it("paging: one host's VMs page the same way", () => {
    const mine = ["vm-9", "vm-1", "vm-5", "vm-3"];
    expect(pageOf(mine, { pageSize: 2, pageToken: "" })).toEqual({ ids: ["vm-1", "vm-3"], nextPageToken: "vm-3" });
    expect(pageOf(mine, { pageSize: 2, pageToken: "vm-3" })).toEqual({ ids: ["vm-5", "vm-9"], nextPageToken: "" });
  });

  it.each([
    [{ pageSize: pageSizeMax + 1, pageToken: "" }, /^page_size/],
    [{ pageSize: 10, pageToken: "a.b" }, /^page_token/],
    [{ pageSize: 10, pageToken: ">" }, /^page_token/],
  ])("paging: refuses %j", (request, error) => {
    expect(() => page(source(keysOf(ids)), request)).toThrow(error);
    expect(() => pageOf(ids, request)).toThrow(error);
  });
});

describe("sorted keys", () => {
  it("sorted keys: holds every key once, in order, under random inserts and deletes", () => {
    const rng = new Rng(7, "sorted-keys");
    const keys = new SortedKeys();
    const model = new Set<string>();
    for (let step = 0; step < 20_000; step++) {
      // Few distinct keys, so adds of present keys and deletes of absent ones happen often.
      const key = `k-${rng.below(3000)}`;
      if (rng.next() < 0.6) {
        keys.add(key);
        model.add(key);
      } else {
        keys.delete(key);
        model.delete(key);
      }
      if (step % 997 === 0) {
        expect(keys.size).toBe(model.size);
        expect(keys.after("", model.size + 1)).toEqual([...model].sort());
      }
    }
    expect(keys.size).toBe(model.size);
    expect(walk(keys, 37)).toEqual([...model].sort());
    // Emptied completely, it still works.
    for (const key of model) keys.delete(key);
    expect(keys.size).toBe(0);
    expect(keys.after("", 10)).toEqual([]);
    keys.add("a");
    expect(keys.after("", 10)).toEqual(["a"]);
  });

  it("sorted keys: a page walk while keys come and go sees every key that stayed, once, in order", () => {
    const rng = new Rng(11, "sorted-keys-walk");
    for (let trial = 0; trial < 20; trial++) {
      const keys = new SortedKeys();
      const present = new Set<string>();
      const name = () => `vol-${String(rng.below(5000)).padStart(4, "0")}`;
      for (let i = 0; i < 3000; i++) {
        const key = name();
        keys.add(key);
        present.add(key);
      }
      const stayed = new Set(present);
      const everPresent = new Set(present);
      const seen = walk(keys, 1 + rng.below(300), () => {
        for (let i = 0; i < 50; i++) {
          const key = name();
          if (rng.next() < 0.5) {
            keys.add(key);
            present.add(key);
            everPresent.add(key);
          } else {
            keys.delete(key);
            present.delete(key);
            stayed.delete(key);
          }
        }
      });
      // Strictly increasing: nothing twice, nothing out of order.
      for (let i = 1; i < seen.length; i++) expect(seen[i - 1]! < seen[i]!).toBe(true);
      const seenSet = new Set(seen);
      expect([...stayed].filter((key) => !seenSet.has(key))).toEqual([]);
      expect(seen.filter((key) => !everPresent.has(key))).toEqual([]);
    }
  });
});
