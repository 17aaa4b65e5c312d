// StorageService: volumes live on SAN nodes; the controller picks the node,
// records the volume in KV and has the node create its backing file. SAN
// nodes register here too.

import { endpoint, sanNodeService, storageService, type Endpoint } from "@simdc/bus";
import { alreadyExists, checkName, checkRange, failedPrecondition, resourceExhausted, SimdcError } from "@simdc/common";
import { simdc } from "@simdc/proto";
import type { ControllerState } from "../state.js";
import { byId } from "./by-id.js";
import { page } from "./paging.js";
import { checkBlockSize, checkBootId, sanCapacityMibMax, volumeSizeMibMax } from "./validate.js";

import v1 = simdc.v1;

/** How long the controller waits for a SAN node to create or delete a backing file. */
export const sanCallTimeoutMs = 5_000;

export function sanNodeView(state: ControllerState, node: v1.SanNode): v1.SanNode {
  const allocation = state.volumes.allocation(node.id);
  return v1.SanNode.create({
    ...node,
    allocatedMib: allocation.sizeMib,
    volumeCount: allocation.volumeCount,
    lastHeartbeatMs: state.sanNodes.lastHeartbeatMs(node.id),
  });
}

/** The connected SAN node with the most room left for `sizeMib`, or null. */
function pickSanNode(state: ControllerState, sizeMib: number): v1.SanNode | null {
  let best: v1.SanNode | null = null;
  let bestFreeMib = -1;
  for (const node of state.sanNodes.all()) {
    if (!state.sanNodes.isConnected(node.id)) continue;
    const freeMib = node.capacityMib - state.volumes.allocation(node.id).sizeMib;
    if (freeMib < sizeMib) continue;
    if (freeMib > bestFreeMib || (freeMib === bestFreeMib && best && node.id < best.id)) {
      best = node;
      bestFreeMib = freeMib;
    }
  }
  return best;
}

export function storageEndpoints(state: ControllerState): Endpoint<any, any>[] {
  const { volumes, bus } = state;
  return [
    endpoint(storageService.CreateVolume, async (req) => {
      const id = checkName("name", req.name);
      const sizeMib = checkRange("size_mib", req.sizeMib, 1, volumeSizeMibMax);
      if (!volumes.isFree(id)) throw alreadyExists(`volume ${id} exists already`);
      const node = pickSanNode(state, sizeMib);
      if (!node) throw resourceExhausted(`no connected SAN node has ${sizeMib} MiB free`);
      const volume = v1.Volume.create({
        id,
        sizeMib,
        blockSizeBytes: node.blockSizeBytes,
        sanNodeId: node.id,
        createdAtMs: state.clock.nowMs(),
      });
      await volumes.create(volume);
      try {
        await bus.call(sanNodeService.CreateBackingVolume, { volumeId: id, sizeMib }, { scopeId: node.id, timeoutMs: sanCallTimeoutMs });
      } catch (err) {
        // Undo, so a failed create leaves nothing behind.
        await volumes.delete(id);
        throw err;
      }
      state.events.publish("volume", id, "created", v1.EventKind.EVENT_KIND_VOLUME_CREATED, `volume ${id} on ${node.id}`);
      return { volume };
    }),
    endpoint(storageService.GetVolume, (req) => ({ volume: volumes.require(checkName("volume_id", req.volumeId)).object })),
    endpoint(storageService.ListVolumes, (req) => {
      const { items, nextPageToken } = page(volumes.all(), req);
      return { volumes: items, nextPageToken };
    }),
    endpoint(storageService.DeleteVolume, async (req) => {
      const { object: volume } = volumes.require(checkName("volume_id", req.volumeId));
      const users = [...state.vms.all()].filter((vm) => vm.spec?.bootVolume === volume.id).map((vm) => vm.id);
      if (users.length > 0) {
        throw failedPrecondition(`volume ${volume.id} is the boot volume of ${users.slice(0, 5).join(", ")}`);
      }
      try {
        await bus.call(sanNodeService.DeleteBackingVolume, { volumeId: volume.id }, { scopeId: volume.sanNodeId, timeoutMs: sanCallTimeoutMs });
      } catch (err) {
        // A backing file that is already gone is what we wanted.
        if (!(err instanceof SimdcError && err.code === "NOT_FOUND")) throw err;
      }
      await volumes.delete(volume.id);
      state.events.publish("volume", volume.id, "deleted", v1.EventKind.EVENT_KIND_VOLUME_DELETED, `volume ${volume.id} deleted`);
      return {};
    }),
    endpoint(storageService.RegisterSanNode, async (req) => {
      const node = v1.SanNode.create({
        id: checkName("node_id", req.nodeId),
        capacityMib: checkRange("capacity_mib", req.capacityMib, 1, sanCapacityMibMax),
        blockSizeBytes: checkBlockSize(req.blockSizeBytes),
        bootId: checkBootId(req.bootId),
        registeredAtMs: state.clock.nowMs(),
      });
      for (const volumeId of req.volumeIds) checkName("volume_ids[]", volumeId);
      await state.sanNodes.register(node);
      return {
        node: sanNodeView(state, state.sanNodes.require(node.id)),
        heartbeatIntervalMs: state.heartbeatIntervalMs,
        heartbeatMissesMax: state.heartbeatMissesMax,
      };
    }),
    endpoint(storageService.ListSanNodes, () => {
      const nodes = [...state.sanNodes.all()].map((n) => sanNodeView(state, n));
      nodes.sort(byId);
      return { nodes };
    }),
  ];
}
