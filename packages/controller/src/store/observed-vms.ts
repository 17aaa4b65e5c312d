// What the hosts report about their VMs (state, observed generation), fed by
// status events and heartbeats. It is observation, not desired state: it is
// rebuilt from heartbeats after a controller restart and never persisted.

import { simdc } from "@simdc/proto";

import v1 = simdc.v1;

export class ObservedVms {
  private readonly byVm = new Map<string, v1.VmStatus>();
  private readonly byHost = new Map<string, Set<string>>();

  get(vmId: string): v1.VmStatus | undefined {
    return this.byVm.get(vmId);
  }

  /** Records what a host reported about one VM. */
  record(status: v1.VmStatus): void {
    const previous = this.byVm.get(status.vmId);
    if (previous && previous.hostId !== status.hostId) this.byHost.get(previous.hostId)?.delete(status.vmId);
    this.byVm.set(status.vmId, status);
    let onHost = this.byHost.get(status.hostId);
    if (!onHost) this.byHost.set(status.hostId, (onHost = new Set()));
    onHost.add(status.vmId);
  }

  /**
   * Replaces what one host holds with its heartbeat's full list.
   * @returns ids that the host no longer reports.
   */
  replaceHost(hostId: string, statuses: v1.VmStatus[]): string[] {
    const before = this.byHost.get(hostId) ?? new Set<string>();
    const now = new Set<string>();
    for (const status of statuses) {
      now.add(status.vmId);
      this.record(status);
    }
    const gone: string[] = [];
    for (const id of before) {
      if (!now.has(id)) {
        gone.push(id);
        if (this.byVm.get(id)?.hostId === hostId) this.byVm.delete(id);
      }
    }
    this.byHost.set(hostId, now);
    return gone;
  }

  /** Ids the host reported last. */
  onHost(hostId: string): ReadonlySet<string> {
    return this.byHost.get(hostId) ?? new Set();
  }

  forget(vmId: string): void {
    const previous = this.byVm.get(vmId);
    if (!previous) return;
    this.byVm.delete(vmId);
    this.byHost.get(previous.hostId)?.delete(vmId);
  }
}
