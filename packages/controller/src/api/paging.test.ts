// Proves paging: pages in id order, a token that resumes after the last id,
// the default and maximum sizes, and refusal of malformed requests.

import { describe, expect, it } from "vitest";
import { page, pageSizeDefault, pageSizeMax } from "./paging.js";

const items = Array.from({ length: 1203 }, (_, i) => ({ id: `vm-${String(i).padStart(4, "0")}` })).reverse();

describe("paging", () => {
  it("paging: walks every item once, in id order", () => {
    const seen: string[] = [];
    let pageToken = "";
    do {
      const p = page(items, { pageSize: 500, pageToken });
      seen.push(...p.items.map((i) => i.id));
      pageToken = p.nextPageToken;
    } while (pageToken);
    expect(seen).toEqual(items.map((i) => i.id).sort());
  });

  it("paging: 0 means the default size and the last page has no token", () => {
    expect(page(items, { pageSize: 0, pageToken: "" }).items).toHaveLength(pageSizeDefault);
    expect(page(items, { pageSize: 2000, pageToken: "vm-1000" })).toMatchObject({ nextPageToken: "" });
  });

  it.each([
    [{ pageSize: pageSizeMax + 1, pageToken: "" }, /page_size/],
    [{ pageSize: 10, pageToken: "a.b" }, /page_token/],
  ])("paging: refuses %j", (request, error) => {
    expect(() => page(items, request)).toThrow(error);
  });
});
