// A host-agent process's role: it runs its simulated hosts and gives them
// what they share, so the process's cost grows with its hosts only where it
// must. One NATS service answers for all of them (subjects carry the host
// id, and fault rules judge each request by it); one KV watch brings every
// host's document; one timer beats each host in its slot of the interval,
// each heartbeat its own message, so a fault rule on one host cuts exactly
// that host. It holds no VM logic of its own.

import { barrierKey, endpoint, hostAgentService, hostScope, Subjects, type Bus, type Counter, type RunningRole } from "@simdc/bus";
import { checkName, checkRange, invalidArgument, notFound, Rng, SimdcError, type Clock, type HealthReport, type Logger, type Timer } from "@simdc/common";
import { simdc } from "@simdc/proto";
import type { AgentConfig } from "./config.js";
import { SimHost } from "./host.js";
import { heartbeatSlotsMax } from "./limits.js";
import { checkDesiredVm, checkPlan } from "./validate.js";
import { pingCountMax } from "./network/datapath.js";
import { Underlay } from "./network/underlay.js";
import { SecurityGroupBook } from "./network/groups.js";
import { BucketFollower } from "./follow-bucket.js";
import { parseIp } from "@simdc/vswitch";

import v1 = simdc.v1;

/** Connections a dump-conntrack reply lists at most: the reply must fit a NATS message. */
const conntrackDumpMax = 2_000;

/** The hypervisors' timer fires at most this often in real ms, whatever the time scale. */
const hypervisorTickMsMin = 20;
/** Refused documents an agent reports as events per host and minute, at most (all are counted and logged). */
const refusalEventsPerHostMinute = 1;

export interface HostAgentOptions {
  bus: Bus;
  logger: Logger;
  clock: Clock;
  /** The process's random stream; each host derives its own. */
  rng: Rng;
  config: AgentConfig;
  /** VMs each host may hold; defaults to vmsPerHostMax. */
  vmsPerHostMax?: number;
}

export class HostAgent implements RunningRole {
  private readonly hosts = new Map<string, SimHost>();
  /** Each host's chunks as last seen, by chunk index. */
  private readonly chunks = new Map<string, Map<number, v1.HostDocument>>();
  private readonly slots: SimHost[][];
  private slot = 0;
  private beats = 0;
  private heartbeatIntervalMs: number;
  private metricsIntervalMs = 0;
  private beatTimer: Timer | null = null;
  /** One timer steps every host's hypervisor (a thousand timers would cost more than the steps). */
  private hypervisorTimer: Timer | null = null;
  private readonly documents: BucketFollower<v1.HostDocument>;
  private readonly groupDocuments: BucketFollower<v1.GroupDocument>;
  /** The security groups' documents, which every host expands for its guarded NICs. */
  private readonly groups = new SecurityGroupBook();
  /** Hosts that realized something this turn: reported together at its end, one message for many. */
  private readonly realizedNow = new Set<SimHost>();
  private service: Awaited<ReturnType<Bus["serve"]>> | null = null;
  private refused = 0;
  private readonly lastRefusalEventMs = new Map<string, number>();
  private stopped = false;

  private readonly beatsSent: Counter;
  private readonly underlay: Underlay;

