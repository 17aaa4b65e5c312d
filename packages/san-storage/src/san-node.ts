// The SAN node role: serves SanNodeService for one node id on the bus,
// registers with the controller (retrying with capped backoff, never holding
// up service) and publishes a heartbeat every interval, saying whether its
// disk takes writes. Volumes and block I/O live in the block store; this
// file only puts them on the wire.

import { simdc } from "@simdc/proto";
import { endpoint, sanNodeService, storageService, type Bus, type RunningRole } from "@simdc/bus";
import { checkName, checkRange, invalidArgument, uniqueId, type Clock, type HealthReport, type Logger, type Timer } from "@simdc/common";
import { BlockStore } from "./block-store.js";
import { blocksPerRequestMax, heartbeatIntervalMsMax, heartbeatIntervalMsMin, volumeSizeMibMax } from "./limits.js";
import type { VolumeMeta } from "./volume-meta.js";

import v1 = simdc.v1;

export interface SanNodeOptions {
  bus: Bus;
  logger: Logger;
  clock: Clock;
  /** This node's id: its subjects are `<prefix>.san.<nodeId>.<Method>`. */
  nodeId: string;
  /** Directory holding `volumes/`. */
  dataDir: string;
  capacityMib: number;
  /** Block size of new volumes, in bytes. */
  blockSizeBytes: number;
  heartbeatIntervalMs: number;
  /** Idle image files kept open (openVolumesMaxDefault when absent). */
  openVolumesMax?: number;
  /** First delay between registration attempts, in ms. */
  registerBackoffMsMin?: number;
  /** Cap on the delay between registration attempts, in ms. */
  registerBackoffMsMax?: number;
  /** How long one registration attempt waits for the controller, in ms. */
  registerTimeoutMs?: number;
  /** Jitter source in [0, 1), derived from the run's seed. */
  random: () => number;
}

export const registerBackoffMsMinDefault = 250;
export const registerBackoffMsMaxDefault = 5_000;
export const registerTimeoutMsDefault = 2_000;
const incarnationLengthMax = 64;
/** Heartbeats between probes of the disk: a node learns its disk went read-only (or came back) without waiting for a write. */
export const diskProbeEveryBeats = 5;

type Service = Awaited<ReturnType<Bus["serve"]>>;

export class SanNode implements RunningRole {
  readonly nodeId: string;
  /** Changes each time the node starts, so the controller can tell a restart. */
  readonly bootId = uniqueId();
  readonly store: BlockStore;
  private readonly bus: Bus;
  private readonly logger: Logger;
  private readonly clock: Clock;
  private readonly options: SanNodeOptions;
  private readonly stopSignal = new AbortController();
  private service: Service | null = null;
  private heartbeatTimer: Timer | null = null;
  private heartbeatSeq = 0;
  /** The option's value until the controller's registration reply sets it. */
  private heartbeatIntervalMs: number;
  /** Simulated time when the controller accepted the registration; null before. */
  private registeredAtMs: number | null = null;
  private registering = false;
  private probing = false;

  private constructor(options: SanNodeOptions, store: BlockStore) {
    this.options = options;
    this.nodeId = options.nodeId;
    this.bus = options.bus;
    this.logger = options.logger;
    this.clock = options.clock;
    this.store = store;
    this.heartbeatIntervalMs = options.heartbeatIntervalMs;
  }

  /**
   * Scans the data dir, serves SanNodeService, starts heartbeats and starts
   * registering in the background.
   * @throws SimdcError INVALID_ARGUMENT for a bad node id, block size or
   * capacity; the file system's error when the data dir is unusable.
   */
  static async start(options: SanNodeOptions): Promise<SanNode> {
    checkName("nodeId", options.nodeId);
    checkRange("heartbeatIntervalMs", options.heartbeatIntervalMs, 1, 3_600_000);
    const store = await BlockStore.open({
      dataDir: options.dataDir,
      capacityMib: options.capacityMib,
      blockSizeBytes: options.blockSizeBytes,
      logger: options.logger,
      clock: options.clock,
      ...(options.openVolumesMax !== undefined ? { openVolumesMax: options.openVolumesMax } : {}),
    });
    const node = new SanNode(options, store);
    try {
      await node.serve();
    } catch (err) {
      await store.close();
      throw err;
    }
    node.startHeartbeats();
    void node.register();
    node.logger.info({ nodeId: node.nodeId, bootId: node.bootId, volumeCount: store.volumeCount, allocatedMib: store.allocatedMib }, "SAN node serving");
    return node;
  }

