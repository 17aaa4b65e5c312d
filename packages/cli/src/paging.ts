// Reads every page of a paged list, for commands that show a whole list.

import { computeService, storageService, type Bus } from "@simdc/bus";
import type { simdc } from "@simdc/proto";

/** Every VM (on `hostId` when set), following next_page_token. */
export async function listAllVms(bus: Bus, hostId = ""): Promise<simdc.v1.Vm.$Properties[]> {
  const out: simdc.v1.Vm.$Properties[] = [];
  let pageToken = "";
  do {
    const reply = await bus.call(computeService.ListVms, { hostId, pageToken });
    out.push(...reply.vms);
    pageToken = reply.nextPageToken;
  } while (pageToken);
  return out;
}

/** Every volume, following next_page_token. */
export async function listAllVolumes(bus: Bus): Promise<simdc.v1.Volume.$Properties[]> {
  const out: simdc.v1.Volume.$Properties[] = [];
  let pageToken = "";
  do {
    const reply = await bus.call(storageService.ListVolumes, { pageToken });
    out.push(...reply.volumes);
    pageToken = reply.nextPageToken;
  } while (pageToken);
  return out;
}
