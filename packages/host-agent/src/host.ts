// One simulated hypervisor host: its identity on the wire, its registration
// with the controller, its heartbeat timer, its HostAgentService endpoints and
// the VMs it holds. Several hosts share one process and one bus but nothing
// else; a host must not know about the others or about the process.

import { randomUUID } from "node:crypto";
import { endpoint, hostAgentService, hostService, type Bus, type Input, type MessageType } from "@simdc/bus";
import {
  notFound,
  resourceExhausted,
  systemClock,
  toSimdcError,
  unavailable,
  type Clock,
  type Logger,
} from "@simdc/common";
import { simdc } from "@simdc/proto";
import { pause } from "./pause.js";
import {
  heartbeatIntervalMsMax,
  heartbeatIntervalMsMin,
  registerBackoff,
  registerCallTimeoutMs,
  vmsPerHostMax,
} from "./limits.js";
import { backoffDelayMs, nextHeartbeatAtMs } from "./timing.js";
import { checkApplyVm, checkRemoveVm } from "./validate.js";
import { SimVm, type VmTiming } from "./vm.js";

import v1 = simdc.v1;

type Service = Awaited<ReturnType<Bus["serve"]>>;

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
  agentId: string;
  hostId: string;
  capacity: HostCapacity;
  timing: VmTiming;
  /** Used until the controller's registration reply names another, in ms. */
  heartbeatIntervalMs: number;
  /**
   * Where in each interval this host beats, in [0, 1), measured from
   * heartbeatEpochMs; the agent spreads its hosts' phases so they do not beat together.
   */
  heartbeatPhase: number;
  heartbeatEpochMs: number;
  /** Defaults to vmsPerHostMax. */
  vmsMax?: number;
  clock?: Clock;
  /** Jitter source in [0, 1); Math.random by default. */
  random?: () => number;
}

export class SimHost {
  readonly id: string;
  /** Changes each time the host starts, so the controller can tell a restart from a gap. */
  readonly bootId = randomUUID();
  private readonly bus: Bus;
  private readonly logger: Logger;
  private readonly clock: Clock;
  private readonly random: () => number;
  private readonly vmsMax: number;
  private readonly vms = new Map<string, SimVm>();
  private readonly stopping = new AbortController();
  private heartbeatIntervalMs: number;
  private heartbeatSeq = 0;
  private heartbeatTimer: NodeJS.Timeout | null = null;
  private registered = false;
  private service: Service | null = null;

  constructor(private readonly options: SimHostOptions) {
    this.id = options.hostId;
    this.bus = options.bus;
    this.logger = options.logger.child({ hostId: options.hostId });
    this.clock = options.clock ?? systemClock;
    this.random = options.random ?? Math.random;
    this.vmsMax = options.vmsMax ?? vmsPerHostMax;
    this.heartbeatIntervalMs = options.heartbeatIntervalMs;
  }

  /**
   * Serves the host's endpoints, starts its heartbeat and starts registering
   * in the background; resolves once the endpoints are served (registration
   * never holds up serving or heartbeating).
   */
  async start(): Promise<void> {
    this.service = await this.bus.serve({ role: "host", scopeId: this.id, description: `simulated host ${this.id}` }, [
      endpoint(hostAgentService.ApplyVm, (request) => this.applyVm(request)),
      endpoint(hostAgentService.RemoveVm, (request) => this.removeVm(request)),
    ]);
    this.scheduleHeartbeat(this.clock.nowMs());
    void this.register();
  }

  /** Stops the timers, the VM drivers and the endpoints. Publishes nothing more. */
  async stop(): Promise<void> {
    this.stopping.abort();
    if (this.heartbeatTimer) clearTimeout(this.heartbeatTimer);
    this.heartbeatTimer = null;
    // A stopped host is a powered-off machine: its VMs end without a word.
    for (const vm of this.vms.values()) vm.discard();
    await this.service?.stop();
  }

  /** True once the controller has accepted this host's registration. */
  isRegistered(): boolean {
    return this.registered;
  }

  vmCount(): number {
    return this.vms.size;
  }

  /** The interval the host heartbeats at now, in ms. */
  currentHeartbeatIntervalMs(): number {
    return this.heartbeatIntervalMs;
  }

