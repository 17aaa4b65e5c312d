// Drives SAN nodes toward the volumes' desired state, level-triggered like
// controller-runtime: a CREATING volume gets its backing file (an idempotent
// call) and becomes READY, a DELETING one loses it and becomes a tombstone.
// It also takes each node's inventory: a backing file nobody wants is an
// orphan (reported, then deleted, only ever the incarnation seen), one from
// a lost store is adopted, and a READY volume whose file is gone is
// reported missing. A crash between any two steps converges on the next run.

import { sanNodeService, type Bus } from "@simdc/bus";
import { SimdcError, type Clock, type Logger, type Timer } from "@simdc/common";
import { simdc } from "@simdc/proto";
import type { CrashPoints } from "../crash-points.js";
import type { EventPublisher } from "../events.js";
import type { Lease } from "../lease/lease.js";
import type { MemberRegistry } from "../registry/member-registry.js";
import type { VolumeStore } from "../store/kinds.js";
import { WorkQueue, type WorkResult } from "./work-queue.js";

import v1 = simdc.v1;

/** How long the controller waits for a SAN node to answer a volume call. */
export const sanCallTimeoutMs = 5_000;
/** Volume calls to SAN nodes in flight at once. */
export const volumeReconcileConcurrency = 16;

const { VOLUME_STATE_CREATING, VOLUME_STATE_READY, VOLUME_STATE_DELETING, VOLUME_STATE_FAILED } = v1.VolumeState;

export interface VolumeReconcilerOptions {
  bus: Bus;
  volumes: VolumeStore;
  sanNodes: MemberRegistry<v1.SanNode>;
  lease: Lease;
  events: EventPublisher;
  clock: Clock;
  logger: Logger;
  stateId: () => string;
  /** How often every node's inventory is taken, in simulated ms. */
  inventoryIntervalMs: number;
  crash: CrashPoints;
}

interface Settler {
  id: string;
  incarnation: string;
  resolve(volume: v1.Volume | null): void;
}

export class VolumeReconciler {
  private readonly queue: WorkQueue;
  private settlers: Settler[] = [];
  private inventoryTimer: Timer | null = null;
  private readonly inventoryRunning = new Set<string>();

  constructor(private readonly o: VolumeReconcilerOptions) {
    this.queue = new WorkQueue((id) => this.reconcile(id), { concurrency: volumeReconcileConcurrency, backoffBaseMs: 200, backoffMaxMs: 10_000 }, o.clock, o.logger);
    this.queue.stop();
    o.volumes.records.onChange((id, _before, after) => {
      this.notifySettlers(id, after?.value);
      if (after && !after.value.deleted) {
        const state = after.value.volume?.state;
        if (state === VOLUME_STATE_CREATING || state === VOLUME_STATE_DELETING) this.queue.add(id);
      }
    });
  }

  /** Starts working (the controller became active): every volume in flight, then every node's inventory. */
  activate(): void {
    this.queue.restart();
    for (const volume of this.o.volumes.all()) {
      if (volume.state === VOLUME_STATE_CREATING || volume.state === VOLUME_STATE_DELETING) this.queue.add(volume.id);
    }
    this.inventoryTimer = this.o.clock.every(this.o.inventoryIntervalMs, () => {
      for (const node of this.o.sanNodes.all()) if (this.o.sanNodes.isConnected(node.id)) this.inventorySoon(node.id);
    });
    for (const node of this.o.sanNodes.all()) this.inventorySoon(node.id);
  }

  deactivate(): void {
    this.queue.stop();
    this.inventoryTimer?.cancel();
    for (const s of this.settlers) s.resolve(null);
    this.settlers = [];
  }

  /** Reconciles the volumes of a node that (re)connected. */
  nodeConnected(nodeId: string): void {
    for (const id of this.o.volumes.onTarget(nodeId)) this.queue.add(id);
    this.inventorySoon(nodeId);
  }

  /**
   * Resolves with the volume once it is READY or FAILED, or null once it is
   * gone (deleted), or with it as it stands after `timeoutMs`.
   */
  settle(id: string, incarnation: string, timeoutMs: number): Promise<v1.Volume | null> {
    const now = this.settledState(id, incarnation);
    if (now !== undefined) return Promise.resolve(now);
    return new Promise((resolve) => {
      const timer = this.o.clock.after(timeoutMs, () => {
        this.settlers = this.settlers.filter((s) => s !== settler);
        resolve(this.o.volumes.get(id) ?? null);
      });
      const settler: Settler = {
        id,
        incarnation,
        resolve: (volume) => {
          timer.cancel();
          resolve(volume);
        },
      };
      this.settlers.push(settler);
    });
  }

