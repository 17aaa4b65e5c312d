// One VM on a simulated host: its desired state (from the host's document),
// the state the host has realized, and the asynchronous driver that moves the
// second toward the first one step at a time on the simulated clock,
// reporting each change. It must not decide placement or count capacity (the
// controller does), and it publishes only through the callback its host gives it.

import type { Bus } from "@simdc/bus";
import type { Clock, Logger } from "@simdc/common";
import { simdc } from "@simdc/proto";
import { openBootVolume, type FailureReason } from "./boot.js";
import type { DesiredVm } from "./validate.js";

import v1 = simdc.v1;

const { VM_STATE_DEFINED, VM_STATE_STARTING, VM_STATE_RUNNING, VM_STATE_STOPPING, VM_STATE_STOPPED, VM_STATE_FAILED } = v1.VmState;

/** How long the simulated steps take and how much of the boot volume a boot reads. */
export interface VmTiming {
  /** Blocks read from the start of the boot volume. */
  bootBlocks: number;
  /** Time from the boot read to RUNNING, in simulated ms. */
  bootTimeMs: number;
  /** Time from STOPPING to STOPPED, in simulated ms. */
  stopTimeMs: number;
  /** How long a boot retries a SAN node that is unreachable or busy, in simulated ms. */
  bootRetryMs: number;
}

/** What a VM needs from the host that holds it. */
export interface VmHost {
  hostId: string;
  bus: Bus;
  logger: Logger;
  clock: Clock;
  timing: VmTiming;
  random: () => number;
  /** Called after every change of the VM's status. */
  changed(vm: SimVm): void;
  /** The hypervisor that gives the VM CPU and memory while it is on. */
  hypervisor: VmHypervisor;
}

/** What a VM asks of its host's hypervisor. */
export interface VmHypervisor {
  /** Admission control at power-on. @returns why the VM cannot power on, or null once it is admitted. */
  powerOn(vm: DesiredVm): FailureReason | null;
  /** A running VM's allocation or workload changed. @returns why it was not applied, or null. */
  update(vm: DesiredVm): FailureReason | null;
  powerOff(vmId: string): void;
}

export class SimVm {
  readonly id: string;
  readonly incarnation: string;
  private desired: DesiredVm;
  private state: v1.VmState = VM_STATE_DEFINED;
  private reason: FailureReason | null = null;
  /** The generation last fully realized; 0 until the first one is. */
  private observedGeneration = 0;
  private driving = false;
  private readonly abort = new AbortController();

  /** Creates the VM in DEFINED; nothing runs until drive(). */
  constructor(
    desired: DesiredVm,
    private readonly host: VmHost,
  ) {
    this.id = desired.vmId;
    this.incarnation = desired.incarnation;
    this.desired = desired;
  }

  /** The status as events and the host's state carry it (the host adds its report sequence). */
  status(): v1.VmStatus {
    return v1.VmStatus.create({
      vmId: this.id,
      state: this.state,
      hostId: this.host.hostId,
      reason: this.reason,
      observedGeneration: this.observedGeneration,
      incarnation: this.incarnation,
    });
  }

  /** The desired state as the host holds it. */
  get wanted(): DesiredVm {
    return this.desired;
  }

  /**
   * Takes a newer desired state of the same incarnation, to be driven toward.
   * A generation at or below the one already taken changes nothing.
   * @returns true when taken.
   */
  take(desired: DesiredVm): boolean {
    if (desired.generation <= this.desired.generation) return false;
    this.desired = desired;
    return true;
  }

  /** Marks the VM failed without driving it (the host cannot take it). */
  refuse(reason: FailureReason): void {
    this.abort.abort();
    this.observedGeneration = this.desired.generation;
    this.state = VM_STATE_FAILED;
    this.reason = reason;
    this.host.changed(this);
  }

  /** Starts the driver unless one runs (a running driver picks up the newer desired state after its current step). */
  drive(): void {
    if (this.driving || this.abort.signal.aborted) return;
    this.driving = true;
    // Runs at once up to its first wait, so its first transition leaves
    // together with whatever the host reports in the same turn.
    void this.run().finally(() => {
      this.driving = false;
    });
  }

  /** Stops driving for good (the VM is removed or its host stops). */
  discard(): void {
    this.abort.abort();
  }

  private async run(): Promise<void> {
    // Each step ends with the target realized or the VM discarded, so the loop
    // ends once the newest generation is observed.
    while (!this.abort.signal.aborted && this.desired.generation !== this.observedGeneration) {
      const target = this.desired;
      const log = this.host.logger.child({ vmId: this.id, generation: target.generation });
      if (target.powerState === v1.PowerState.POWER_STATE_ON) await this.powerOn(target, log);
      else await this.powerOff(target, log);
    }
  }

  private async powerOn(target: DesiredVm, log: Logger): Promise<void> {
    if (this.state === VM_STATE_RUNNING) {
      // Shares, reservations, limits and the workload change in place; the
      // vCPUs and memory size stay as they were (a real VM needs a power cycle).
      const refused = this.host.hypervisor.update(target);
      if (refused) log.warn({ code: v1.ErrorCode[refused.code], reason: refused.message }, "vm's new allocation refused; it runs on with the old one");
      this.settle(VM_STATE_RUNNING, null, target.generation, log);
      return;
    }
    // Admission control comes first, as vSphere's: a reservation that does not fit never boots.
    const refused = this.host.hypervisor.powerOn(target);
    if (refused) {
      this.settle(VM_STATE_FAILED, refused, target.generation, log);
      return;
    }
    this.change(VM_STATE_STARTING, null, log);
    const { bus, hostId, clock, random, timing } = this.host;
    const outcome = await openBootVolume({ bus, hostId, logger: log, clock, signal: this.abort.signal, random, retryForMs: timing.bootRetryMs }, target.boot, timing.bootBlocks);
    if (this.abort.signal.aborted) return;
    if (!outcome.ok) {
      if (outcome.reason === null) return;
      this.host.hypervisor.powerOff(this.id);
      this.settle(VM_STATE_FAILED, outcome.reason, target.generation, log);
      return;
    }
    log.debug({ sanNodeId: target.boot.sanNodeId, bytesRead: outcome.bytesRead }, "boot volume read");
    if (!(await clock.sleep(timing.bootTimeMs, this.abort.signal))) return;
    this.settle(VM_STATE_RUNNING, null, target.generation, log);
  }

  private async powerOff(target: DesiredVm, log: Logger): Promise<void> {
    if (this.state === VM_STATE_RUNNING) {
      this.change(VM_STATE_STOPPING, null, log);
      if (!(await this.host.clock.sleep(this.host.timing.stopTimeMs, this.abort.signal))) return;
    }
    // DEFINED, STOPPED and FAILED VMs run nothing, so OFF is realized at once.
    this.host.hypervisor.powerOff(this.id);
    this.settle(VM_STATE_STOPPED, null, target.generation, log);
  }

  /** A transition that does not realize a generation (STARTING, STOPPING). */
  private change(state: v1.VmState, reason: FailureReason | null, log: Logger): void {
    this.state = state;
    this.reason = reason;
    log.debug({ state: v1.VmState[state] }, "vm state changed");
    this.host.changed(this);
  }

  /** A transition that realizes `generation`. */
  private settle(state: v1.VmState, reason: FailureReason | null, generation: number, log: Logger): void {
    this.observedGeneration = generation;
    if (reason) log.warn({ code: v1.ErrorCode[reason.code], reason: reason.message }, "vm failed");
    this.change(state, reason, log);
  }
}
