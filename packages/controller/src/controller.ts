// The controller process's role. Every controller follows the stored state
// (KV) and listens to the hosts, so a standby knows everything the active one
// knows; the one holding the lease also serves the API, writes, compiles host
// documents and reconciles volumes. It talks to hosts and SAN nodes only
// over the bus.

import { endpoint, type Bus, type MessageType, type RunningRole } from "@simdc/bus";
import { Rng, uniqueId, unavailable, type Clock, type HealthReport, type Logger, type Timer } from "@simdc/common";
import { simdc } from "@simdc/proto";
import { computeEndpoints } from "./api/compute-api.js";
import { controllerEndpoints } from "./api/controller-api.js";
import { hostEndpoints } from "./api/host-api.js";
import { storageEndpoints } from "./api/storage-api.js";
import { networkEndpoints } from "./api/network-api.js";
import { Networks } from "./network/networks.js";
import { SecurityGroups } from "./network/security-groups.js";
import { ExternalEndpoints } from "./network/external.js";
import { Routers } from "./network/routers.js";
import { LogicalPorts } from "./network/logical-ports.js";
import { compileHostNetwork, type NetworkView } from "./compile/host-network.js";
import { GroupDocuments } from "./compile/group-documents.js";
import { HostDocuments, type NetworkSections } from "./compile/host-documents.js";
import { CrashPoints, parseCrashPoints } from "./crash-points.js";
import { EventPublisher } from "./events.js";
import { controllerBucket, datacenterKey, Lease } from "./lease/lease.js";
import { HostFollower } from "./observe/host-follower.js";
import { ObservedVms } from "./observe/observed-vms.js";
import { HostRanking } from "./placement/host-ranking.js";
import { measuredOf } from "./placement/placement.js";
import { purgeTombstones } from "./store/tombstones.js";
import type { PlacementHost } from "./placement/placement.js";
import { VolumeReconciler } from "./reconcile/volume-reconciler.js";
import { hostKind, MemberRegistry, sanNodeKind } from "./registry/member-registry.js";
import type { ControllerConfig } from "./settings.js";
import type { ControllerState } from "./state.js";
import { DesiredStore } from "./store/desired-store.js";
import { FencedStore, type LateWrites } from "./store/fenced-store.js";
import { vmKind, volumeKind } from "./store/kinds.js";
import { RequestLog, requestMemoryMs } from "./store/request-log.js";
import { HostSync } from "./sync/host-sync.js";

import v1 = simdc.v1;

/** Revisions kept per VM, volume, host and SAN node record, so a deposed controller's late writes can be undone. */
export const recordHistory = 4;

export class Controller implements RunningRole {
  private readonly timers: Timer[] = [];
  private api: Awaited<ReturnType<Bus["serve"]>> | null = null;
  private readonly stores: FencedStore<unknown>[];

  private constructor(
    private readonly state: ControllerState,
    private readonly follower: HostFollower,
    stores: FencedStore<any>[],
  ) {
    this.stores = stores;
  }

  /** The controller's own figures, read when Prometheus scrapes. */
  private static measure(state: ControllerState): void {
    const { metrics } = state.bus;
    const byState = (kind: string, registry: { all(): Iterable<{ id: string }>; isConnected(id: string): boolean }): [{ kind: string; state: string }, number][] => {
      let connected = 0;
      let total = 0;
      for (const member of registry.all()) {
        total += 1;
        if (registry.isConnected(member.id)) connected += 1;
      }
      return [
        [{ kind, state: "connected" }, connected],
        [{ kind, state: "disconnected" }, total - connected],
      ];
    };
    metrics.gaugeBy("simdc_members", "Registered hosts and SAN nodes, connected or not", ["kind", "state"], () => [...byState("host", state.hosts), ...byState("san", state.sanNodes)]);
    metrics.gauge("simdc_documents_pending", "Host documents waiting to be written (the compile queue)", () => state.documents.pendingCount());
    metrics.gauge("simdc_messages_refused", "Messages refused since start (stale boots, forged ids, generations never assigned)", () => state.counters.refused);
    metrics.gauge("simdc_controller_active", "1 while this controller holds the lease", () => (state.lease.isActive ? 1 : 0));
    metrics.gauge("simdc_lease_epoch", "The lease epoch this controller last saw", () => state.lease.epoch);
  }

