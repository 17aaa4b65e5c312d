// One simulated hypervisor host: its identity on the wire, its registration
// with the controller, the VMs it holds, and the document it realizes as one
// step. Several hosts share one process, one bus, one document watch and one
// heartbeat timer (the agent's), but nothing else; a host must not know
// about the others. A host that loses the controller runs on with its last
// document.

import { hostService, type Bus, type Input, type MessageType } from "@simdc/bus";
import {
  addToDigest,
  failedPrecondition,
  memberDigest,
  removeFromDigest,
  resourceExhausted,
  SimdcError,
  toSimdcError,
  uniqueId,
  type Clock,
  type Logger,
  type Rng,
} from "@simdc/common";
import { simdc } from "@simdc/proto";
import { heartbeatIntervalMsMax, heartbeatIntervalMsMin, registerBackoff, registerCallTimeoutMs, vmsPerHostMax } from "./limits.js";
import { backoffDelayMs } from "./timing.js";
import type { DesiredVm, HostPlan } from "./validate.js";
import { SimVm, type VmHypervisor, type VmTiming } from "./vm.js";
import { HostHypervisor, type HypervisorSettings } from "./hypervisor.js";
import { reasonOf, type FailureReason } from "./boot.js";
import { HostDatapath } from "./network/datapath.js";
import type { Payload } from "./network/packets.js";
import { noNetwork, type NetworkSection, type Tunnel } from "./network/section.js";
import { SecurityGroupBook } from "./network/groups.js";
import type { FailMode } from "./network/controller-link.js";
import type { UplinkSpec } from "./network/uplink.js";

import v1 = simdc.v1;

/** How long a packet-in waits for the controller's answer (its packets are dropped after). */
const packetInTimeoutMs = 2_000;

/** The physical hardware a simulated host offers. */
export interface HostCapacity {
  pcpus: number;
  memoryMib: number;
  nics: number;
}

export interface SimHostOptions {
  bus: Bus;
  /** The agent's logger; the host adds its id. */
  logger: Logger;
  clock: Clock;
  agentId: string;
  hostId: string;
  capacity: HostCapacity;
  timing: VmTiming;
  /** VMs the host may hold; defaults to vmsPerHostMax. */
  vmsMax?: number;
  /** The host's own stream of the run's seed (jitter, workloads, page contents). */
  rng: Rng;
  /** How the host's hypervisor schedules CPU and manages memory. */
  hypervisor: HypervisorSettings;
  /** Told when the controller's registration reply names the heartbeat and metrics intervals. */
  onIntervals(heartbeatIntervalMs: number, metricsIntervalMs: number): void;
  /** Told when the host realized a document (so it reports at once). */
  onRealized(host: SimHost): void;
  /** Told when the host installed a security group's new document (reported with the agent's other hosts at the end of the turn). */
  onGroupsRealized(host: SimHost): void;
  /** The security groups' documents the agent follows, which the host expands for its guarded NICs. */
  groups: SecurityGroupBook;
  /** Asked to send the host's heartbeat now (it just registered). */
  beatNow(host: SimHost): void;
  /** The host's physical NICs. */
  uplinks: UplinkSpec[];
  /** What the host's vswitch does when its controller is lost, and how often it probes. */
  failMode: FailMode;
  inactivityProbeMs: number;
  /** Sends an encapsulated packet over the underlay to another host. */
  tunnel(fromHost: string, tunnel: Tunnel, headers: Uint32Array, payload: Payload, bytes: number): boolean;
}

/** The digest member of one VM's status, as host and controller both compute it. */
function statusDigest(status: v1.VmStatus): number {
  return memberDigest(status.vmId, status.incarnation, status.state, status.observedGeneration);
}

/** Why a host refused a document. */
export type PlanRefusal = { kind: "stale-epoch"; heldEpoch: number } | null;

