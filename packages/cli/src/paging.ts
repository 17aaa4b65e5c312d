// Reads every page of a paged list, for commands that show a whole list.

import { computeService, storageService, type Bus } from "@simdc/bus";
import type { simdc } from "@simdc/proto";

/** Calls `fetchPage` with each next_page_token until the last page, and joins the pages. */
async function allPages<T>(fetchPage: (pageToken: string) => Promise<{ items: T[]; nextPageToken: string }>): Promise<T[]> {
  const out: T[] = [];
  let pageToken = "";
  do {
    const page = await fetchPage(pageToken);
    out.push(...page.items);
    pageToken = page.nextPageToken;
  } while (pageToken);
  return out;
}

/** Every VM (on `hostId` when set). */
export function listAllVms(bus: Bus, hostId = ""): Promise<simdc.v1.Vm.$Properties[]> {
  return allPages(async (pageToken) => {
    const reply = await bus.call(computeService.ListVms, { hostId, pageToken });
    return { items: reply.vms, nextPageToken: reply.nextPageToken };
  });
}

/** Every volume. */
export function listAllVolumes(bus: Bus): Promise<simdc.v1.Volume.$Properties[]> {
  return allPages(async (pageToken) => {
    const reply = await bus.call(storageService.ListVolumes, { pageToken });
    return { items: reply.volumes, nextPageToken: reply.nextPageToken };
  });
}
