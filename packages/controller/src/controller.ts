// The controller process's role: loads desired state from KV, serves the
// public API, follows host and SAN heartbeats, and runs the VM reconciler.
// It talks to hosts and SAN nodes only over the bus.

import type { Bus, RunningRole } from "@simdc/bus";
import { isValidName, type Clock, type Logger } from "@simdc/common";
import { simdc } from "@simdc/proto";
import { computeEndpoints } from "./api/compute-api.js";
import { hostEndpoints } from "./api/host-api.js";
import { storageEndpoints } from "./api/storage-api.js";
import { EventPublisher } from "./events.js";
import { VmReconciler } from "./reconcile/vm-reconciler.js";
import { hostKind, MemberRegistry, sanNodeKind } from "./registry/member-registry.js";
import type { ControllerConfig } from "./settings.js";
import type { ControllerState } from "./state.js";
import { DesiredStore } from "./store/desired-store.js";
import { vmKind, volumeKind } from "./store/kinds.js";
import { ObservedVms } from "./store/observed-vms.js";

import v1 = simdc.v1;

export class Controller implements RunningRole {
  private readonly timers: NodeJS.Timeout[] = [];

  private constructor(private readonly state: ControllerState) {}

  /** Loads state, starts serving and starts the loops. */
  static async start(bus: Bus, config: ControllerConfig, clock: Clock, logger: Logger): Promise<Controller> {
    const events = new EventPublisher(bus, clock, config.controllerId);
    const policy = { heartbeatIntervalMs: config.heartbeatIntervalMs, heartbeatMissesMax: config.heartbeatMissesMax };
    const registryOptions = { replicas: config.kvReplicas, policy, clock, events, logger };
    const storeOptions = { replicas: config.kvReplicas, logger };
    const [hosts, sanNodes, vms, volumes] = await Promise.all([
      MemberRegistry.open(bus, hostKind, registryOptions),
      MemberRegistry.open(bus, sanNodeKind, registryOptions),
      DesiredStore.open(bus, vmKind, storeOptions),
      DesiredStore.open(bus, volumeKind, storeOptions),
    ]);
    const observed = new ObservedVms();
    const reconciler = new VmReconciler(bus, vms, observed, hosts, logger);
    const state: ControllerState = {
      bus,
      clock,
      logger,
      events,
      ratios: { cpu: config.cpuOvercommit, memory: config.memoryOvercommit },
      heartbeatIntervalMs: config.heartbeatIntervalMs,
      heartbeatMissesMax: config.heartbeatMissesMax,
      hosts,
      sanNodes,
      vms,
      volumes,
      observed,
      reconciler,
    };
    const controller = new Controller(state);
    controller.followHeartbeats();
    await bus.serve({ role: "controller", description: "simdc control plane: compute, hosts, storage" }, [
      ...hostEndpoints(state),
      ...computeEndpoints(state),
      ...storageEndpoints(state),
    ]);
    controller.startLoops(config);
    for (const id of vms.ids()) reconciler.enqueue(id);
    logger.info({ hosts: [...hosts.all()].length, vms: vms.size, volumes: volumes.size }, "desired state loaded");
    return controller;
  }

  private followHeartbeats(): void {
    const { bus, hosts, sanNodes, observed, reconciler, logger } = this.state;
    bus.subscribe(bus.subjects.event("host", "*", "heartbeat"), v1.HostHeartbeat, async (beat) => {
      if (!isValidName(beat.hostId) || !hosts.get(beat.hostId)) return;
      const transition = await hosts.heartbeat(beat.hostId, beat.bootId);
      // Every host beats every interval with all its VMs, so this loop is hot:
      // it keeps the decoded statuses (a host speaks only for itself) rather than copying them.
      const reported: v1.VmStatus[] = [];
      for (const status of beat.vms as v1.VmStatus[]) {
        if (!isValidName(status.vmId)) continue;
        status.hostId = beat.hostId;
        reported.push(status);
      }
      const gone = observed.replaceHost(beat.hostId, reported);
      if (transition) reconciler.resyncHost(beat.hostId);
      reconciler.onHeartbeat(beat.hostId, reported, gone);
    });
    bus.subscribe(bus.subjects.event("vm", "*", "status"), v1.VmStatus, (status) => {
      if (!isValidName(status.vmId) || !isValidName(status.hostId)) return;
      observed.record(status);
    });
    bus.subscribe(bus.subjects.event("san", "*", "heartbeat"), v1.SanNodeHeartbeat, async (beat) => {
      if (!isValidName(beat.nodeId)) return;
      await sanNodes.heartbeat(beat.nodeId, beat.bootId);
    });
    logger.debug("following heartbeats");
  }

  private startLoops(config: ControllerConfig): void {
    const { hosts, sanNodes, reconciler, logger } = this.state;
    const sweepMs = Math.max(25, Math.floor(config.heartbeatIntervalMs / 2));
    this.every(sweepMs, async () => {
      for (const t of await hosts.sweep()) reconciler.resyncHost(t.id);
      await sanNodes.sweep();
    });
    this.every(config.resyncIntervalMs, () => reconciler.resyncUnrealized());
    logger.debug({ sweepMs }, "loops started");
  }

  private every(intervalMs: number, tick: () => void | Promise<void>): void {
    let busy = false;
    const timer = setInterval(() => {
      if (busy) return;
      busy = true;
      Promise.resolve()
        .then(tick)
        .catch((err: unknown) => this.state.logger.error({ err }, "periodic task failed"))
        .finally(() => (busy = false));
    }, intervalMs);
    this.timers.push(timer);
  }

  health() {
    const { hosts, vms, reconciler } = this.state;
    const all = [...hosts.all()];
    return {
      healthy: true,
      details: {
        hosts: all.length,
        hostsConnected: all.filter((h) => hosts.isConnected(h.id)).length,
        vms: vms.size,
        reconcileQueue: reconciler.queueDepth,
      },
    };
  }

  async stop(): Promise<void> {
    for (const timer of this.timers) clearInterval(timer);
    this.state.reconciler.stop();
  }
}