  /** Loads and follows the stored state, listens to the hosts, and competes for the lease. */
  static async start(bus: Bus, config: ControllerConfig, clock: Clock, logger: Logger, seed: number): Promise<Controller> {
    const lease = await Lease.open(bus, config.kvReplicas, { controllerId: config.controllerId, bootId: uniqueId(), ttlMs: config.leaseTtlMs, clock, logger });
    // Events are notifications and state lives in KV, so a datacenter runs
    // without its history; but a user watching `simdc events` wants one.
    await bus.ensureEventHistory(config.kvReplicas).catch((err: unknown) => logger.warn({ err }, "no event history"));
    const events = new EventPublisher(bus, clock, config.controllerId);
    const fenced = { epochOf: () => lease.epoch };
    const undo = (noun: string): LateWrites => ({
      undo: (key, fromEpoch) =>
        events.publish("controller", config.controllerId, "reverted", v1.EventKind.EVENT_KIND_WRITE_REVERTED, `undid the write of ${noun} ${key} by deposed epoch ${fromEpoch}`),
    });
    const open = async <T>(name: string, type: MessageType<T>, noun: string, late: LateWrites, extra: object = {}) =>
      FencedStore.open<T>(await bus.bucket(name, type, { replicas: config.kvReplicas, fenced, ...extra }), noun, lease, logger, late);
    const [vmRecords, volumeRecords, hostRecords, sanRecords, docRecords, requestRecords, networkRecords, securityGroupRecords, endpointRecords, routerRecords, groupDocRecords] = await Promise.all([
      open<v1.VmRecord>("vms", v1.VmRecord, "vm", undo("vm"), { history: recordHistory }),
      open<v1.VolumeRecord>("volumes", v1.VolumeRecord, "volume", undo("volume"), { history: recordHistory }),
      open<v1.Host>("hosts", v1.Host, "host", undo("host"), { history: recordHistory }),
      open<v1.SanNode>("san-nodes", v1.SanNode, "SAN node", undo("SAN node"), { history: recordHistory }),
      open<v1.HostDocument>("docs", v1.HostDocument, "host document", "accept"),
      open<v1.RequestRecord>("requests", v1.RequestRecord, "request", undo("request"), { history: 2, ttlMs: requestMemoryMs }),
      open<v1.NetworkRecord>("networks", v1.NetworkRecord, "network", undo("network"), { history: recordHistory }),
      open<v1.SecurityGroupRecord>("security-groups", v1.SecurityGroupRecord, "security group", undo("security group"), { history: recordHistory }),
      open<v1.ExternalEndpointRecord>("external-endpoints", v1.ExternalEndpointRecord, "external endpoint", undo("external endpoint"), { history: recordHistory }),
      open<v1.RouterRecord>("routers", v1.RouterRecord, "router", undo("router"), { history: recordHistory }),
      open<v1.GroupDocument>("group-docs", v1.GroupDocument, "group document", "accept"),
    ]);
    const policy = { heartbeatIntervalMs: config.heartbeatIntervalMs, heartbeatMissesMax: config.heartbeatMissesMax };
    const registryOptions = { policy, clock, events, logger, lease };
    const hosts = new MemberRegistry(hostKind, hostRecords, registryOptions);
    const sanNodes = new MemberRegistry(sanNodeKind, sanRecords, registryOptions);
    const vms = new DesiredStore(vmRecords, vmKind);
    const volumes = new DesiredStore(volumeRecords, volumeKind);
    const ratios = { cpu: config.cpuOvercommit, memory: config.memoryOvercommit };
    const measured = new Map<string, v1.IHostStats>();
    const snapshot = (hostId: string): PlacementHost | undefined => {
      const host = hosts.get(hostId);
      if (!host) return undefined;
      const allocation = vms.allocation(hostId);
      return {
        id: host.id,
        connected: hosts.isConnected(host.id),
        pcpus: host.capacity?.pcpus ?? 0,
        memoryMib: host.capacity?.memoryMib ?? 0,
        allocatedVcpus: allocation.vcpus,
        allocatedMemoryMib: allocation.memoryMib,
        vmCount: allocation.vmCount,
        vmsMax: host.capacity?.vmsMax ?? 0,
        coreMhz: host.capacity?.coreMhz ?? 0,
        threadsPerCore: host.capacity?.threadsPerCore ?? 1,
        reservedMhz: allocation.reservedMhz,
        reservedMib: allocation.reservedMib,
        ...measuredOf(measured.get(host.id)),
      };
    };
    const ranking = new HostRanking(snapshot, function* () {
      for (const host of hosts.all()) yield snapshot(host.id)!;
    }, ratios);
    const crash = new CrashPoints(parseCrashPoints(config.crashAt ?? ""), logger);
    const networks = new Networks(networkRecords);
    const routers = new Routers(routerRecords);
    const ports = new LogicalPorts(vms, (networkId) => routers.of(networkId)?.networks ?? []);
    const securityGroups = new SecurityGroups(securityGroupRecords);
    const endpoints = new ExternalEndpoints(endpointRecords, hostRecords);
    const networkView: NetworkView = {
      network: (id: string) => networks.get(id)?.network ?? undefined,
      networks: () => networks.all(),
      endpoints: () => endpoints.all(),
      uplinkOf: (id: string) => hosts.get(id)?.uplinkIp ?? "",
      routerOf: (id: string) => routers.of(id),
      portsOnHost: (id: string) => ports.onHost(id),
      portsOnNetwork: (id: string) => ports.onNetwork(id),
      agentOf: (id: string) => hosts.get(id)?.agentId,
    };
    const compileNetwork = (hostId: string, allProactive = false) => compileHostNetwork(hostId, networkView, { allProactive });
    const sections: NetworkSections = {
      sectionOf: (hostId) => compileNetwork(hostId),
      onHostsChanged: (listener) => {
        // The hosts that play endpoints route to every routed network's VMs: any port change may concern them.
        const withEndpointHosts = (hostIds: Set<string>) => {
          for (const e of endpoints.all()) hostIds.add(e.hostId);
          return hostIds;
        };
        ports.onHostsChanged((hostIds) => listener(withEndpointHosts(hostIds)));
        routers.onChanged((networkIds) => {
          const hostIds = new Set<string>();
          for (const n of networkIds) for (const h of ports.hostsOn(n)) hostIds.add(h);
          listener(withEndpointHosts(hostIds));
        });
        endpoints.onChanged((hostIds) => {
          for (const n of networks.all()) if (n.mode !== v1.NetworkMode.NETWORK_MODE_HOST_ONLY) for (const h of ports.hostsOn(n.id)) hostIds.add(h);
          listener(withEndpointHosts(hostIds));
        });
      },
    };
    const documents = new HostDocuments(bus, docRecords, vms, volumes, hosts, lease, logger, clock, crash, config.documentChunkBytes, sections);
    const groupDocuments = new GroupDocuments(groupDocRecords, securityGroups, documents, lease, logger, clock);
    const sync = new HostSync(documents, groupDocuments, { groupsOnHost: (h) => ports.groupsOnHost(h), hostsInGroup: (g) => ports.hostsInGroup(g) }, hosts, clock);
    const state: ControllerState = {
      controllerId: config.controllerId,
      bus,
      clock,
      logger,
      events,
      ratios,
      heartbeatIntervalMs: config.heartbeatIntervalMs,
      heartbeatMissesMax: config.heartbeatMissesMax,
      metricsIntervalMs: config.metricsIntervalMs,
      seed,
      lease,
      stateId: "",
      hosts,
      sanNodes,
      vms,
      volumes,
      requests: new RequestLog(requestRecords, clock),
      documents,
      groupDocuments,
      sync,
      observed: new ObservedVms(),
      ranking,
      measured,
      volumeReconciler: new VolumeReconciler({
        bus,
        volumes,
        sanNodes,
        lease,
        events,
        clock,
        logger,
        stateId: () => state.stateId,
        inventoryIntervalMs: config.inventoryIntervalMs,
        crash,
      }),
      counters: { refused: 0, packetIns: 0, flowMods: 0 },
      networks,
      securityGroups,
      endpoints,
      routers,
      ports,
      compileNetwork,
      macRandom: new Rng(seed, "macs"),
      crash,
    };
    Controller.measure(state);
    for (const host of hosts.all()) ranking.update(host.id);
    vms.onAllocationChanged((hostId) => ranking.update(hostId));
    hostRecords.onChange((hostId) => {
      ranking.update(hostId);
      sync.update(hostId);
    });
    const stores = [vmRecords, volumeRecords, hostRecords, sanRecords, docRecords, requestRecords, networkRecords, securityGroupRecords, endpointRecords, routerRecords, groupDocRecords];
    const controller = new Controller(state, new HostFollower(state), stores);
    // Followed, not read once: a standby that started before the state existed, or a store made anew, learns its id.
    await (await bus.bucket(controllerBucket, v1.DatacenterState)).watchKey(datacenterKey, (value) => {
      if (value?.stateId) state.stateId = value.stateId;
    });
    controller.follower.start();
    bus.onConnectionChange((connected) => {
      hosts.connectionChanged(connected);
      sanNodes.connectionChanged(connected);
    });
    lease.onActive((epoch) => controller.activate(epoch));
    lease.onDeposed((reason) => controller.deactivate(reason));
    controller.startLoops(config);
    lease.start();
    logger.info({ hosts: hosts.size, vms: vms.size, volumes: volumes.size, stateId: state.stateId || null }, "stored state loaded; following it");
    return controller;
  }