  /** True once the controller accepted this node's registration. */
  get registered(): boolean {
    return this.registeredAtMs !== null;
  }

  /** Healthy while serving and its disk takes writes; registration and volume counts are details. */
  health(): HealthReport {
    const problem = this.store.diskProblem;
    return {
      healthy: !this.stopSignal.signal.aborted && problem === null,
      details: {
        nodeId: this.nodeId,
        registered: this.registered,
        registeredAtMs: this.registeredAtMs,
        writable: problem === null,
        problem,
        volumeCount: this.store.volumeCount,
        allocatedMib: this.store.allocatedMib,
        capacityMib: this.store.capacityMib,
      },
    };
  }

  /** Stops heartbeats and registration, stops serving, waits for requests in flight and closes files. */
  async stop(): Promise<void> {
    if (this.stopSignal.signal.aborted) return;
    this.stopSignal.abort();
    this.heartbeatTimer?.cancel();
    this.heartbeatTimer = null;
    await this.service?.stop();
    await this.store.close();
    this.logger.info({ nodeId: this.nodeId }, "SAN node stopped");
  }

  private async serve(): Promise<void> {
    // Each handler checks its names and ranges first; the store checks the
    // rest against the volume (and again the names, before they become paths).
    this.service = await this.bus.serve(
      { role: "san-node", scopeId: this.nodeId, description: `SAN node ${this.nodeId}: volumes and block I/O` },
      [
        endpoint(sanNodeService.CreateBackingVolume, async (req) => {
          const volumeId = checkName("volumeId", req.volumeId);
          const sizeMib = checkRange("sizeMib", req.sizeMib, 1, volumeSizeMibMax);
          const incarnation = checkIncarnation("incarnation", req.incarnation, true);
          const stateId = checkIncarnation("state_id", req.stateId, false);
          const { volume, created } = await this.store.createVolume(volumeId, sizeMib, incarnation, stateId);
          if (created) this.logger.info({ volumeId, sizeMib, incarnation }, "created volume");
          return { volume: this.toWire(volume) };
        }),
        endpoint(sanNodeService.DeleteBackingVolume, async (req) => {
          const volumeId = checkName("volumeId", req.volumeId);
          await this.store.deleteVolume(volumeId, checkIncarnation("incarnation", req.incarnation, false));
          this.logger.info({ volumeId }, "deleted volume");
          return {};
        }),
        endpoint(sanNodeService.ReadBlocks, async (req) => {
          const volumeId = checkName("volumeId", req.volumeId);
          const blockCount = checkRange("blockCount", req.blockCount, 1, blocksPerRequestMax);
          return { data: await this.store.readBlocks(volumeId, req.lba, blockCount) };
        }),
        endpoint(sanNodeService.WriteBlocks, async (req) => {
          const volumeId = checkName("volumeId", req.volumeId);
          return { blocksWritten: await this.store.writeBlocks(volumeId, req.lba, req.data) };
        }),
        endpoint(sanNodeService.ListBackingVolumes, () => ({ volumes: this.store.list().map((v) => this.toWire(v)) })),
        endpoint(sanNodeService.Reregister, () => {
          void this.register();
          return {};
        }),
      ],
    );
  }

  private toWire(volume: VolumeMeta): v1.BackingVolume.$Properties {
    return {
      volumeId: volume.volumeId,
      sizeMib: volume.sizeMib,
      blockSizeBytes: volume.blockSizeBytes,
      incarnation: volume.incarnation,
      stateId: volume.stateId,
      createdAtMs: volume.createdAtMs,
    };
  }