export class SimHost {
  readonly id: string;
  /** Changes each time the host starts, so the controller can tell a restart from a gap. */
  readonly bootId = uniqueId();
  private readonly bus: Bus;
  private readonly logger: Logger;
  private readonly vmsMax: number;
  private readonly vms = new Map<string, SimVm>();
  /** The status last reported for each VM, and the digest over them. */
  private readonly reported = new Map<string, v1.VmStatus>();
  private digest = 0;
  private reportSeq = 0;
  private heartbeatSeq = 0;
  private readonly stopping = new AbortController();
  private registering = false;
  private registered = false;
  /** Refused by the controller for good: another live agent holds this id. */
  private evicted = false;
  private realized = { generation: 0, epoch: 0, stateId: "" };
  /** Per security group its NICs use, the generation of the group's document whose flows are installed. */
  private groupsRealized = new Map<string, number>();
  /** The network section of the last document, before its groups' admissions are added. */
  private network: NetworkSection = noNetwork;
  /**
   * What the vswitch holds back (its controller lost): a document whose VMs
   * are realized but not its flows (null: only groups changed), and the
   * groups' generations of the flows held.
   */
  private held: { document: { generation: number; epoch: number; stateId: string } | null; groups: Map<string, number> } | null = null;
  /** The host's vswitch, its ports and tunnels, and its guests' NICs. */
  readonly datapath: HostDatapath;
  /** The host's CPU scheduler and memory manager, with its VMs' workloads. */
  readonly hypervisor: HostHypervisor;
  private readonly vmHypervisor: VmHypervisor;
  private readonly random: () => number;

  constructor(private readonly options: SimHostOptions) {
    this.id = options.hostId;
    this.bus = options.bus;
    this.logger = options.logger.child({ hostId: options.hostId });
    this.vmsMax = options.vmsMax ?? vmsPerHostMax;
    this.random = options.rng.random;
    this.hypervisor = new HostHypervisor(options.hypervisor, options.rng.derive("hypervisor"));
    this.vmHypervisor = {
      powerOn: (vm) => this.admitted(() => (this.hypervisor.has(vm.vmId) ? this.hypervisor.update(vm.vmId, vm.resources) : this.hypervisor.powerOn(vm.vmId, vm.spec.vcpus, vm.spec.memoryMib, vm.resources))),
      update: (vm) => this.admitted(() => this.hypervisor.update(vm.vmId, vm.resources)),
      powerOff: (vmId) => this.hypervisor.powerOff(vmId),
    };
    this.datapath = new HostDatapath({
      hostId: this.id,
      clock: options.clock,
      random: this.random,
      logger: this.logger,
      tunnel: (tunnel, headers, payload, bytes) => options.tunnel(this.id, tunnel, headers, payload, bytes),
      failMode: options.failMode,
      inactivityProbeMs: options.inactivityProbeMs,
      probe: (timeoutMs) => this.probeController(timeoutMs),
      uplinks: options.uplinks,
      nicDrops: (nic, count) => this.publishNicDrops(nic, count),
      heldInstalled: () => this.heldInstalled(),
      packetIn: async (segmentId, dlSrc, dlDst) => {
        const reply = await this.bus.call(hostService.PacketIn, { hostId: this.id, segmentId, dlSrc, dlDst }, { scopeId: this.id, timeoutMs: packetInTimeoutMs, source: this.id });
        return reply.flows;
      },
    });
  }

  /**
   * Starts registering in the background after `delayMs` (the agent spreads
   * its hosts' first registrations over an interval, as their heartbeats);
   * registration never holds up anything else.
   */
  start(delayMs = 0): void {
    void this.options.clock.sleep(delayMs, this.stopping.signal).then((slept) => {
      if (slept) void this.register();
    });
  }

  /** Stops for good. A stopped host is a powered-off machine: its VMs end without a word. */
  stop(): void {
    this.stopping.abort();
    this.datapath.stop();
    for (const vm of this.vms.values()) {
      vm.discard();
      this.datapath.setRunning(vm.id, false);
    }
  }

  /** True once the controller has accepted this host's registration. */
  isRegistered(): boolean {
    return this.registered;
  }

  /** False once stopped or evicted: such a host says nothing more. */
  get alive(): boolean {
    return !this.stopping.signal.aborted && !this.evicted;
  }

  vmCount(): number {
    return this.vms.size;
  }

  /** The desired state the host holds for a VM, as checked when it came. */
  heldVm(vmId: string): DesiredVm | undefined {
    return this.vms.get(vmId)?.wanted;
  }

  get realizedGeneration(): number {
    return this.realized.generation;
  }

