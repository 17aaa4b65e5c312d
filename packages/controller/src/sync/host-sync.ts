// How far the hosts have realized their documents, as OVN's hv_cfg: every
// host reports the generation of its document it realized, and for each
// security group its NICs use the generation of the group's document it
// installed; a host is behind while either is older than what is stored.
// The datacenter has realized generation g when every live host that is
// behind has realized at least g. A caller can wait for that (--wait=hosts),
// and it blocks on one stale host that still heartbeats, as ovn-nbctl
// --wait=hv does.

import { deadlineExceeded, invalidArgument, type Clock, type Timer } from "@simdc/common";
import { simdc } from "@simdc/proto";
import type { GroupDocuments } from "../compile/group-documents.js";
import type { HostDocuments } from "../compile/host-documents.js";
import type { MemberRegistry } from "../registry/member-registry.js";

import v1 = simdc.v1;

/** Lagging hosts a sync status or a timeout message lists. */
export const laggingListedMax = 32;

interface Waiter {
  generation: number;
  resolve(): void;
  reject(err: Error): void;
  timer: Timer;
}

/** Which security groups a host's NICs use, and which hosts have a NIC in a group. */
export interface GroupMembers {
  groupsOnHost(hostId: string): Iterable<string>;
  hostsInGroup(groupId: string): Iterable<string>;
}

export class HostSync {
  /** The generation of its document each host reported realized. */
  private readonly realized = new Map<string, number>();
  /** Per host, the generation of each group's document it reported installed. */
  private readonly groupsRealized = new Map<string, Map<string, number>>();
  /** Live hosts whose realized generation is behind their document. */
  private readonly lagging = new Set<string>();
  private waiters: Waiter[] = [];
  private settleQueued = false;

  constructor(
    private readonly documents: HostDocuments,
    private readonly groups: GroupDocuments,
    private readonly members: GroupMembers,
    private readonly hosts: MemberRegistry<v1.Host>,
    private readonly clock: Clock,
  ) {
    documents.onStored((hostId) => this.update(hostId));
    groups.onStored((groupId) => {
      for (const hostId of members.hostsInGroup(groupId)) this.update(hostId);
    });
  }

  /** The newest generation stored for the host: its document's, or a newer one of a group its NICs use. */
  desiredOf(hostId: string): number {
    let desired = this.documents.generationOf(hostId);
    for (const groupId of this.members.groupsOnHost(hostId)) desired = Math.max(desired, this.groups.generationOf(groupId));
    return desired;
  }

  /**
   * What the host has realized: the oldest generation it is behind on (its
   * document's, or a group's it has not installed yet), or, caught up, the
   * newest it reported.
   */
  realizedOf(hostId: string): number {
    const document = this.realized.get(hostId) ?? 0;
    let behind = document < this.documents.generationOf(hostId) ? document : Infinity;
    let newest = document;
    const installed = this.groupsRealized.get(hostId);
    for (const groupId of this.members.groupsOnHost(hostId)) {
      const generation = installed?.get(groupId) ?? 0;
      if (generation < this.groups.generationOf(groupId)) behind = Math.min(behind, generation);
      newest = Math.max(newest, generation);
    }
    return behind === Infinity ? newest : behind;
  }

  /**
   * Records what a host reports it realized.
   * @param strict refuse a generation never assigned (the active controller
   * knows every one; a standby may hear of one before it sees it stored).
   * @param groups the groups' generations it installed (absent: unchanged).
   * @returns false (and records nothing) for a report from the future.
   */
  report(hostId: string, generation: number, strict: boolean, groups?: readonly v1.IGroupRealized[]): boolean {
    const newest = this.documents.desiredGeneration;
    if (strict && (generation > newest || groups?.some((g) => (g.generation ?? 0) > newest))) return false;
    this.realized.set(hostId, generation);
    if (groups) this.groupsRealized.set(hostId, new Map(groups.map((g) => [g.groupId ?? "", g.generation ?? 0])));
    this.update(hostId);
    return true;
  }

  /** Re-judges a host after its documents, its report or its connection changed. */
  update(hostId: string): void {
    const behind = this.hosts.isConnected(hostId) && this.realizedOf(hostId) < this.desiredOf(hostId);
    if (behind) this.lagging.add(hostId);
    else this.lagging.delete(hostId);
    // Once a turn: one agent's message reports hundreds of hosts, and each settle walks every lagging host.
    if (this.waiters.length === 0 || this.settleQueued) return;
    this.settleQueued = true;
    queueMicrotask(() => {
      this.settleQueued = false;
      this.settle();
    });
  }

  /** hv_cfg: every live host has realized every document up to this generation. */
  get realizedGeneration(): number {
    let low = this.documents.writtenGeneration;
    for (const hostId of this.lagging) {
      const r = this.realizedOf(hostId);
      if (r < low) low = r;
    }
    return low;
  }

  status(): v1.GetSyncStatusResponse {
    const lagging = [...this.lagging]
      .map((hostId) => ({ hostId, desiredGeneration: this.desiredOf(hostId), realizedGeneration: this.realizedOf(hostId) }))
      .sort((a, b) => a.realizedGeneration - b.realizedGeneration || (a.hostId < b.hostId ? -1 : 1));
    let live = 0;
    for (const host of this.hosts.all()) if (this.hosts.isConnected(host.id)) live += 1;
    return v1.GetSyncStatusResponse.create({
      desiredGeneration: this.documents.desiredGeneration,
      writtenGeneration: this.documents.writtenGeneration,
      realizedGeneration: this.realizedGeneration,
      liveHosts: live,
      lagging: lagging.slice(0, laggingListedMax),
      laggingCount: lagging.length,
    });
  }

  /**
   * Resolves once every live host has realized `generation`.
   * @throws SimdcError INVALID_ARGUMENT for a generation never assigned;
   * DEADLINE_EXCEEDED after `timeoutMs`, naming the hosts behind.
   */
  waitRealized(generation: number, timeoutMs: number): Promise<void> {
    if (generation > this.documents.desiredGeneration) {
      return Promise.reject(invalidArgument(`generation ${generation} was never assigned (the newest is ${this.documents.desiredGeneration})`));
    }
    if (this.realizedGeneration >= generation) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        generation,
        resolve,
        reject,
        timer: this.clock.after(timeoutMs, () => {
          this.waiters = this.waiters.filter((w) => w !== waiter);
          const behind = this.status().lagging.filter((h) => (h.realizedGeneration ?? 0) < generation);
          const names = behind.map((h) => `${h.hostId} (realized ${h.realizedGeneration} of ${h.desiredGeneration})`).join(", ");
          reject(deadlineExceeded(`the change was made, but not every live host realized generation ${generation} within ${timeoutMs} ms: ${names || "documents still being written"}`));
        }),
      };
      this.waiters.push(waiter);
    });
  }

  /** Fails every waiter (the controller lost the lease or stops). */
  abandon(err: Error): void {
    for (const w of this.waiters) {
      w.timer.cancel();
      w.reject(err);
    }
    this.waiters = [];
  }

  private settle(): void {
    if (this.waiters.length === 0) return;
    const realized = this.realizedGeneration;
    const still: Waiter[] = [];
    for (const w of this.waiters) {
      if (w.generation <= realized) {
        w.timer.cancel();
        w.resolve();
      } else {
        still.push(w);
      }
    }
    this.waiters = still;
  }
}