  private constructor(private readonly options: HostAgentOptions) {
    const { config } = options;
    const { metrics } = options.bus;
    this.beatsSent = metrics.counter("simdc_heartbeats_sent_total", "Host heartbeats this agent sent (each host's beat counts once)");
    metrics.gauge("simdc_hosts_registered", "Hosts of this agent registered with the controller", () => this.health().details["hostsRegistered"] as number);
    metrics.gauge("simdc_vms", "VMs the hosts of this agent hold", () => this.health().details["vms"] as number);
    this.heartbeatIntervalMs = config.heartbeatIntervalMs;
    this.underlay = new Underlay(options.bus, config.agentId, (hostId) => this.hosts.get(hostId)?.datapath, options.logger);
    const slotCount = Math.min(heartbeatSlotsMax, config.hostIds.length);
    this.slots = Array.from({ length: slotCount }, () => []);
    config.hostIds.forEach((hostId, index) => {
      const host = new SimHost({
        bus: options.bus,
        logger: options.logger,
        clock: options.clock,
        agentId: config.agentId,
        hostId,
        capacity: config.capacity,
        timing: config.timing,
        rng: options.rng.derive(hostId),
        hypervisor: config.hypervisor,
        ...(options.vmsPerHostMax !== undefined ? { vmsMax: options.vmsPerHostMax } : {}),
        onIntervals: (heartbeatMs, metricsMs) => this.adoptIntervals(heartbeatMs, metricsMs),
        onRealized: (realized) => this.publishBeats([realized]),
        onGroupsRealized: (realized) => this.reportRealized(realized),
        groups: this.groups,
        beatNow: (registered) => this.publishBeats([registered]),
        tunnel: (fromHost, tunnel, headers, payload, bytes) => this.underlay.send(fromHost, tunnel, headers, payload, bytes),
        failMode: config.failMode,
        inactivityProbeMs: config.inactivityProbeMs,
        uplinks: config.uplinks,
      });
      this.hosts.set(hostId, host);
      this.slots[index % slotCount]!.push(host);
    });
    options.bus.declareOwned(config.hostIds);
    const following = { bus: options.bus, clock: options.clock, logger: options.logger };
    this.documents = new BucketFollower({
      ...following,
      bucket: "docs",
      type: v1.HostDocument,
      what: "the host documents",
      key: `${config.agentId}.>`,
      onStart: () => this.chunks.clear(),
      onChange: (key, value) => this.onChunk(key, value),
      onCorrupt: (key, err) => {
        const hostId = key.split(".")[1] ?? "";
        if (this.hosts.has(hostId)) this.refuse(hostId, `a document chunk that does not decode: ${String(err)}`);
      },
    });
    this.groupDocuments = new BucketFollower({
      ...following,
      bucket: "group-docs",
      type: v1.GroupDocument,
      what: "the security groups' documents",
      onStart: () => undefined,
      onChange: (key, value) => this.onGroup(key, value),
      onCorrupt: (key, err) => this.refuseGroup(key, `it does not decode: ${String(err)}`),
    });
  }