  /** Sends a FAILED volume to deletion (its node never made it). */
  async discard(id: string): Promise<void> {
    const entry = this.o.volumes.entry(id);
    if (!entry?.value.volume || entry.value.deleted) return;
    const volume = v1.Volume.create({ ...entry.value.volume, state: VOLUME_STATE_DELETING });
    await this.o.volumes.records.write(id, v1.VolumeRecord.create({ ...entry.value, volume }), entry.revision);
  }

  /** Takes the node's inventory unless one is running. */
  inventorySoon(nodeId: string): void {
    if (!this.o.lease.isActive || this.inventoryRunning.has(nodeId)) return;
    this.inventoryRunning.add(nodeId);
    void this.inventory(nodeId)
      .catch((err: unknown) => this.o.logger.warn({ nodeId, err: String(err) }, "could not take a SAN node's inventory"))
      .finally(() => this.inventoryRunning.delete(nodeId));
  }

  /** undefined while in flight; the volume when settled; null when gone. */
  private settledState(id: string, incarnation: string): v1.Volume | null | undefined {
    const volume = this.o.volumes.get(id);
    if (!volume || volume.incarnation !== incarnation) return null;
    return volume.state === VOLUME_STATE_READY || volume.state === VOLUME_STATE_FAILED ? volume : undefined;
  }

  private notifySettlers(id: string, record: v1.VolumeRecord | undefined): void {
    if (this.settlers.length === 0) return;
    this.settlers = this.settlers.filter((s) => {
      if (s.id !== id) return true;
      const state = this.settledState(id, s.incarnation);
      if (state === undefined) return true;
      s.resolve(record?.deleted ? null : state);
      return false;
    });
  }

  private async reconcile(id: string): Promise<WorkResult> {
    if (!this.o.lease.isActive) return "done";
    const entry = this.o.volumes.entry(id);
    const volume = entry?.value.volume as v1.Volume | null | undefined;
    if (!entry || entry.value.deleted || !volume) return "done";
    if (!this.o.sanNodes.isConnected(volume.sanNodeId)) return "done"; // its reconnect enqueues it again
    const scope = { scopeId: volume.sanNodeId, timeoutMs: sanCallTimeoutMs };
    try {
      if (volume.state === VOLUME_STATE_CREATING) {
        await this.o.bus.call(
          sanNodeService.CreateBackingVolume,
          { volumeId: id, sizeMib: volume.sizeMib, incarnation: volume.incarnation, stateId: this.o.stateId() },
          scope,
        );
        this.o.crash.reach("backing-created");
        await this.transition(id, entry.revision, VOLUME_STATE_READY, null);
      } else if (volume.state === VOLUME_STATE_DELETING) {
        try {
          await this.o.bus.call(sanNodeService.DeleteBackingVolume, { volumeId: id, incarnation: volume.incarnation }, scope);
        } catch (err) {
          // Gone already, or the node holds another incarnation: either way ours is gone.
          if (!(err instanceof SimdcError && (err.code === "NOT_FOUND" || err.code === "FAILED_PRECONDITION"))) throw err;
        }
        this.o.crash.reach("backing-deleted");
        const tombstone = v1.VolumeRecord.create({ ...entry.value, deleted: true, deletedAtMs: this.o.clock.nowMs() });
        await this.o.volumes.records.write(id, tombstone, entry.revision);
        this.o.events.publish("volume", id, "deleted", v1.EventKind.EVENT_KIND_VOLUME_DELETED, `volume ${id} deleted from ${volume.sanNodeId}`);
      }
      return "done";
    } catch (err) {
      const failure = err instanceof SimdcError ? err : null;
      if (failure?.code === "ALREADY_EXISTS") {
        // The node holds an older incarnation of this name: its inventory removes that orphan, then we try again.
        this.inventorySoon(volume.sanNodeId);
        return "retry";
      }
      if (volume.state === VOLUME_STATE_CREATING && failure && ["RESOURCE_EXHAUSTED", "INVALID_ARGUMENT", "FAILED_PRECONDITION"].includes(failure.code)) {
        await this.transition(id, entry.revision, VOLUME_STATE_FAILED, { code: v1.ErrorCode[`ERROR_CODE_${failure.code}`], message: failure.message });
        return "done";
      }
      this.o.logger.warn({ volumeId: id, err: String(err) }, "volume reconcile failed; will retry");
      return "retry";
    }
  }

