// Pages of a list in id order, so a reply stays under NATS's payload limit
// however many objects there are. The token is the last id of the previous
// page, so a page is stable while objects come and go; the stores keep their
// ids sorted, so a page costs its own size, not the size of the list.

import { checkName, checkRange } from "@simdc/common";

export const pageSizeDefault = 500;
export const pageSizeMax = 2000;

interface PageRequest {
  pageSize: number;
  pageToken: string;
}

/** @throws SimdcError INVALID_ARGUMENT for a size over pageSizeMax or a malformed token. */
function checkPage(request: PageRequest): { size: number; after: string } {
  const size = request.pageSize === 0 ? pageSizeDefault : checkRange("page_size", request.pageSize, 1, pageSizeMax);
  const after = request.pageToken ? checkName("page_token", request.pageToken) : "";
  return { size, after };
}

/** The ids of the page after the request's token, from a source that keeps its ids sorted. */
export function page(source: { idsAfter(after: string, limit: number): string[] }, request: PageRequest): { ids: string[]; nextPageToken: string } {
  const { size, after } = checkPage(request);
  const ids = source.idsAfter(after, size + 1);
  const more = ids.length > size;
  if (more) ids.pop();
  return { ids, nextPageToken: more ? ids[ids.length - 1]! : "" };
}

/** The same over a small unsorted set of ids (one host's VMs). */
export function pageOf(all: string[], request: PageRequest): { ids: string[]; nextPageToken: string } {
  const { size, after } = checkPage(request);
  const rest = all.filter((id) => id > after).sort();
  const ids = rest.slice(0, size);
  return { ids, nextPageToken: rest.length > size ? ids[ids.length - 1]! : "" };
}
