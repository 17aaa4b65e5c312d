// StorageService: volumes live on SAN nodes. The controller picks the node
// and records the volume (CREATING); the volume reconciler has the node make
// its backing file and marks it READY, so a crash at any step converges. A
// create or delete answers once the node confirmed, or with the volume as it
// stands when that takes longer than the wait. SAN nodes register here too.

import { endpoint, storageService, type Endpoint } from "@simdc/bus";
import { alreadyExists, checkName, checkRange, failedPrecondition, notFound, resourceExhausted, SimdcError, uniqueId } from "@simdc/common";
import { simdc } from "@simdc/proto";
import type { ControllerState } from "../state.js";
import { withRequestId } from "../store/kinds.js";
import { callerId } from "./host-api.js";
import { mutate, waitTimeoutMsMax } from "./mutation.js";
import { page } from "./paging.js";
import { checkBlockSize, checkBootId, sanCapacityMibMax, volumeSizeMibMax } from "./validate.js";

import v1 = simdc.v1;

/** How long a create or delete waits for the SAN node by default, in simulated ms. */
export const volumeWaitMsDefault = 10_000;

export function sanNodeView(state: ControllerState, node: v1.SanNode): v1.SanNode {
  const allocation = state.volumes.allocation(node.id);
  return v1.SanNode.create({
    ...node,
    allocatedMib: allocation.sizeMib,
    volumeCount: allocation.volumeCount,
    lastHeartbeatMs: state.sanNodes.lastHeartbeatMs(node.id),
  });
}

/** The connected, writable SAN node with the most room left for `sizeMib`, or null. */
function pickSanNode(state: ControllerState, sizeMib: number): v1.SanNode | null {
  let best: v1.SanNode | null = null;
  let bestFreeMib = -1;
  for (const node of state.sanNodes.all()) {
    if (!state.sanNodes.isConnected(node.id) || !node.writable) continue;
    const freeMib = node.capacityMib - state.volumes.allocation(node.id).sizeMib;
    if (freeMib < sizeMib) continue;
    if (freeMib > bestFreeMib || (freeMib === bestFreeMib && best && node.id < best.id)) {
      best = node;
      bestFreeMib = freeMib;
    }
  }
  return best;
}

function hasRequest(record: v1.VolumeRecord | undefined, requestId: string): boolean {
  return record !== undefined && record.requestIds.includes(requestId);
}

export function storageEndpoints(state: ControllerState): Endpoint<any, any>[] {
  const { volumes } = state;
  const waitMs = (mutation: v1.IMutation | null | undefined): number => Math.min(mutation?.waitTimeoutMs || volumeWaitMsDefault, waitTimeoutMsMax);

  return [
    endpoint(storageService.CreateVolume, (req) =>
      mutate(
        state,
        storageService.CreateVolume,
        req,
        async (requestId) => {
          const id = checkName("name", req.name);
          const sizeMib = checkRange("size_mib", req.sizeMib, 1, volumeSizeMibMax);
          if (!volumes.isFree(id)) throw alreadyExists(`volume ${id} exists already`);
          const node = pickSanNode(state, sizeMib);
          if (!node) throw resourceExhausted(`no connected, writable SAN node has ${sizeMib} MiB free`);
          const volume = v1.Volume.create({
            id,
            sizeMib,
            blockSizeBytes: node.blockSizeBytes,
            sanNodeId: node.id,
            createdAtMs: state.clock.nowMs(),
            state: v1.VolumeState.VOLUME_STATE_CREATING,
            incarnation: uniqueId(),
          });
          const release = volumes.reserve(volume);
          try {
            await volumes.records.write(id, v1.VolumeRecord.create({ volume, requestIds: withRequestId([], requestId) }), volumes.entry(id)?.revision);
          } finally {
            release();
          }
          state.crash.reach("record-stored");
          const settled = await state.volumeReconciler.settle(id, volume.incarnation, waitMs(req.mutation));
          if (settled?.state === v1.VolumeState.VOLUME_STATE_FAILED) {
            // A node that refused for good leaves nothing behind: the record goes too.
            await state.volumeReconciler.discard(id);
            const reason = settled.reason;
            const code = reason && reason.code === v1.ErrorCode.ERROR_CODE_RESOURCE_EXHAUSTED ? "RESOURCE_EXHAUSTED" : "FAILED_PRECONDITION";
            throw new SimdcError(code, `SAN node ${node.id} could not create volume ${id}: ${reason?.message ?? "refused"}`);
          }
          state.events.publish("volume", id, "created", v1.EventKind.EVENT_KIND_VOLUME_CREATED, `volume ${id} on ${node.id}`);
          return { response: { volume: settled ?? volume }, hosts: [] };
        },
        (requestId) => {
          const entry = volumes.entry(req.name);
          return hasRequest(entry?.value, requestId) && !entry?.value.deleted ? { volume: entry?.value.volume } : undefined;
        },
      ),
    ),
    endpoint(storageService.GetVolume, (req) => {
      const id = checkName("volume_id", req.volumeId);
      const volume = volumes.get(id);
      if (!volume) throw notFound(`volume ${id} not found`);
      return { volume };
    }),
    endpoint(storageService.ListVolumes, (req) => {
      const { ids, nextPageToken } = page(volumes, req);
      return { volumes: ids.map((id) => volumes.get(id)).filter((v) => v !== undefined), nextPageToken };
    }),
    endpoint(storageService.DeleteVolume, (req) =>
      mutate(
        state,
        storageService.DeleteVolume,
        req,
        async (requestId) => {
          const id = checkName("volume_id", req.volumeId);
          const entry = volumes.entry(id);
          if (!entry || entry.value.deleted || !entry.value.volume) throw notFound(`volume ${id} not found`);
          const users = [...state.vms.referencing(id)];
          if (users.length > 0) throw failedPrecondition(`volume ${id} is the boot volume of ${users.slice(0, 5).join(", ")}`);
          const volume = v1.Volume.create({ ...entry.value.volume, state: v1.VolumeState.VOLUME_STATE_DELETING });
          await volumes.records.write(id, v1.VolumeRecord.create({ volume, requestIds: withRequestId(entry.value.requestIds, requestId) }), entry.revision);
          state.crash.reach("record-stored");
          await state.volumeReconciler.settle(id, volume.incarnation, waitMs(req.mutation));
          return { response: {}, hosts: [] };
        },
        (requestId) => (hasRequest(volumes.entry(req.volumeId)?.value, requestId) ? {} : undefined),
      ),
    ),
    endpoint(storageService.RegisterSanNode, async (req, msg) => {
      state.lease.requireActive();
      const id = callerId(msg.subject, state.bus.subjects.prefixTokens, req.nodeId, "node_id");
      const node = v1.SanNode.create({
        id,
        capacityMib: checkRange("capacity_mib", req.capacityMib, 1, sanCapacityMibMax),
        blockSizeBytes: checkBlockSize(req.blockSizeBytes),
        bootId: checkBootId(req.bootId),
        registeredAtMs: state.clock.nowMs(),
        writable: true,
      });
      await state.sanNodes.register(node);
      state.volumeReconciler.inventorySoon(id);
      return {
        node: sanNodeView(state, state.sanNodes.require(id)),
        heartbeatIntervalMs: state.heartbeatIntervalMs,
        heartbeatMissesMax: state.heartbeatMissesMax,
      };
    }),
    endpoint(storageService.ListSanNodes, () => {
      const nodes = [...state.sanNodes.all()].map((n) => sanNodeView(state, n));
      nodes.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
      return { nodes };
    }),
  ];
}