  /**
   * Serves the hosts' endpoints, starts following their documents and
   * beating, and starts every host's registration; resolves once the
   * endpoints are served.
   * @throws whatever serving throws (a NATS failure).
   */
  static async start(options: HostAgentOptions): Promise<HostAgent> {
    const agent = new HostAgent(options);
    const { bus, config } = options;
    agent.service = await bus.serve(
      {
        role: "host-agent",
        scopeId: hostScope(config.agentId, "*"),
        owner: (subject) => Subjects.token(subject, bus.subjects.hostIdToken),
        description: `simulated hosts of ${config.agentId}`,
      },
      [
        endpoint(hostAgentService.GetHostState, (_req, msg) => agent.hostOf(msg.subject).state()),
        endpoint(hostAgentService.Reregister, (_req, msg) => {
          agent.hostOf(msg.subject).reregister();
          return {};
        }),
        endpoint(hostAgentService.StartStrayVm, (req, msg) => {
          if (!config.testFaults) throw new SimdcError("PERMISSION_DENIED", `${config.agentId} serves no test faults (start it with --test-faults)`);
          if (!req.vm) throw invalidArgument("StartStrayVm needs the VM");
          return { status: agent.hostOf(msg.subject).startStray(checkDesiredVm(v1.DesiredVm.create(req.vm))) };
        }),
        endpoint(hostAgentService.DumpFlows, (req, msg) => {
          const host = agent.hostOf(msg.subject);
          const table = checkRange("table", req.table, -1, 254);
          return { hostId: host.id, flows: host.datapath.dumpFlows(table), realizedGeneration: host.realizedGeneration, controllerTables: host.datapath.network.controllerTables };
        }),
        endpoint(hostAgentService.SetNic, (req, msg) => {
          const dp = agent.hostOf(msg.subject).datapath;
          const change = {
            ...(req.bandwidthMbps ? { bandwidthMbps: checkRange("bandwidth_mbps", req.bandwidthMbps, 1, 400_000) } : {}),
            ...(req.queueBytes ? { queueBytes: checkRange("queue_bytes", req.queueBytes, 1_500, 1 << 30) } : {}),
          };
          const nic = dp.setNic(checkName("nic", req.nic), change, checkRange("duration_ms", req.durationMs, 0, 86_400_000));
          return { nic: dp.nicStats().find((n) => n.name === nic.spec.name) };
        }),
        endpoint(hostAgentService.DumpConntrack, (_req, msg) => {
          const host = agent.hostOf(msg.subject);
          const stats = host.datapath.vswitch.conntrackStats();
          const connections = host.datapath.vswitch.dumpConntrack();
          return {
            hostId: host.id,
            connections: connections.slice(0, conntrackDumpMax),
            connectionsTotal: connections.length,
            commits: stats.commits,
            fullDrops: stats.fullDrops,
            insertFailed: stats.insertFailed,
            expired: stats.expired,
          };
        }),
        endpoint(hostAgentService.DumpPorts, (_req, msg) => {
          const host = agent.hostOf(msg.subject);
          const dp = host.datapath;
          return {
            hostId: host.id,
            ports: dp.dumpPorts(),
            cacheHits: dp.vswitch.cacheHits,
            cacheMisses: dp.vswitch.cacheMisses,
            packetIns: dp.packetIns,
            failMode: dp.link.mode,
            controllerConnected: dp.link.connected,
            failOpen: dp.link.failOpen,
            inactivityProbeMs: config.inactivityProbeMs,
            underlayRefused: dp.underlayRefused,
            mtuDrops: dp.mtuDrops,
            underlayThrottled: dp.underlayThrottled,
            centralPacketIns: dp.centralPacketIns,
            packetInsDropped: dp.packetInsDropped,
            flowMods: dp.flowMods,
            nics: dp.nicStats(),
          };
        }),
        endpoint(hostAgentService.ModFlows, (req, msg) => ({ changed: agent.hostOf(msg.subject).datapath.modFlows(req.flows, req.delete, req.force) })),
        endpoint(hostAgentService.Ping, (req, msg) => {
          const host = agent.hostOf(msg.subject);
          const count = checkRange("count", req.count || 1, 1, pingCountMax);
          const intervalMs = checkRange("interval_ms", req.intervalMs || 1_000, 10, 60_000);
          const timeoutMs = checkRange("timeout_ms", req.timeoutMs || 1_000, 1, 60_000);
          return host.datapath.ping(checkName("vm_id", req.vmId), parseIp(req.targetIp), count, intervalMs, timeoutMs);
        }),
        endpoint(hostAgentService.StartTraffic, (req, msg) => {
          const host = agent.hostOf(msg.subject);
          const bytes = checkRange("size_bytes", req.sizeBytes || 1_000, 64, 1_500);
          return host.datapath.startTraffic({
            vmId: checkName("vm_id", req.vmId),
            target: parseIp(req.targetIp),
            kind: req.kind || v1.TrafficKind.TRAFFIC_KIND_UDP_STREAM,
            ratePps: req.ratePps,
            bytes,
            responseBytes: checkRange("response_bytes", req.responseBytes || bytes, 64, 1_500),
            dstPort: checkRange("dst_port", req.dstPort || 5_001, 1, 65_535),
            durationMs: checkRange("duration_ms", req.durationMs, 0, 86_400_000),
          });
        }),
        endpoint(hostAgentService.StopTraffic, (req, msg) => {
          const traffic = agent.hostOf(msg.subject).datapath.traffic;
          if (!traffic.stop(req.flowId)) throw notFound(`no traffic flow ${req.flowId} on this host`);
          return { flow: traffic.stats().sending.find((f) => f["flowId"] === req.flowId) };
        }),
        endpoint(hostAgentService.Trace, (req, msg) => {
          const from = req.fromHost ? checkName("from_host", req.fromHost) : "";
          return agent.hostOf(msg.subject).datapath.trace(req.packet, from);
        }),
        endpoint(hostAgentService.GetHostStats, (req, msg) => {
          const host = agent.hostOf(msg.subject);
          const vmId = req.vmId ? checkName("vm_id", req.vmId) : "";
          if (vmId && !host.hypervisor.has(vmId)) throw notFound(`host ${host.id} runs no vm ${vmId}`);
          return {
            hostId: host.id,
            host: host.hypervisor.hostStats(),
            vms: host.hypervisor.vmStats(),
            history: req.history ? [...host.hypervisor.hostHistory()] : [],
            vmHistory: vmId ? host.hypervisor.vmHistory(vmId) : [],
          };
        }),
        endpoint(hostAgentService.SetMemoryPressure, (req, msg) => {
          const host = agent.hostOf(msg.subject);
          host.hypervisor.setPressure(checkRange("pressure_mib", req.pressureMib, 0, config.capacity.memoryMib));
          options.logger.info({ hostId: host.id, pressureMib: req.pressureMib }, "memory pressure set");
          return { hostId: host.id, host: host.hypervisor.hostStats() };
        }),
        endpoint(hostAgentService.TrafficStats, (_req, msg) => {
          const host = agent.hostOf(msg.subject);
          return { hostId: host.id, ...host.datapath.traffic.stats(), nowMs: options.clock.nowMs() };
        }),
      ],
    );
    // The server must have the subscriptions before callers are told the hosts serve.
    await bus.flush();
    agent.underlay.start();
    agent.scheduleBeats();
    // At a high time scale a step's simulated time passes in a fraction of a real
    // millisecond: the timer then fires every hypervisorTickMsMin of real time and
    // steps by whole steps' worth, so the cost follows simulated time, not timers.
    const stepMs = config.hypervisor.stepMs;
    const intervalMs = stepMs * Math.max(1, Math.ceil((options.clock.timeScale * hypervisorTickMsMin) / stepMs));
    agent.hypervisorTimer = options.clock.every(intervalMs, () => {
      for (const host of agent.hosts.values()) host.stepHypervisor(intervalMs);
    });
    // First registrations spread over an interval, so a thousand hosts do not ask the controller at once.
    const spreadMs = config.heartbeatIntervalMs / Math.max(1, agent.hosts.size);
    let index = 0;
    for (const host of agent.hosts.values()) host.start(index++ * spreadMs);
    // The groups first: a host that applies its document before its groups' arrive admits nothing new meanwhile.
    void agent.groupDocuments.start().then(() => agent.documents.start());
    options.logger.info({ hosts: agent.hosts.size }, "hosts started");
    return agent;
  }