  /** Takes over: fences the stores, continues the documents, reconciles, and serves the API. */
  private async activate(epoch: number): Promise<void> {
    const { state } = this;
    const started = state.clock.nowMs();
    await Promise.all(this.stores.map((store) => store.activate(epoch)));
    // Each term draws MACs from its own seeded sequence: one that began again from the seed would
    // replay every MAC the earlier terms gave, and a datacenter with many NICs would find none free.
    state.macRandom = new Rng(state.seed, `macs/${epoch}`);
    state.stateId = await this.ensureDatacenterState();
    state.documents.activate(state.stateId);
    state.groupDocuments.activate(state.stateId);
    state.volumeReconciler.activate();
    const endpoints = [...hostEndpoints(state), ...computeEndpoints(state), ...storageEndpoints(state), ...networkEndpoints(state), ...controllerEndpoints(state, () => this.writesReverted())];
    // Reads too: a controller deposed while paused must not answer from stale state before it learns so.
    const guarded = endpoints.map((ep) =>
      endpoint(ep.method, (request, msg) => {
        state.lease.requireFresh();
        return ep.handle(request, msg);
      }),
    );
    this.api = await state.bus.serve({ role: "controller", description: "simdc control plane: compute, hosts, storage, controller status" }, guarded);
    await state.bus.flush();
    const message = `controller ${state.controllerId} is active at epoch ${epoch}`;
    state.logger.warn({ epoch, takeoverMs: state.clock.nowMs() - started, stateId: state.stateId }, "serving as the active controller");
    state.events.publish("controller", state.controllerId, "active", v1.EventKind.EVENT_KIND_CONTROLLER_ACTIVE, message);
  }