  /**
   * Realizes a document as one step: VMs it names are created or updated
   * (a new incarnation replaces the old), VMs it does not name are removed.
   * @returns a refusal when the document comes from a deposed controller
   * (an older epoch of the same stored state), else null.
   */
  applyPlan(plan: HostPlan): PlanRefusal {
    if (!this.alive) return null;
    const sameState = plan.stateId === this.realized.stateId;
    if (sameState && plan.epoch < this.realized.epoch) return { kind: "stale-epoch", heldEpoch: this.realized.epoch };
    if (sameState && plan.generation <= this.realized.generation) return null;
    // VMs the document drops go first, so the limit counts the VMs the document names.
    const wanted = new Set(plan.vms.map((desired) => desired.vmId));
    for (const vm of [...this.vms.values()]) if (!wanted.has(vm.id)) this.remove(vm);
    // Driven once the step is reported, so their first transitions follow the heartbeat that reports it.
    const changed: SimVm[] = [];
    for (const desired of plan.vms) {
      const known = this.vms.get(desired.vmId);
      if (known && known.incarnation === desired.incarnation) {
        if (known.take(desired)) changed.push(known);
        continue;
      }
      if (known) this.remove(known);
      const vm = this.admit(desired);
      if (this.vms.size > this.vmsMax) {
        const refusal = resourceExhausted(`host ${this.id} holds ${this.vmsMax} VMs, its limit`);
        vm.refuse({ code: v1.ErrorCode.ERROR_CODE_RESOURCE_EXHAUSTED, message: refusal.message });
        continue;
      }
      this.report(vm);
      changed.push(vm);
    }
    const realized = { generation: plan.generation, epoch: plan.epoch, stateId: plan.stateId };
    this.network = plan.network;
    const { section, groups } = this.options.groups.expand(plan.network);
    if (this.datapath.apply(section)) {
      this.held = null;
      this.realized = realized;
      this.groupsRealized = groups;
      this.logger.debug({ generation: plan.generation, vms: this.vms.size }, "document realized");
      this.options.onRealized(this);
    } else {
      // Its VMs are realized, but not its flows: the generation is reported once the vswitch installs them.
      this.held = { document: realized, groups };
      this.logger.info({ generation: plan.generation }, "document's flows held back: the vswitch has lost its controller");
    }
    for (const vm of changed) vm.drive();
    return null;
  }

  /** A security group's document changed: the admissions of the host's NICs in it are expanded again. */
  groupChanged(groupId: string): void {
    if (!this.alive || !SecurityGroupBook.uses(this.network, groupId)) return;
    const { section, groups } = this.options.groups.expand(this.network);
    if (this.datapath.apply(section)) {
      this.held = null;
      this.groupsRealized = groups;
      this.options.onGroupsRealized(this);
    } else {
      this.held = { document: this.held?.document ?? null, groups };
    }
  }

  /** The vswitch installed the flows it held back: their documents are realized now. */
  private heldInstalled(): void {
    if (!this.held) return;
    if (this.held.document) this.realized = this.held.document;
    this.groupsRealized = this.held.groups;
    this.held = null;
    this.logger.debug({ generation: this.realized.generation }, "documents realized (their held-back flows installed)");
    this.options.onRealized(this);
  }

  private admit(desired: DesiredVm): SimVm {
    const vm = new SimVm(desired, {
      hostId: this.id,
      bus: this.bus,
      logger: this.logger,
      clock: this.options.clock,
      timing: this.options.timing,
      random: this.random,
      changed: (changed) => this.report(changed),
      hypervisor: this.vmHypervisor,
    });
    this.vms.set(vm.id, vm);
    return vm;
  }

  /**
   * TEST ONLY: starts a VM the document does not name, as a buggy host
   * would; the next document removes it.
   * @throws SimdcError FAILED_PRECONDITION when the host holds the VM already or is stopped.
   */
  startStray(desired: DesiredVm): v1.VmStatus {
    if (!this.alive) throw failedPrecondition(`host ${this.id} is stopped`);
    if (this.vms.has(desired.vmId)) throw failedPrecondition(`host ${this.id} holds vm ${desired.vmId} already`);
    this.logger.warn({ vmId: desired.vmId }, "test fault: starting a VM the document does not name");
    const vm = this.admit(desired);
    this.report(vm);
    vm.drive();
    return vm.status();
  }

  /** Everything the host holds, for GetHostState. */
  state(): v1.GetHostStateResponse.$Properties {
    const vms: v1.VmReport.$Properties[] = [];
    for (const vm of this.vms.values()) vms.push({ status: this.reported.get(vm.id) ?? vm.status(), desired: vm.wanted.wire });
    return {
      hostId: this.id,
      bootId: this.bootId,
      realizedGeneration: this.realized.generation,
      documentEpoch: this.realized.epoch,
      stateId: this.realized.stateId,
      vms,
    };
  }