  private async transition(id: string, revision: number, state: v1.VolumeState, reason: v1.Status.$Properties | null): Promise<void> {
    const entry = this.o.volumes.entry(id);
    if (!entry?.value.volume || entry.revision !== revision) return; // changed meanwhile: the next run decides
    const volume = v1.Volume.create({ ...entry.value.volume, state, reason });
    await this.o.volumes.records.write(id, v1.VolumeRecord.create({ ...entry.value, volume }), revision);
    const name = v1.VolumeState[state]!.replace("VOLUME_STATE_", "").toLowerCase();
    this.o.events.publish("volume", id, "state-changed", v1.EventKind.EVENT_KIND_VOLUME_STATE_CHANGED, `volume ${id} is ${name}`, reason ?? undefined);
  }

  private async inventory(nodeId: string): Promise<void> {
    if (!this.o.sanNodes.isConnected(nodeId)) return;
    // Volumes stored before the list was asked for must be in it; later ones may not be yet.
    const before = new Map<string, number>();
    for (const id of this.o.volumes.onTarget(nodeId)) before.set(id, this.o.volumes.entry(id)?.revision ?? 0);
    const { volumes: held } = await this.o.bus.call(sanNodeService.ListBackingVolumes, {}, { scopeId: nodeId, timeoutMs: sanCallTimeoutMs });
    const heldIds = new Set<string>();
    for (const listed of held) {
      const backing = v1.BackingVolume.create(listed);
      heldIds.add(backing.volumeId);
      const wanted = this.o.volumes.get(backing.volumeId);
      if (wanted && wanted.incarnation === backing.incarnation && wanted.sanNodeId === nodeId) {
        if (wanted.state === VOLUME_STATE_CREATING) this.queue.add(wanted.id);
        continue;
      }
      if (!wanted && backing.stateId && backing.stateId !== this.o.stateId() && this.o.volumes.isFree(backing.volumeId)) {
        await this.adopt(nodeId, backing);
        continue;
      }
      await this.removeOrphan(nodeId, backing, wanted);
    }
    for (const [id, revision] of before) {
      const volume = this.o.volumes.get(id);
      if (!volume || volume.state !== VOLUME_STATE_READY || heldIds.has(id) || this.o.volumes.entry(id)?.revision !== revision) continue;
      const message = `volume ${id} is READY but SAN node ${nodeId} no longer holds it`;
      this.o.logger.error({ volumeId: id, nodeId }, message);
      this.o.events.publish("volume", id, "missing", v1.EventKind.EVENT_KIND_VOLUME_MISSING, message, { code: v1.ErrorCode.ERROR_CODE_NOT_FOUND, message });
      await this.transition(id, revision, VOLUME_STATE_FAILED, { code: v1.ErrorCode.ERROR_CODE_NOT_FOUND, message: `its backing file is gone from ${nodeId}` });
    }
  }

  private async adopt(nodeId: string, backing: v1.BackingVolume): Promise<void> {
    const volume = v1.Volume.create({
      id: backing.volumeId,
      sizeMib: backing.sizeMib,
      blockSizeBytes: backing.blockSizeBytes,
      sanNodeId: nodeId,
      createdAtMs: backing.createdAtMs,
      state: VOLUME_STATE_READY,
      incarnation: backing.incarnation,
    });
    await this.o.volumes.records.write(volume.id, v1.VolumeRecord.create({ volume }), this.o.volumes.entry(volume.id)?.revision);
    const message = `volume ${volume.id} found on ${nodeId} from an earlier store (${backing.stateId}) was adopted`;
    this.o.logger.warn({ volumeId: volume.id, nodeId }, message);
    this.o.events.publish("volume", volume.id, "adopted", v1.EventKind.EVENT_KIND_STATE_ADOPTED, message);
  }

  private async removeOrphan(nodeId: string, backing: v1.BackingVolume, wanted: v1.Volume | undefined): Promise<void> {
    const why = wanted ? `the volume of that name is incarnation ${wanted.incarnation} on ${wanted.sanNodeId}` : "no volume of that name is wanted";
    const message = `SAN node ${nodeId} holds volume ${backing.volumeId} (incarnation ${backing.incarnation}) that nobody wants (${why}); deleting it`;
    this.o.logger.warn({ volumeId: backing.volumeId, nodeId }, message);
    this.o.events.publish("volume", backing.volumeId, "orphaned", v1.EventKind.EVENT_KIND_VOLUME_ORPHANED, message);
    try {
      await this.o.bus.call(
        sanNodeService.DeleteBackingVolume,
        { volumeId: backing.volumeId, incarnation: backing.incarnation },
        { scopeId: nodeId, timeoutMs: sanCallTimeoutMs },
      );
    } catch (err) {
      if (!(err instanceof SimdcError && (err.code === "NOT_FOUND" || err.code === "FAILED_PRECONDITION"))) throw err;
    }
  }
}
