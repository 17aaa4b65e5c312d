// NetworkService: the logical networks VMs attach to. A create is
// checked against every other network (VLANs, VNIs, address space) and
// stored; request ids make a retried create or delete act once.

import { endpoint, networkService, type Endpoint } from "@simdc/bus";
import { alreadyExists, checkName, failedPrecondition, notFound } from "@simdc/common";
import { externalCidr, externalGateway } from "../network/external.js";
import { simdc } from "@simdc/proto";
import type { ControllerState } from "../state.js";
import { withRequestId } from "../store/kinds.js";
import { mutate } from "./mutation.js";
import { page } from "./paging.js";

import v1 = simdc.v1;

/** The connected host that plays the fewest endpoints (the lowest id of equals). @throws SimdcError FAILED_PRECONDITION with none. */
function leastPlayingHost(state: ControllerState): string {
  const playing = new Map<string, number>();
  for (const e of state.endpoints.all()) playing.set(e.hostId, (playing.get(e.hostId) ?? 0) + 1);
  const connected = [...state.hosts.all()].filter((h) => state.hosts.isConnected(h.id)).map((h) => h.id).sort();
  if (connected.length === 0) throw failedPrecondition("no host is connected to play the endpoint");
  return connected.reduce((best, h) => ((playing.get(h) ?? 0) < (playing.get(best) ?? 0) ? h : best));
}