  /**
   * The next heartbeat: liveness, what was realized, and the digest of the
   * VM states; null when the host may not beat. A host beats once it has
   * registered: before that the controller would only refuse the beat. The
   * agent sends it, with its other hosts' beats.
   */
  heartbeat(): v1.HostHeartbeat.$Properties | null {
    if (!this.alive || !this.registered) return null;
    // seq is a uint32 on the wire; it wraps after 2^32 beats, which the controller tolerates.
    this.heartbeatSeq = (this.heartbeatSeq + 1) >>> 0;
    return {
      hostId: this.id,
      agentId: this.options.agentId,
      bootId: this.bootId,
      seq: this.heartbeatSeq,
      sentAtMs: this.options.clock.nowMs(),
      realizedGeneration: this.realized.generation,
      vmCount: this.reported.size,
      vmDigest: this.digest,
      documentEpoch: this.realized.epoch,
      stateId: this.realized.stateId,
      groupsRealized: [...this.groupsRealized].map(([groupId, generation]) => ({ groupId, generation })),
    };
  }

  /** Publishes the sampled metrics: a few numbers, whatever the number of VMs. */
  publishMetrics(): void {
    if (!this.alive) return;
    let running = 0;
    let starting = 0;
    let failed = 0;
    let vcpus = 0;
    let memoryMib = 0;
    for (const [id, status] of this.reported) {
      if (status.state === v1.VmState.VM_STATE_RUNNING) {
        running += 1;
        const spec = this.vms.get(id)?.wanted.spec;
        vcpus += spec?.vcpus ?? 0;
        memoryMib += spec?.memoryMib ?? 0;
      } else if (status.state === v1.VmState.VM_STATE_STARTING) starting += 1;
      else if (status.state === v1.VmState.VM_STATE_FAILED) failed += 1;
    }
    this.publish(this.bus.subjects.event("host", this.id, "metrics"), v1.HostMetrics, {
      hostId: this.id,
      sampledAtMs: this.options.clock.nowMs(),
      vmCount: this.vms.size,
      vmsRunning: running,
      vmsStarting: starting,
      vmsFailed: failed,
      vcpusRunning: vcpus,
      memoryMibRunning: memoryMib,
      realizedGeneration: this.realized.generation,
      publishFailures: this.bus.publishFailureCount,
      hypervisor: this.hypervisor.hostStats(),
    });
  }

  private publishNicDrops(nic: string, count: number): void {
    this.logger.warn({ nic, drops: count }, "NIC queue full: packets dropped");
    this.publish(this.bus.subjects.event("host", this.id, "nic-drops"), v1.Event, {
      kind: v1.EventKind.EVENT_KIND_NIC_DROPS,
      objectId: this.id,
      timeMs: this.options.clock.nowMs(),
      message: `host ${this.id}: ${nic} dropped ${count} packets (queue full)`,
      source: this.options.agentId,
    });
  }

  /** One echo to the controller, as this host (so a fault rule on the host cuts it). */
  private async probeController(timeoutMs: number): Promise<boolean> {
    if (!this.alive) return false;
    try {
      await this.bus.call(hostService.ProbeController, { hostId: this.id }, { scopeId: this.id, timeoutMs, source: this.id });
      return true;
    } catch {
      return false;
    }
  }

  /** Registers again now (the controller asked: it does not know this boot). */
  reregister(): void {
    if (!this.evicted) void this.register();
  }

  /** Runs a hypervisor change. @returns why it was refused (a typed error), or null. */
  private admitted(change: () => void): FailureReason | null {
    try {
      change();
      return null;
    } catch (err) {
      return reasonOf(toSimdcError(err));
    }
  }

  /**
   * Steps the hypervisor by `dtMs` of simulated time (the agent's timer calls
   * every host's) and reports a change of memory state as an event.
   */
  stepHypervisor(dtMs: number): void {
    if (!this.alive) return;
    for (const event of this.hypervisor.step(this.options.clock.nowMs(), dtMs)) {
      if (event.kind !== "memory-state") continue;
      const message = `host ${this.id}: memory ${event.from} -> ${event.to}, ${Math.round(event.freeMb)} MiB free`;
      this.logger.info({ from: event.from, to: event.to, freeMib: Math.round(event.freeMb) }, "memory state changed");
      this.publish(this.bus.subjects.event("host", this.id, "memory-state"), v1.Event, {
        kind: v1.EventKind.EVENT_KIND_MEMORY_STATE_CHANGED,
        objectId: this.id,
        timeMs: this.options.clock.nowMs(),
        message,
        source: this.options.agentId,
      });
    }
  }