  private deactivate(reason: string): void {
    const { state } = this;
    if (!this.api) return;
    const err = unavailable(`this controller was deposed (${reason}); retry`);
    for (const store of this.stores) store.deactivate();
    state.documents.deactivate(err);
    state.groupDocuments.deactivate();
    state.sync.abandon(err);
    state.volumeReconciler.deactivate();
    void this.api?.stop();
    this.api = null;
    state.bus.publish(state.bus.subjects.event("controller", state.controllerId, "deposed"), v1.Event, {
      kind: v1.EventKind.EVENT_KIND_CONTROLLER_DEPOSED,
      objectId: state.controllerId,
      timeMs: state.clock.nowMs(),
      message: `controller ${state.controllerId} stopped serving: ${reason}`,
      source: state.controllerId,
    });
  }

  /** The id of the stored state, created by the first controller that finds none. */
  private async ensureDatacenterState(): Promise<string> {
    const bucket = await this.state.bus.bucket(controllerBucket, v1.DatacenterState);
    const stored = await bucket.get(datacenterKey);
    if (stored) return stored.value.stateId;
    const created = v1.DatacenterState.create({ stateId: uniqueId(), createdAtMs: this.state.clock.nowMs() });
    try {
      await bucket.create(datacenterKey, created);
      this.state.logger.info({ stateId: created.stateId }, "no stored state: starting a new one");
      return created.stateId;
    } catch {
      // Another controller created it first; use theirs.
      return (await bucket.get(datacenterKey))?.value.stateId ?? created.stateId;
    }
  }

