// Reads every page of a paged list, for commands that show a whole list.

import { computeService, hostService, networkService, storageService, type Bus } from "@simdc/bus";
import type { simdc } from "@simdc/proto";

/** Calls `fetchPage` with each next_page_token until the last page, and joins the pages. */
async function allPages<T>(fetchPage: (pageToken: string) => Promise<{ items: T[]; nextPageToken: string }>): Promise<T[]> {
  const out: T[] = [];
  let pageToken = "";
  do {
    const page = await fetchPage(pageToken);
    for (const item of page.items) out.push(item);
    pageToken = page.nextPageToken;
  } while (pageToken);
  return out;
}

/** Every VM (on `hostId` when set). */
export function listAllVms(bus: Bus, hostId = ""): Promise<simdc.v1.Vm.$Properties[]> {
  return allPages(async (pageToken) => {
    const reply = await bus.call(computeService.ListVms, { hostId, pageToken, pageSize: 2000 });
    return { items: reply.vms, nextPageToken: reply.nextPageToken };
  });
}

/** Every volume. */
export function listAllVolumes(bus: Bus): Promise<simdc.v1.Volume.$Properties[]> {
  return allPages(async (pageToken) => {
    const reply = await bus.call(storageService.ListVolumes, { pageToken, pageSize: 2000 });
    return { items: reply.volumes, nextPageToken: reply.nextPageToken };
  });
}

/** Every host. */
export function listAllHosts(bus: Bus): Promise<simdc.v1.Host.$Properties[]> {
  return allPages(async (pageToken) => {
    const reply = await bus.call(hostService.ListHosts, { pageToken, pageSize: 2000 });
    return { items: reply.hosts, nextPageToken: reply.nextPageToken };
  });
}

/** Every logical network. */
export function listAllNetworks(bus: Bus): Promise<simdc.v1.INetwork[]> {
  return allPages(async (pageToken) => {
    const reply = await bus.call(networkService.ListNetworks, { pageToken, pageSize: 2000 });
    return { items: reply.networks, nextPageToken: reply.nextPageToken };
  });
}

/** Every security group. */
export function listAllSecurityGroups(bus: Bus): Promise<simdc.v1.ISecurityGroup[]> {
  return allPages(async (pageToken) => {
    const reply = await bus.call(networkService.ListSecurityGroups, { pageToken, pageSize: 2000 });
    return { items: reply.securityGroups, nextPageToken: reply.nextPageToken };
  });
}

/** Every external endpoint. */
export function listAllEndpoints(bus: Bus): Promise<simdc.v1.IExternalEndpoint[]> {
  return allPages(async (pageToken) => {
    const reply = await bus.call(networkService.ListExternalEndpoints, { pageToken, pageSize: 2000 });
    return { items: reply.endpoints, nextPageToken: reply.nextPageToken };
  });
}

/** Every logical router. */
export function listAllRouters(bus: Bus): Promise<simdc.v1.IRouter[]> {
  return allPages(async (pageToken) => {
    const reply = await bus.call(networkService.ListRouters, { pageToken, pageSize: 2000 });
    return { items: reply.routers, nextPageToken: reply.nextPageToken };
  });
}
