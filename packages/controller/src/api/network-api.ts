// NetworkService: the logical networks VMs attach to. A create is
// checked against every other network (VLANs, VNIs, address space) and
// stored; request ids make a retried create or delete act once.

import { endpoint, networkService, type Endpoint } from "@simdc/bus";
import { checkName, failedPrecondition } from "@simdc/common";
import { simdc } from "@simdc/proto";
import type { ControllerState } from "../state.js";
import { withRequestId } from "../store/kinds.js";
import { mutate } from "./mutation.js";
import { page } from "./paging.js";

import v1 = simdc.v1;

export function networkEndpoints(state: ControllerState): Endpoint<any, any>[] {
  const { networks } = state;
  return [
    endpoint(networkService.CreateNetwork, (req) =>
      mutate(
        state,
        networkService.CreateNetwork,
        req,
        async (requestId) => {
          const network = await networks.create(
            { id: req.name, mode: req.mode, transport: req.transport, vlanId: req.vlanId, subnets: req.subnets, flowSetup: req.flowSetup, uplink: req.uplink },
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
        async () => {
          const id = checkName("network_id", req.networkId);
          const { revision } = networks.require(id);
          const attached = [...state.ports.onNetwork(id)];
          if (attached.length > 0) {
            const names = attached.slice(0, 4).map((p) => `${p.vmId}.eth${p.index}`).join(", ");
            throw failedPrecondition(`network ${id} has ${attached.length} NIC(s) attached (${names}); delete those VMs first`);
          }
          await networks.remove(id, revision);
          state.crash.reach("record-stored");
          return { response: {}, hosts: [] };
        },
        () => undefined,
      ),
    ),
  ];
}