  /** The host with this id, for tests and diagnostics. */
  host(hostId: string): SimHost | undefined {
    return this.hosts.get(hostId);
  }

  /** Documents refused (malformed, or from a deposed controller). */
  get documentsRefused(): number {
    return this.refused;
  }

  /** @throws SimdcError NOT_FOUND for a host this agent does not run. */
  private hostOf(subject: string): SimHost {
    const hostId = Subjects.token(subject, this.options.bus.subjects.hostIdToken);
    const host = this.hosts.get(hostId);
    if (!host || !host.alive) throw notFound(`agent ${this.options.config.agentId} runs no host ${hostId}`);
    return host;
  }

  /** A security group's document came, changed or went: the hosts with a NIC in it expand it again. */
  private onGroup(key: string, doc: v1.GroupDocument | null): void {
    // The controller's takeover mark, not a group (it was refused and counted as a malformed group).
    if (key === barrierKey) return;
    if (!doc) this.groups.remove(key);
    else {
      try {
        if (!this.groups.take(key, doc)) return;
      } catch (err) {
        return this.refuseGroup(key, `generation ${doc.generation} is malformed: ${(err as Error).message}`);
      }
    }
    for (const host of this.hosts.values()) host.groupChanged(key);
  }

  /** A group's document is the agent's, not one host's: refused once in the log and the counters. */
  private refuseGroup(groupId: string, what: string): void {
    this.refused += 1;
    this.options.logger.warn({ groupId, refused: this.refused }, `refused the document of security group ${groupId}: ${what}`);
  }

  /** Reports at the end of the turn: a group's change installed by 500 hosts at once is one message. */
  private reportRealized(host: SimHost): void {
    if (this.realizedNow.size === 0) {
      queueMicrotask(() => {
        const hosts = [...this.realizedNow];
        this.realizedNow.clear();
        this.publishBeats(hosts);
      });
    }
    this.realizedNow.add(host);
  }

  private onChunk(key: string, chunk: v1.HostDocument | null): void {
    const [, hostId, indexText, extra] = key.split(".");
    if (extra !== undefined) return;
    const host = hostId ? this.hosts.get(hostId) : undefined;
    // A deleted chunk is no instruction: a host keeps running its last document.
    if (!host || !chunk) return;
    let held = this.chunks.get(host.id);
    if (!held) this.chunks.set(host.id, (held = new Map()));
    held.set(Number(indexText), chunk);
    const count = chunk.chunkCount;
    const parts: v1.HostDocument[] = [];
    for (let i = 0; i < count; i++) {
      const part = held.get(i);
      if (!part || part.generation !== chunk.generation || part.chunkCount !== count || part.hostId !== host.id) return;
      parts.push(part);
    }
    let plan;
    try {
      plan = checkPlan(parts, (vmId) => host.heldVm(vmId));
    } catch (err) {
      return this.refuse(host.id, `a malformed document of generation ${chunk.generation}: ${(err as Error).message}`);
    }
    const refusal = host.applyPlan(plan);
    if (refusal) this.refuse(host.id, `a document of epoch ${plan.epoch} from a deposed controller (it holds epoch ${refusal.heldEpoch})`);
  }

