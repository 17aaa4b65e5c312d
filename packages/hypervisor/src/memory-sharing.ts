// The host's transparent page sharing table, by counts: one group per
// (content, salt), for the zero page and for each OS image, holding how many
// guest pages each member VM has hashed into it. From those counts it
// derives the machine pages the group needs, which guest pages share, and
// who is credited with the savings. It never sees a page; the scanner and
// copy-on-write that move pages in and out of the table are the manager's.

import { IMAGE, SCANNED, VmPages, ZERO } from "./memory-pages.js";

/** One (content, salt) group. */
interface SharingGroup {
  /** ZERO or IMAGE. */
  readonly cls: number;
  /** Distinct contents in the group: an image's pages; 1 for the zero page. */
  readonly contentPages: number;
  readonly members: VmPages[];
}

/** Sharing figures of the whole host, in pages, as of the last `recompute`. */
export interface SharingTotals {
  /** Machine pages backing every group. */
  machinePages: number;
  /** Guest pages hashed into the table. */
  scannedPages: number;
  /** scannedPages − machinePages. */
  savedPages: number;
  /** The part of savedPages that needs two different VMs: zero without inter-VM sharing under default salting. */
  interVmSavedPages: number;
}

/**
 * Group key of the zero page or an image under a salt. Sharing needs equal
 * content and equal salt (KB 2097593), so the salt is part of the key.
 */
export function sharingKey(content: string, salt: string): string {
  return `${content}\u0000${salt}`;
}

export class SharingTable {
  private readonly groups = new Map<string, SharingGroup>();
  readonly totals: SharingTotals = { machinePages: 0, scannedPages: 0, savedPages: 0, interVmSavedPages: 0 };

  /** Puts `vm` into the group `key` of class `cls` (ZERO or IMAGE). */
  join(key: string, cls: number, contentPages: number, vm: VmPages): void {
    let group = this.groups.get(key);
    if (!group) {
      group = { cls, contentPages, members: [] };
      this.groups.set(key, group);
    }
    group.members.push(vm);
  }

  /** Takes `vm` out of group `key`; an empty group goes. */
  leave(key: string, vm: VmPages): void {
    const group = this.groups.get(key);
    if (!group) return;
    const i = group.members.indexOf(vm);
    if (i >= 0) group.members.splice(i, 1);
    if (group.members.length === 0) this.groups.delete(key);
  }

  /**
   * Recomputes every group from its members' SCANNED counts, and sets each
   * member's `sharedPages` and `savedPages` for the group's class.
   *
   * Zero pages: every hashed zero page of a group maps to one machine page.
   * Image pages: within one VM they are distinct, so they share only across
   * VMs. The scanner reaches a VM's pages in its own order, so a member's s
   * hashed pages are taken as a uniform random subset of the image's n; the
   * group then needs n·(1 − Π(1 − s_i/n)) machine pages (the expected number
   * of contents some member holds), and a page of member i is shared with
   * probability 1 − Π_{j≠i}(1 − s_j/n).
   */
  recompute(): SharingTotals {
    let machine = 0;
    let scanned = 0;
    let inter = 0;
    for (const group of this.groups.values()) {
      const { cls, members } = group;
      let sum = 0;
      for (const vm of members) sum += vm.at(SCANNED, cls);
      scanned += sum;
      if (cls === ZERO) {
        const groupMachine = Math.min(1, sum);
        machine += groupMachine;
        let alone = 0;
        for (const vm of members) alone += Math.min(1, vm.at(SCANNED, ZERO));
        // Savings a VM would have alone (its zero pages on one page) are intra-VM; the rest needs others.
        inter += alone - groupMachine;
        const saved = sum - groupMachine;
        for (const vm of members) {
          const s = vm.at(SCANNED, ZERO);
          vm.sharedPages[ZERO] = sum >= 2 ? s : 0;
          vm.savedPages[ZERO] = sum > 0 ? (saved * s) / sum : 0;
        }
        continue;
      }
      const n = group.contentPages;
      // Π(1 − s_i/n), kept as the product of the non-zero factors and a count of zero ones, so each member's "others" product is exact.
      let product = 1;
      let zeros = 0;
      for (const vm of members) {
        const factor = 1 - Math.min(1, vm.at(SCANNED, IMAGE) / n);
        if (factor <= 0) zeros++;
        else product *= factor;
      }
      const groupMachine = n * (1 - (zeros > 0 ? 0 : product));
      machine += groupMachine;
      inter += sum - groupMachine;
      let sharedSum = 0;
      for (const vm of members) {
        const factor = 1 - Math.min(1, vm.at(SCANNED, IMAGE) / n);
        const others = factor <= 0 ? (zeros > 1 ? 0 : product) : zeros > 0 ? 0 : product / factor;
        const shared = vm.at(SCANNED, IMAGE) * (1 - others);
        vm.sharedPages[IMAGE] = shared;
        sharedSum += shared;
      }
      const saved = sum - groupMachine;
      for (const vm of members) vm.savedPages[IMAGE] = sharedSum > 0 ? (saved * vm.sharedPages[IMAGE]!) / sharedSum : 0;
    }
    const t = this.totals;
    t.machinePages = machine;
    t.scannedPages = scanned;
    t.savedPages = scanned - machine;
    t.interVmSavedPages = Math.max(0, inter);
    return t;
  }
}
