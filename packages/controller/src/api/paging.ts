// Pages of a list in id order, so a reply stays under NATS's payload limit
// however many objects there are. The token is the last id of the previous
// page, so a page is stable while objects come and go.

import { checkName, checkRange } from "@simdc/common";
import { byId } from "./by-id.js";

export const pageSizeDefault = 500;
export const pageSizeMax = 2000;

/**
 * The page after `pageToken` of at most `pageSize` items (0: the default).
 * @throws SimdcError INVALID_ARGUMENT for a size over pageSizeMax or a malformed token.
 */
export function page<T extends { id: string }>(
  items: Iterable<T>,
  request: { pageSize: number; pageToken: string },
): { items: T[]; nextPageToken: string } {
  const size = request.pageSize === 0 ? pageSizeDefault : checkRange("page_size", request.pageSize, 1, pageSizeMax);
  const after = request.pageToken ? checkName("page_token", request.pageToken) : "";
  const rest: T[] = [];
  for (const item of items) if (item.id > after) rest.push(item);
  rest.sort(byId);
  const out = rest.slice(0, size);
  return { items: out, nextPageToken: rest.length > size ? out[out.length - 1]!.id : "" };
}
