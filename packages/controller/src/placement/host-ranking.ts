// The connected hosts ranked by how loaded they are, kept current as
// allocations change, so placing a VM looks at the least loaded hosts first
// and stops at the first that fits: O(log n) for a datacenter of equal hosts,
// instead of scanning every host on each create. The order and the
// explanations are the full scan's (placement.ts), which still explains a
// refusal and takes over when too many hosts in a row do not fit.

import { Heap } from "@simdc/common";
import {
  chosenReason,
  freeShare,
  placeVm,
  rejectionReason,
  rejectionsListedMax,
  type OvercommitRatios,
  type PlacementHost,
  type PlacementRequest,
  type PlacementResult,
  type Rejection,
} from "./placement.js";

/** Hosts a placement examines in rank order before it falls back to the full scan. */
export const rankedExaminedMax = 128;

interface Ranked {
  host: PlacementHost;
  score: number;
}

/** True when `a` ranks before `b`: less loaded, then the lower id. */
function ahead(a: Ranked, b: Ranked): boolean {
  return a.score > b.score || (a.score === b.score && a.host.id < b.host.id);
}

export class HostRanking {
  private readonly position = new Map<string, number>();
  private readonly ranked = new Heap<Ranked>(ahead, (item, index) => this.position.set(item.host.id, index));

  /**
   * @param snapshot the host as placement sees it now (undefined: gone).
   * @param all every registered host, for the full scan.
   */
  constructor(
    private readonly snapshot: (hostId: string) => PlacementHost | undefined,
    private readonly all: () => Iterable<PlacementHost>,
    private readonly ratios: OvercommitRatios,
  ) {}

  get size(): number {
    return this.ranked.size;
  }

  /** Re-ranks one host after its allocation, capacity or connection changed. */
  update(hostId: string): void {
    const host = this.snapshot(hostId);
    const at = this.position.get(hostId);
    if (!host || !host.connected) {
      if (at !== undefined) {
        this.position.delete(hostId);
        this.ranked.removeAt(at);
      }
      return;
    }
    const entry = { host, score: freeShare(host, this.ratios) };
    if (at === undefined) this.ranked.push(entry);
    else this.ranked.replaceAt(at, entry);
  }

  /** Places `vm` on the least loaded connected host that fits, explaining the choice or the refusal. */
  place(vm: PlacementRequest): PlacementResult {
    const rejected: Rejection[] = [];
    // Best-first over the ranking heap: a frontier of its positions, ordered by rank.
    const frontier = new Heap<number>((a, b) => ahead(this.ranked.at(a)!, this.ranked.at(b)!));
    if (this.ranked.size > 0) frontier.push(0);
    for (let examined = 0; frontier.size > 0 && examined < rankedExaminedMax; examined++) {
      const at = frontier.pop()!;
      const { host } = this.ranked.at(at)!;
      const reason = rejectionReason(host, vm, this.ratios);
      if (reason === null) {
        const of = `${this.ranked.size} connected hosts (${examined + 1} examined)`;
        return { ok: true, hostId: host.id, reason: chosenReason(host, vm, this.ratios, of), rejected };
      }
      if (rejected.length < rejectionsListedMax) rejected.push({ hostId: host.id, reason });
      for (const child of [2 * at + 1, 2 * at + 2]) if (child < this.ranked.size) frontier.push(child);
    }
    // Nothing near the top fits: the full scan finds a fit further down, or explains the refusal host by host.
    return placeVm(this.all(), vm, this.ratios);
  }
}
