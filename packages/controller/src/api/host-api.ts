// HostService: hosts register (stored) and are listed with what they have
// been promised, when they were last heard from and how far they have
// realized their documents; GetSyncStatus shows (and can wait for) the
// datacenter-wide progress.

import { endpoint, hostService, Subjects, type Endpoint } from "@simdc/bus";
import { checkName, invalidArgument, notFound } from "@simdc/common";
import { simdc } from "@simdc/proto";
import type { ControllerState } from "../state.js";
import { waitTimeoutMsDefault, waitTimeoutMsMax } from "./mutation.js";
import { page } from "./paging.js";
import { checkBootId, checkHostCapacity } from "./validate.js";
import { reactiveCookie } from "@simdc/vswitch";
import { reactiveIdleTimeoutS, tableFromLocal } from "../compile/host-network.js";

import v1 = simdc.v1;

export function hostView(state: ControllerState, host: v1.Host): v1.Host {
  const allocation = state.vms.allocation(host.id);
  return v1.Host.create({
    ...host,
    lastHeartbeatMs: state.hosts.lastHeartbeatMs(host.id),
    allocatedVcpus: allocation.vcpus,
    allocatedMemoryMib: allocation.memoryMib,
    vmCount: allocation.vmCount,
    desiredGeneration: state.sync.desiredOf(host.id),
    realizedGeneration: state.sync.realizedOf(host.id),
  });
}

/**
 * The id a registration names in its subject (the last token): NATS
 * permissions let an agent publish only its own hosts' subjects, so this is
 * who the caller is, whatever its payload says.
 * @throws SimdcError INVALID_ARGUMENT when the payload names another id.
 */
export function callerId(subject: string, prefixTokens: number, claimed: string, field: string): string {
  const id = checkName("the subject's id", Subjects.token(subject, prefixTokens + 4));
  if (claimed !== id) throw invalidArgument(`${field} ${JSON.stringify(claimed)} differs from the id in the subject (${id})`);
  return id;
}

export function hostEndpoints(state: ControllerState): Endpoint<any, any>[] {
  return [
    endpoint(hostService.ProbeController, (req, msg) => {
      // Only the active controller answers: a standby is not the vswitch's controller.
      state.lease.requireActive();
      callerId(msg.subject, state.bus.subjects.prefixTokens, req.hostId, "host_id");
      return { controllerId: state.controllerId, epoch: state.lease.epoch };
    }),
    endpoint(hostService.PacketIn, (req, msg) => {
      state.lease.requireActive();
      const hostId = callerId(msg.subject, state.bus.subjects.prefixTokens, req.hostId, "host_id");
      const dst = req.dlDst.toLowerCase();
      if (!/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/.test(dst)) throw invalidArgument(`dl_dst ${JSON.stringify(req.dlDst)} is not a MAC address`);
      const network = state.networks.bySegment(req.segmentId);
      if (!network) throw notFound(`no network has segment ${req.segmentId}`);
      state.counters.packetIns += 1;
      // The flow the host would hold were the network proactive, with an idle timeout and the reactive cookie.
      // A guarded port's destination has two: its IP traffic goes through its inbound security first.
      const lookup = new RegExp(`^table=${tableFromLocal},priority=1[01]0,metadata=0x${req.segmentId.toString(16)},dl_dst=${dst}[, ]`);
      const flows = (state.compileNetwork(hostId, true)?.flows ?? [])
        .filter((f) => lookup.test(f))
        .map((f) => `cookie=0x${reactiveCookie.toString(16)},idle_timeout=${reactiveIdleTimeoutS},${f}`);
      state.counters.flowMods += flows.length;
      return { flows };
    }),
    endpoint(hostService.RegisterHost, async (req, msg) => {
      state.lease.requireActive();
      const id = callerId(msg.subject, state.bus.subjects.prefixTokens, req.hostId, "host_id");
      const agentId = checkName("agent_id", req.agentId);
      const capacity = checkHostCapacity(req.capacity);
      const bootId = checkBootId(req.bootId);
      const previous = state.hosts.get(id);
      // The uplink address is given once and kept: NAT connections and the outside's view of the host depend on it.
      const uplink = previous?.uplinkIp ? { ip: previous.uplinkIp, release: () => undefined } : state.endpoints.takeUplink();
      const host = v1.Host.create({ id, agentId, capacity, bootId, uplinkIp: uplink.ip });
      try {
        await state.hosts.register(host);
      } catch (err) {
        state.counters.refused += 1;
        throw err;
      } finally {
        uplink.release();
      }
      // A new boot of the host starts from nothing; it reports what it builds from its document.
      if (previous?.bootId !== host.bootId) state.observed.resetHost(id);
      state.ranking.update(id);
      state.documents.touch(id);
      return {
        host: hostView(state, state.hosts.require(id)),
        heartbeatIntervalMs: state.heartbeatIntervalMs,
        heartbeatMissesMax: state.heartbeatMissesMax,
        metricsIntervalMs: state.metricsIntervalMs,
      };
    }),
    endpoint(hostService.ListHosts, (req) => {
      const { ids, nextPageToken } = page(state.hosts, req);
      const hosts: v1.Host[] = [];
      for (const id of ids) {
        const host = state.hosts.get(id);
        if (host) hosts.push(hostView(state, host));
      }
      return { hosts, nextPageToken };
    }),
    endpoint(hostService.GetHost, (req) => ({ host: hostView(state, state.hosts.require(checkName("host_id", req.hostId))) })),
    endpoint(hostService.GetSyncStatus, async (req) => {
      if (req.waitHosts) {
        const generation = req.generation || state.documents.writtenGeneration;
        await state.sync.waitRealized(generation, Math.min(req.waitTimeoutMs || waitTimeoutMsDefault, waitTimeoutMsMax));
      }
      return state.sync.status();
    }),
  ];
}