  private remove(vm: SimVm): void {
    vm.discard();
    this.hypervisor.powerOff(vm.id);
    this.datapath.setRunning(vm.id, false);
    this.vms.delete(vm.id);
    const removed = v1.VmStatus.create({ ...vm.status(), state: v1.VmState.VM_STATE_REMOVED });
    this.publishStatus(removed);
    this.logger.info({ vmId: vm.id }, "vm removed");
  }

  private report(vm: SimVm): void {
    if (!this.alive || this.vms.get(vm.id) !== vm) return;
    const status = vm.status();
    this.datapath.setRunning(vm.id, status.state === v1.VmState.VM_STATE_RUNNING);
    this.publishStatus(status);
  }

  private publishStatus(status: v1.VmStatus): void {
    this.reportSeq = (this.reportSeq + 1) >>> 0;
    status.reportSeq = this.reportSeq;
    const previous = this.reported.get(status.vmId);
    if (previous) this.digest = removeFromDigest(this.digest, statusDigest(previous));
    if (status.state === v1.VmState.VM_STATE_REMOVED) this.reported.delete(status.vmId);
    else {
      this.reported.set(status.vmId, status);
      this.digest = addToDigest(this.digest, statusDigest(status));
    }
    this.publish(this.bus.subjects.event("host", this.id, "vm"), v1.VmStatus, { ...status, timeMs: this.options.clock.nowMs() });
  }

  private publish<T>(subject: string, type: MessageType<T>, message: Input<T>): void {
    // A failed publish is logged, counted and reported by the bus; the digest brings the controller back in step.
    this.bus.publish(subject, type, message, this.id);
  }

  /** Registers with capped backoff until the controller accepts, or the host stops or is evicted. */
  private async register(): Promise<void> {
    if (this.registering) return;
    this.registering = true;
    const request: v1.RegisterHostRequest.$Properties = {
      hostId: this.id,
      agentId: this.options.agentId,
      capacity: { ...this.options.capacity, vmsMax: this.vmsMax, threadsPerCore: this.options.hypervisor.threadsPerCore, coreMhz: this.options.hypervisor.coreMhz },
      bootId: this.bootId,
    };
    try {
      for (let attempt = 1; this.alive; attempt++) {
        try {
          const reply = await this.bus.call(hostService.RegisterHost, request, { scopeId: this.id, timeoutMs: registerCallTimeoutMs, source: this.id });
          if (!this.alive) return;
          this.onRegistered(reply, attempt);
          return;
        } catch (err) {
          if (!this.alive) return;
          if (err instanceof SimdcError && err.code === "FAILED_PRECONDITION") {
            // Another live agent holds this host id: two machines must not be one host.
            this.evict(err.message);
            return;
          }
          this.logger.warn({ attempt, err: String(err) }, "registration failed; retrying");
          if (!(await this.options.clock.sleep(backoffDelayMs(registerBackoff, attempt, this.random), this.stopping.signal))) return;
        }
      }
    } finally {
      this.registering = false;
    }
  }

  private evict(reason: string): void {
    this.evicted = true;
    this.datapath.stop();
    for (const vm of this.vms.values()) vm.discard();
    this.logger.error({ reason }, "the controller refused this host: it stops and says nothing more");
  }

  private onRegistered(reply: v1.RegisterHostResponse, attempts: number): void {
    const first = !this.registered;
    this.registered = true;
    const clamp = (ms: number): number => Math.min(heartbeatIntervalMsMax, Math.max(heartbeatIntervalMsMin, ms));
    // Metrics no more often than heartbeats, and no rarer than an hour.
    const metricsMs = reply.metricsIntervalMs ? Math.min(3_600_000, Math.max(reply.metricsIntervalMs, clamp(reply.heartbeatIntervalMs))) : 0;
    if (reply.heartbeatIntervalMs > 0) this.options.onIntervals(clamp(reply.heartbeatIntervalMs), metricsMs);
    this.logger.info({ attempts, heartbeatIntervalMs: reply.heartbeatIntervalMs }, "registered");
    // The first beat says at once what the host realized while it registered.
    if (first) this.options.beatNow(this);
  }
}