  private refuse(hostId: string, what: string): void {
    const { bus, clock, logger } = this.options;
    this.refused += 1;
    logger.warn({ hostId, refused: this.refused }, `refused ${what}`);
    const now = clock.nowMs();
    if (now - (this.lastRefusalEventMs.get(hostId) ?? -Infinity) < 60_000 / refusalEventsPerHostMinute) return;
    this.lastRefusalEventMs.set(hostId, now);
    bus.publish(
      bus.subjects.event("host", hostId, "refused"),
      v1.Event,
      {
        kind: v1.EventKind.EVENT_KIND_MESSAGE_REFUSED,
        objectId: hostId,
        timeMs: now,
        message: `host ${hostId} refused ${what}`,
        status: { code: v1.ErrorCode.ERROR_CODE_FAILED_PRECONDITION, message: what },
        source: this.options.config.agentId,
      },
      hostId,
    );
  }

  /** The controller names the intervals in every registration reply; all hosts share them. */
  private adoptIntervals(heartbeatIntervalMs: number, metricsIntervalMs: number): void {
    this.metricsIntervalMs = metricsIntervalMs;
    if (heartbeatIntervalMs === this.heartbeatIntervalMs) return;
    this.heartbeatIntervalMs = heartbeatIntervalMs;
    this.scheduleBeats();
  }

  /** One timer for all hosts: each tick beats the next slot's hosts, so every host beats once per interval. */
  private scheduleBeats(): void {
    // Only the beats: the hypervisors step on their own timer, whatever interval the controller names.
    this.beatTimer?.cancel();
    if (this.stopped || this.slots.length === 0) return;
    const tickMs = this.heartbeatIntervalMs / this.slots.length;
    this.beatTimer = this.options.clock.every(tickMs, () => this.tick());
  }

  private tick(): void {
    const hosts = this.slots[this.slot]!;
    this.slot = (this.slot + 1) % this.slots.length;
    if (this.slot === 0) this.beats += 1;
    const metricsEvery = this.metricsIntervalMs > 0 ? Math.max(1, Math.round(this.metricsIntervalMs / this.heartbeatIntervalMs)) : 0;
    const metricsDue = metricsEvery > 0 && this.beats % metricsEvery === 0;
    this.publishBeats(hosts);
    if (metricsDue) for (const host of hosts) host.publishMetrics();
  }

  /**
   * Sends the heartbeats of `hosts` (those that may beat) as one message on
   * the agent's subject; the receiver judges each beat by the fault rules as
   * if it had come alone from its host.
   */
  private publishBeats(hosts: Iterable<SimHost>): void {
    const beats: v1.HostHeartbeat.$Properties[] = [];
    for (const host of hosts) {
      const beat = host.heartbeat();
      if (beat) beats.push(beat);
    }
    if (beats.length === 0) return;
    const { bus, config } = this.options;
    bus.publish(bus.subjects.event("agent", config.agentId, "heartbeats"), v1.HostHeartbeats, { beats });
    this.beatsSent.inc(beats.length);
  }

  /** Stops every host, the timers, the watch and the service; the bus stays open. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.beatTimer?.cancel();
    this.hypervisorTimer?.cancel();
    this.documents.stop();
    this.groupDocuments.stop();
    this.underlay.stop();
    for (const host of this.hosts.values()) host.stop();
    await this.service?.stop();
  }

  /** Healthy while running; details count registered hosts and VMs. */
  health(): HealthReport {
    let registered = 0;
    let vms = 0;
    for (const host of this.hosts.values()) {
      if (host.isRegistered()) registered += 1;
      vms += host.vmCount();
    }
    return {
      healthy: !this.stopped,
      details: { agentId: this.options.config.agentId, hosts: this.hosts.size, hostsRegistered: registered, vms, documentsRefused: this.refused },
    };
  }
}
