// What the hosts report about their VMs (state, observed generation), fed by
// status events and by a host's full state when asked for it. It is
// observation, not desired state: never stored, rebuilt by asking the hosts.
// For each host it keeps the digest the host's heartbeat carries, so one
// number says whether the controller has heard everything.

import { addToDigest, memberDigest, removeFromDigest } from "@simdc/common";
import { simdc } from "@simdc/proto";

import v1 = simdc.v1;

interface HostView {
  vms: Map<string, v1.VmStatus>;
  digest: number;
  /** False until the host's full state was heard since this controller started (or the host rebooted). */
  complete: boolean;
}

/** The digest member of one VM's status, as host and controller both compute it. */
export function vmStatusDigest(status: { vmId: string; incarnation: string; state: number; observedGeneration: number }): number {
  return memberDigest(status.vmId, status.incarnation, status.state, status.observedGeneration);
}

export class ObservedVms {
  private readonly hosts = new Map<string, HostView>();

  private view(hostId: string): HostView {
    let view = this.hosts.get(hostId);
    if (!view) this.hosts.set(hostId, (view = { vms: new Map(), digest: 0, complete: false }));
    return view;
  }

  /** What `hostId` last reported about `vmId`, once its full state is known. */
  get(hostId: string, vmId: string): v1.VmStatus | undefined {
    const view = this.hosts.get(hostId);
    return view?.complete ? view.vms.get(vmId) : undefined;
  }

  /** True once the host's full state was heard. */
  isComplete(hostId: string): boolean {
    return this.hosts.get(hostId)?.complete ?? false;
  }

  /** True when what was heard of the host matches its heartbeat's digest and count. */
  matches(hostId: string, digest: number, vmCount: number): boolean {
    const view = this.hosts.get(hostId);
    if (!view) return vmCount === 0 && digest === 0;
    return view.complete && view.digest === digest && view.vms.size === vmCount;
  }

  /**
   * Records one status event. A report older than the one held (by the
   * host's report sequence) is ignored; REMOVED forgets the VM.
   * @returns true when it changed what is held.
   */
  record(hostId: string, status: v1.VmStatus): boolean {
    const view = this.view(hostId);
    const previous = view.vms.get(status.vmId);
    // Report numbers grow for as long as the host runs (a reboot resets the view), whatever the incarnation.
    if (previous && previous.reportSeq >= status.reportSeq) return false;
    if (previous) view.digest = removeFromDigest(view.digest, vmStatusDigest(previous));
    if (status.state === v1.VmState.VM_STATE_REMOVED) {
      view.vms.delete(status.vmId);
      return previous !== undefined;
    }
    view.vms.set(status.vmId, status);
    view.digest = addToDigest(view.digest, vmStatusDigest(status));
    return true;
  }

  /** Replaces what is held of a host with its full state. */
  replaceHost(hostId: string, statuses: v1.VmStatus[]): void {
    const view: HostView = { vms: new Map(), digest: 0, complete: true };
    for (const status of statuses) {
      view.vms.set(status.vmId, status);
      view.digest = addToDigest(view.digest, vmStatusDigest(status));
    }
    this.hosts.set(hostId, view);
  }

  /** Forgets a host's VMs (it rebooted: it starts from nothing and reports anew). */
  resetHost(hostId: string): void {
    this.hosts.set(hostId, { vms: new Map(), digest: 0, complete: true });
  }
}