  private startHeartbeats(): void {
    const subject = this.bus.subjects.event("san", this.nodeId, "heartbeat");
    const beat = (): void => {
      this.heartbeatSeq = (this.heartbeatSeq + 1) >>> 0;
      if (this.heartbeatSeq % diskProbeEveryBeats === 0) this.probeDisk();
      const problem = this.store.diskProblem;
      // A failed publish is logged, counted and reported by the bus; a missed
      // heartbeat is exactly what the controller is there to notice.
      this.bus.publish(subject, v1.SanNodeHeartbeat, {
        nodeId: this.nodeId,
        bootId: this.bootId,
        seq: this.heartbeatSeq,
        sentAtMs: this.clock.nowMs(),
        capacityMib: this.store.capacityMib,
        allocatedMib: this.store.allocatedMib,
        volumeCount: this.store.volumeCount,
        writable: problem === null,
        problem: problem ?? "",
      });
    };
    beat();
    this.heartbeatTimer = this.clock.every(this.heartbeatIntervalMs, beat);
  }

  /** Probes whether the disk takes writes, one probe at a time; the next heartbeat carries the answer. */
  private probeDisk(): void {
    if (this.probing || this.stopSignal.signal.aborted) return;
    this.probing = true;
    void this.store.probeDisk().finally(() => (this.probing = false));
  }

  /** Beats at the controller's interval from now on (the node and the controller must agree). */
  private adoptHeartbeatInterval(intervalMs: number): void {
    if (intervalMs <= 0 || intervalMs === this.heartbeatIntervalMs || this.heartbeatTimer === null) return;
    this.heartbeatIntervalMs = Math.min(Math.max(intervalMs, heartbeatIntervalMsMin), heartbeatIntervalMsMax);
    this.heartbeatTimer.cancel();
    this.startHeartbeats();
  }

  /**
   * Registers with the controller, retrying with capped, jittered exponential
   * backoff until it succeeds or the node stops. It never throws: every
   * failure is logged and retried.
   */
  private async register(): Promise<void> {
    if (this.registering) return;
    this.registering = true;
    const backoffMsMin = this.options.registerBackoffMsMin ?? registerBackoffMsMinDefault;
    const backoffMsMax = this.options.registerBackoffMsMax ?? registerBackoffMsMaxDefault;
    const timeoutMs = this.options.registerTimeoutMs ?? registerTimeoutMsDefault;
    const signal = this.stopSignal.signal;
    let backoffMs = backoffMsMin;
    try {
      for (let attempt = 1; !signal.aborted; attempt += 1) {
        try {
          const request: v1.RegisterSanNodeRequest.$Properties = {
            nodeId: this.nodeId,
            capacityMib: this.store.capacityMib,
            blockSizeBytes: this.store.blockSizeBytes,
            bootId: this.bootId,
          };
          const response = await this.bus.call(storageService.RegisterSanNode, request, { scopeId: this.nodeId, timeoutMs });
          if (signal.aborted) return;
          this.registeredAtMs = this.clock.nowMs();
          this.adoptHeartbeatInterval(response.heartbeatIntervalMs);
          this.logger.info({ attempt, connected: response.node?.connected }, "registered with the controller");
          return;
        } catch (err) {
          if (signal.aborted) return;
          // Half fixed, half random, so nodes restarted together do not retry in step.
          const delayMs = Math.round(backoffMs / 2 + (this.options.random() * backoffMs) / 2);
          this.logger.warn({ attempt, err: String(err), retryInMs: delayMs }, "registration failed; retrying");
          backoffMs = Math.min(backoffMs * 2, backoffMsMax);
          await this.clock.sleep(delayMs, signal);
        }
      }
    } finally {
      this.registering = false;
    }
  }
}

/** @throws SimdcError INVALID_ARGUMENT for an id that is too long, or empty when required. */
function checkIncarnation(field: string, value: string, required: boolean): string {
  if ((required && !value) || value.length > incarnationLengthMax) {
    throw invalidArgument(`${field} must be ${required ? "1" : "0"}-${incarnationLengthMax} characters`);
  }
  return value;
}
