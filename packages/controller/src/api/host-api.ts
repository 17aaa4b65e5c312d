// HostService: hosts register (persisted) and are listed with what they have
// been promised and when they were last heard from.

import { endpoint, hostService, type Endpoint } from "@simdc/bus";
import { checkName } from "@simdc/common";
import { simdc } from "@simdc/proto";
import type { ControllerState } from "../state.js";
import { byId } from "./by-id.js";
import { checkBootId, checkHostCapacity } from "./validate.js";

import v1 = simdc.v1;

export function hostView(state: ControllerState, host: v1.Host): v1.Host {
  const allocation = state.vms.allocation(host.id);
  return v1.Host.create({
    ...host,
    lastHeartbeatMs: state.hosts.lastHeartbeatMs(host.id),
    allocatedVcpus: allocation.vcpus,
    allocatedMemoryMib: allocation.memoryMib,
    vmCount: allocation.vmCount,
  });
}

export function hostEndpoints(state: ControllerState): Endpoint<any, any>[] {
  return [
    endpoint(hostService.RegisterHost, async (req) => {
      const host = v1.Host.create({
        id: checkName("host_id", req.hostId),
        agentId: checkName("agent_id", req.agentId),
        capacity: checkHostCapacity(req.capacity),
        bootId: checkBootId(req.bootId),
      });
      const transition = await state.hosts.register(host);
      if (transition.rebooted) state.reconciler.resyncHost(host.id);
      return {
        host: hostView(state, state.hosts.require(host.id)),
        heartbeatIntervalMs: state.heartbeatIntervalMs,
        heartbeatMissesMax: state.heartbeatMissesMax,
      };
    }),
    endpoint(hostService.ListHosts, () => {
      const hosts = [...state.hosts.all()].map((h) => hostView(state, h));
      hosts.sort(byId);
      return { hosts };
    }),
    endpoint(hostService.GetHost, (req) => ({ host: hostView(state, state.hosts.require(checkName("host_id", req.hostId))) })),
  ];
}