  private writesReverted(): number {
    return this.stores.reduce((sum, store) => sum + store.reverted, 0);
  }

  private startLoops(config: ControllerConfig): void {
    const { state } = this;
    const sweepMs = Math.max(25, Math.floor(config.heartbeatIntervalMs / 2));
    this.every(sweepMs, async () => {
      for (const t of await state.hosts.sweep()) {
        state.ranking.update(t.id);
        state.sync.update(t.id);
      }
      for (const t of await state.sanNodes.sweep()) state.ranking.update(t.id);
    });
    this.every(Math.min(60_000, requestMemoryMs / 4), () => this.purgeTombstones());
  }

  /** Tombstones outlive the request ids that may ask about them, then go. */
  private async purgeTombstones(): Promise<void> {
    const { state } = this;
    if (!state.lease.isActive) return;
    const cutoff = state.clock.nowMs() - requestMemoryMs;
    for (const records of [state.vms.records, state.volumes.records] as FencedStore<v1.VmRecord | v1.VolumeRecord>[]) {
      await purgeTombstones(records, (r) => r.deleted, cutoff, state.logger);
    }
    for (const kind of [state.networks, state.securityGroups, state.routers, state.endpoints]) await kind.tombstones.purge(cutoff, state.logger);
  }

  private every(intervalMs: number, tick: () => void | Promise<void>): void {
    let busy = false;
    this.timers.push(
      this.state.clock.every(intervalMs, () => {
        if (busy) return;
        busy = true;
        Promise.resolve()
          .then(tick)
          .catch((err: unknown) => this.state.logger.error({ err }, "periodic task failed"))
          .finally(() => (busy = false));
      }),
    );
  }

  health(): HealthReport {
    const { state } = this;
    let connected = 0;
    for (const host of state.hosts.all()) if (state.hosts.isConnected(host.id)) connected += 1;
    return {
      healthy: true,
      details: {
        role: state.lease.isActive ? "active" : "standby",
        epoch: state.lease.current?.epoch ?? 0,
        hosts: state.hosts.size,
        hostsConnected: connected,
        vms: state.vms.size,
        configGeneration: state.documents.desiredGeneration,
        realizedGeneration: state.sync.realizedGeneration,
      },
    };
  }

  async stop(): Promise<void> {
    for (const timer of this.timers) timer.cancel();
    this.state.lease.stop();
    this.deactivate("the controller is stopping");
  }
}
