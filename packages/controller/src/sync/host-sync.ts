// How far the hosts have realized their documents, as OVN's hv_cfg: every
// host reports the generation it realized; the datacenter has realized
// generation g when every live host that is behind its document has
// realized at least g. A caller can wait for that (--wait=hosts), and it
// blocks on one stale host that still heartbeats, as ovn-nbctl --wait=hv does.

import { deadlineExceeded, invalidArgument, type Clock, type Timer } from "@simdc/common";
import { simdc } from "@simdc/proto";
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

export class HostSync {
  private readonly realized = new Map<string, number>();
  /** Live hosts whose realized generation is behind their document. */
  private readonly lagging = new Set<string>();
  private waiters: Waiter[] = [];

  constructor(
    private readonly documents: HostDocuments,
    private readonly hosts: MemberRegistry<v1.Host>,
    private readonly clock: Clock,
  ) {
    documents.onStored((hostId) => this.update(hostId));
  }

  realizedOf(hostId: string): number {
    return this.realized.get(hostId) ?? 0;
  }

  /**
   * Records what a host reports it realized.
   * @param strict refuse a generation never assigned (the active controller
   * knows every one; a standby may hear of one before it sees it stored).
   * @returns false (and records nothing) for a report from the future.
   */
  report(hostId: string, generation: number, strict: boolean): boolean {
    if (strict && generation > this.documents.desiredGeneration) return false;
    this.realized.set(hostId, generation);
    this.update(hostId);
    return true;
  }

  /** Re-judges a host after its document, its report or its connection changed. */
  update(hostId: string): void {
    const behind = this.hosts.isConnected(hostId) && this.realizedOf(hostId) < this.documents.generationOf(hostId);
    if (behind) this.lagging.add(hostId);
    else this.lagging.delete(hostId);
    this.settle();
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
      .map((hostId) => ({ hostId, desiredGeneration: this.documents.generationOf(hostId), realizedGeneration: this.realizedOf(hostId) }))
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
