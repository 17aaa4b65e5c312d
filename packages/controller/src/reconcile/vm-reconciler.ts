// Drives each VM's host toward the VM's desired state. Level-triggered: a
// run reads the desired state (KV-backed store) and what the host last
// reported, and acts on the difference; it never trusts that an earlier
// command arrived. Hosts echo the generation they realized, which is how
// the controller knows a change is done.

import { hostAgentService, type Bus } from "@simdc/bus";
import { SimdcError, type Logger } from "@simdc/common";
import { simdc } from "@simdc/proto";
import type { MemberRegistry } from "../registry/member-registry.js";
import type { DesiredStore } from "../store/desired-store.js";
import type { HostAllocation } from "../store/kinds.js";
import type { ObservedVms } from "../store/observed-vms.js";
import { WorkQueue, type WorkResult } from "./work-queue.js";

import v1 = simdc.v1;

/** How long the controller waits for a host to answer one command. */
export const hostCallTimeoutMs = 2_000;
/** Commands to hosts in flight at once. */
export const reconcileConcurrency = 64;

export class VmReconciler {
  private readonly queue: WorkQueue;
  /** "<generation>@<bootId>" of the last ApplyVm each VM's host acknowledged. */
  private readonly applied = new Map<string, string>();
  private runs = 0;

  constructor(
    private readonly bus: Bus,
    private readonly vms: DesiredStore<v1.Vm, HostAllocation>,
    private readonly observed: ObservedVms,
    private readonly hosts: MemberRegistry<v1.Host>,
    private readonly logger: Logger,
  ) {
    this.queue = new WorkQueue((id) => this.reconcile(id), {
      concurrency: reconcileConcurrency,
      backoffBaseMs: 100,
      backoffMaxMs: 10_000,
    }, logger);
  }

  enqueue(vmId: string): void {
    this.queue.add(vmId);
  }

  /** Re-examines every VM on a host, forgetting what was sent to it (after a reconnect or reboot). */
  resyncHost(hostId: string): void {
    for (const id of this.vms.onTarget(hostId)) {
      this.applied.delete(id);
      this.queue.add(id);
    }
    for (const id of this.observed.onHost(hostId)) this.queue.add(id);
  }

  /** Re-examines every VM whose host has not reported its desired generation. */
  resyncUnrealized(): void {
    for (const vm of this.vms.all()) {
      if (!this.isRealized(vm)) {
        this.applied.delete(vm.id);
        this.queue.add(vm.id);
      }
    }
  }

  /**
   * Reacts to a heartbeat's full VM list: VMs the host runs but should not,
   * and VMs it should run but does not report, are reconciled.
   */
  onHeartbeat(hostId: string, reported: v1.VmStatus[], gone: string[]): void {
    for (const status of reported) {
      if (this.vms.get(status.vmId)?.hostId !== hostId) this.queue.add(status.vmId);
    }
    for (const id of gone) this.queue.add(id);
    const reportedIds = this.observed.onHost(hostId);
    for (const id of this.vms.onTarget(hostId)) {
      if (!reportedIds.has(id) && this.applied.has(id)) {
        // The host acknowledged this VM once but no longer holds it: it restarted.
        this.applied.delete(id);
        this.queue.add(id);
      }
    }
  }

  stop(): void {
    this.queue.stop();
  }

  get queueDepth(): number {
    return this.queue.depth;
  }

  private isRealized(vm: v1.Vm): boolean {
    const status = this.observed.get(vm.id);
    return status !== undefined && status.hostId === vm.hostId && status.observedGeneration >= vm.generation;
  }

  private async reconcile(vmId: string): Promise<WorkResult> {
    this.runs += 1;
    const log = this.logger.child({ reconcileId: this.runs, vmId });
    const desired = this.vms.get(vmId);
    const status = this.observed.get(vmId);
    if (status && (!desired || status.hostId !== desired.hostId)) {
      const removed = await this.removeFrom(status.hostId, vmId, log);
      if (!removed) return "retry";
    }
    if (!desired) return "done";
    if (!desired.hostId || !this.hosts.isConnected(desired.hostId)) {
      // Nothing to do until the host is back; its reconnect re-enqueues the VM.
      return "done";
    }
    if (this.isRealized(desired)) return "done";
    const bootId = this.hosts.get(desired.hostId)?.bootId ?? "";
    const mark = `${desired.generation}@${bootId}`;
    if (this.applied.get(vmId) === mark) return "done";
    try {
      const reply = await this.bus.call(
        hostAgentService.ApplyVm,
        { vmId, spec: desired.spec, powerState: desired.powerState, generation: desired.generation },
        { scopeId: desired.hostId, timeoutMs: hostCallTimeoutMs },
      );
      this.applied.set(vmId, mark);
      if (reply.status) this.observed.record(v1.VmStatus.create({ ...reply.status, hostId: desired.hostId }));
      log.debug({ hostId: desired.hostId, generation: desired.generation }, "applied");
      return "done";
    } catch (err) {
      log.warn({ hostId: desired.hostId, err: errorText(err) }, "apply failed; will retry");
      return "retry";
    }
  }

  /** @returns false when the host should be asked again later. */
  private async removeFrom(hostId: string, vmId: string, log: Logger): Promise<boolean> {
    if (!this.hosts.isConnected(hostId)) {
      this.observed.forget(vmId);
      return true;
    }
    try {
      await this.bus.call(hostAgentService.RemoveVm, { vmId }, { scopeId: hostId, timeoutMs: hostCallTimeoutMs });
    } catch (err) {
      if (!(err instanceof SimdcError && err.code === "NOT_FOUND")) {
        log.warn({ hostId, err: errorText(err) }, "remove failed; will retry");
        return false;
      }
    }
    this.observed.forget(vmId);
    this.applied.delete(vmId);
    return true;
  }
}

function errorText(err: unknown): string {
  return err instanceof SimdcError ? err.toString() : String(err);
}