  private applyVm(request: v1.ApplyVmRequest): v1.ApplyVmResponse.$Properties {
    const desired = checkApplyVm(request);
    if (this.stopping.signal.aborted) throw unavailable(`host ${this.id} is stopping`);
    const known = this.vms.get(desired.vmId);
    if (known) {
      known.apply(desired);
      return { status: known.status() };
    }
    if (this.vms.size >= this.vmsMax) {
      throw resourceExhausted(`host ${this.id} holds ${this.vms.size} VMs, its limit`);
    }
    const vm = new SimVm(desired, {
      hostId: this.id,
      bus: this.bus,
      logger: this.logger,
      timing: this.options.timing,
      random: this.random,
      report: (status) => this.publishStatus(status),
    });
    this.vms.set(vm.id, vm);
    this.publishStatus(vm.status());
    vm.drive();
    return { status: vm.status() };
  }

  private removeVm(request: v1.RemoveVmRequest): v1.RemoveVmResponse.$Properties {
    const vmId = checkRemoveVm(request);
    const vm = this.vms.get(vmId);
    if (!vm) throw notFound(`vm ${vmId} not found on host ${this.id}`);
    this.vms.delete(vmId);
    const last = vm.discard();
    if (last) this.publishStatus(last);
    this.logger.info({ vmId }, "vm removed");
    return {};
  }

  private publishStatus(status: v1.VmStatus.$Properties): void {
    this.publishSafely(this.bus.subjects.event("vm", status.vmId ?? "", "status"), v1.VmStatus, status);
  }

  private scheduleHeartbeat(afterMs: number): void {
    const dueMs = nextHeartbeatAtMs(afterMs, this.options.heartbeatEpochMs, this.heartbeatIntervalMs, this.options.heartbeatPhase);
    this.heartbeatTimer = setTimeout(() => {
      this.publishHeartbeat();
      // Counting from the slot that fired, not from now, so a timer that fires
      // a little early does not beat twice.
      this.scheduleHeartbeat(Math.max(dueMs, this.clock.nowMs()));
    }, dueMs - this.clock.nowMs());
  }

  private publishHeartbeat(): void {
    // seq is a uint32 on the wire; it wraps after 2^32 beats, which the controller tolerates.
    this.heartbeatSeq = (this.heartbeatSeq + 1) >>> 0;
    this.publishSafely(this.bus.subjects.event("host", this.id, "heartbeat"), v1.HostHeartbeat, {
      hostId: this.id,
      agentId: this.options.agentId,
      bootId: this.bootId,
      seq: this.heartbeatSeq,
      sentAtMs: this.clock.nowMs(),
      vms: [...this.vms.values()].map((vm) => vm.status()),
    });
  }

  private publishSafely<T>(subject: string, type: MessageType<T>, message: Input<T>): void {
    try {
      this.bus.publish(subject, type, message, this.id);
    } catch (err) {
      // A closed connection throws; the next beat or status change reports again.
      this.logger.warn({ err, subject }, "publish failed");
    }
  }

  /** Registers with capped backoff until the controller accepts, or the host stops. */
  private async register(): Promise<void> {
    const request: v1.RegisterHostRequest.$Properties = {
      hostId: this.id,
      agentId: this.options.agentId,
      capacity: { ...this.options.capacity, vmsMax: this.vmsMax },
      bootId: this.bootId,
    };
    for (let attempt = 1; !this.stopping.signal.aborted; attempt++) {
      try {
        const reply = await this.bus.call(hostService.RegisterHost, request, { timeoutMs: registerCallTimeoutMs, source: this.id });
        if (this.stopping.signal.aborted) return;
        this.onRegistered(reply, attempt);
        return;
      } catch (err) {
        const failure = toSimdcError(err);
        const context = { attempt, code: failure.code, reason: failure.message };
        // UNAVAILABLE is expected while the controller is down; anything else is a refusal worth seeing.
        if (failure.code !== "UNAVAILABLE") this.logger.error(context, "registration refused; retrying");
        else if (attempt === 1 || attempt % 10 === 0) this.logger.warn(context, "controller unreachable; retrying registration");
        if (!(await pause(backoffDelayMs(registerBackoff, attempt, this.random), this.stopping.signal))) return;
      }
    }
  }

  private onRegistered(reply: v1.RegisterHostResponse, attempts: number): void {
    this.registered = true;
    const asked = reply.heartbeatIntervalMs;
    if (asked > 0) {
      const intervalMs = Math.min(heartbeatIntervalMsMax, Math.max(heartbeatIntervalMsMin, asked));
      if (intervalMs !== asked) this.logger.warn({ asked, intervalMs }, "heartbeat interval out of bounds; clamped");
      if (intervalMs !== this.heartbeatIntervalMs) {
        this.heartbeatIntervalMs = intervalMs;
        if (this.heartbeatTimer) clearTimeout(this.heartbeatTimer);
        this.scheduleHeartbeat(this.clock.nowMs());
      }
    }
    this.logger.info({ attempts, heartbeatIntervalMs: this.heartbeatIntervalMs }, "registered");
  }
}