export function networkEndpoints(state: ControllerState): Endpoint<any, any>[] {
  const { networks, securityGroups, endpoints, routers } = state;
  const hostsOnRouter = (router: v1.IRouter | undefined) => [...new Set((router?.networks ?? []).flatMap((n) => [...state.ports.hostsOn(n)]))];
  const groupReplay = (requestId: string) => {
    const securityGroup = securityGroups.byRequest(requestId);
    return securityGroup ? { securityGroup } : undefined;
  };
  return [
    endpoint(networkService.CreateNetwork, (req) =>
      mutate(
        state,
        networkService.CreateNetwork,
        req,
        async (requestId) => {
          const network = await networks.create(
            { id: req.name, mode: req.mode, transport: req.transport, vlanId: req.vlanId, subnets: req.subnets, flowSetup: req.flowSetup, uplink: req.uplink, tenant: req.tenant },
            state.clock.nowMs(),
            withRequestId([], requestId),
          );
          state.crash.reach("record-stored");
          return { response: { network }, hosts: [] };
        },
        (requestId) => {
          const network = networks.byRequest(requestId);
          return network ? { network } : undefined;
        },
      ),
    ),
    endpoint(networkService.GetNetwork, (req) => {
      const id = checkName("network_id", req.networkId);
      return { network: networks.require(id).record.network };
    }),
    endpoint(networkService.ListNetworks, (req) => {
      const { ids, nextPageToken } = page(networks, req);
      const out: v1.INetwork[] = [];
      for (const id of ids) {
        const network = networks.get(id)?.network;
        if (network) out.push(network);
      }
      return { networks: out, nextPageToken };
    }),
    endpoint(networkService.DeleteNetwork, (req) =>
      mutate(
        state,
        networkService.DeleteNetwork,
        req,
        async (requestId) => {
          const id = checkName("network_id", req.networkId);
          const { revision } = networks.require(id);
          const router = routers.of(id);
          if (router) throw failedPrecondition(`network ${id} is on router ${router.id}; delete the router first`);
          const attached = [...state.ports.onNetwork(id)];
          if (attached.length > 0) {
            const names = attached.slice(0, 4).map((p) => `${p.vmId}.eth${p.index}`).join(", ");
            throw failedPrecondition(`network ${id} has ${attached.length} NIC(s) attached (${names}); delete those VMs first`);
          }
          await networks.remove(id, revision, requestId, state.clock.nowMs());
          state.crash.reach("record-stored");
          return { response: {}, hosts: [] };
        },
        (requestId) => (networks.tombstones.deletedBy(requestId) ? {} : undefined),
      ),
    ),
    endpoint(networkService.CreateSecurityGroup, (req) =>
      mutate(
        state,
        networkService.CreateSecurityGroup,
        req,
        async (requestId) => {
          const securityGroup = await securityGroups.create(req.name, req.rules, state.clock.nowMs(), withRequestId([], requestId));
          state.crash.reach("record-stored");
          return { response: { securityGroup }, hosts: [] };
        },
        groupReplay,
      ),
    ),
    endpoint(networkService.GetSecurityGroup, (req) => {
      const id = checkName("security_group_id", req.securityGroupId);
      return { securityGroup: securityGroups.require(id).record.securityGroup };
    }),
    endpoint(networkService.ListSecurityGroups, (req) => {
      const { ids, nextPageToken } = page(securityGroups, req);
      return { securityGroups: ids.flatMap((id) => securityGroups.get(id) ?? []), nextPageToken };
    }),
    endpoint(networkService.UpdateSecurityGroup, (req) =>
      mutate(
        state,
        networkService.UpdateSecurityGroup,
        req,
        async (requestId) => {
          const id = checkName("security_group_id", req.securityGroupId);
          const securityGroup = await securityGroups.update(id, req.rules, (held) => withRequestId(held, requestId));
          state.crash.reach("record-stored");
          // --wait covers the group's document, which the hosts whose NICs it guards expand.
          return { response: { securityGroup }, hosts: [], groups: [id] };
        },
        groupReplay,
      ),
    ),
    endpoint(networkService.CreateExternalEndpoint, (req) =>
      mutate(
        state,
        networkService.CreateExternalEndpoint,
        req,
        async (requestId) => {
          const id = checkName("name", req.name);
          if (!state.vms.isFree(id)) throw alreadyExists(`${id} is a VM's name`);
          const hostId = req.hostId ? checkName("host_id", req.hostId) : leastPlayingHost(state);
          if (!state.hosts.get(hostId)) throw notFound(`host ${hostId} not found`);
          const endpoint = await endpoints.create(id, req.ip, hostId, state.clock.nowMs(), withRequestId([], requestId));
          state.crash.reach("record-stored");
          return { response: { endpoint }, hosts: [hostId] };
        },
        (requestId) => {
          const endpoint = endpoints.byRequest(requestId);
          return endpoint ? { endpoint } : undefined;
        },
      ),
    ),
    endpoint(networkService.ListExternalEndpoints, (req) => {
      const { ids, nextPageToken } = page(endpoints, req);
      return { endpoints: ids.flatMap((id) => endpoints.get(id) ?? []), nextPageToken, externalCidr, gateway: externalGateway };
    }),
    endpoint(networkService.DeleteExternalEndpoint, (req) =>
      mutate(
        state,
        networkService.DeleteExternalEndpoint,
        req,
        async (requestId) => {
          const id = checkName("endpoint_id", req.endpointId);
          const hostId = endpoints.get(id)?.hostId ?? "";
          await endpoints.remove(id, requestId, state.clock.nowMs());
          state.crash.reach("record-stored");
          return { response: {}, hosts: [hostId] };
        },
        (requestId) => (endpoints.tombstones.deletedBy(requestId) ? {} : undefined),
      ),
    ),
    endpoint(networkService.CreateRouter, (req) =>
      mutate(
        state,
        networkService.CreateRouter,
        req,
        async (requestId) => {
          const router = await routers.create(req.name, req.networks, networks, state.clock.nowMs(), withRequestId([], requestId));
          state.crash.reach("record-stored");
          return { response: { router }, hosts: hostsOnRouter(router) };
        },
        (requestId) => {
          const router = routers.byRequest(requestId);
          return router ? { router } : undefined;
        },
      ),
    ),
    endpoint(networkService.ListRouters, (req) => {
      const { ids, nextPageToken } = page(routers, req);
      return { routers: ids.flatMap((id) => routers.get(id) ?? []), nextPageToken };
    }),
    endpoint(networkService.DeleteRouter, (req) =>
      mutate(
        state,
        networkService.DeleteRouter,
        req,
        async (requestId) => {
          const router = await routers.remove(checkName("router_id", req.routerId), requestId, state.clock.nowMs());
          state.crash.reach("record-stored");
          return { response: {}, hosts: hostsOnRouter(router) };
        },
        (requestId) => (routers.tombstones.deletedBy(requestId) ? {} : undefined),
      ),
    ),
    endpoint(networkService.DeleteSecurityGroup, (req) =>
      mutate(
        state,
        networkService.DeleteSecurityGroup,
        req,
        async (requestId) => {
          const id = checkName("security_group_id", req.securityGroupId);
          const { revision } = securityGroups.require(id);
          const guarded = state.ports.inGroup(id);
          if (guarded.length > 0) {
            const names = guarded.slice(0, 4).map((p) => `${p.vmId}.eth${p.index}`).join(", ");
            throw failedPrecondition(`security group ${id} guards ${guarded.length} NIC(s) (${names}); delete or detach those first`);
          }
          await securityGroups.remove(id, revision, requestId, state.clock.nowMs());
          state.crash.reach("record-stored");
          return { response: {}, hosts: [] };
        },
        (requestId) => (securityGroups.tombstones.deletedBy(requestId) ? {} : undefined),
      ),
    ),
  ];
}
