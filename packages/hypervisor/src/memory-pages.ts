// A VM's guest memory as counts of pages by content class and backing state,
// never as one entry per page: whatever a VM's configured size, its ledger is
// a few small typed arrays. This file owns the units, the page classes, their
// compressibility, the overhead formula and the ledger's layout; it moves no
// pages on its own (the memory manager does).

import { Rng } from "@simdc/common";
import { CompressionCache } from "./memory-compression.js";

/** Small pages per MB (4 KiB pages). */
export const pagesPerMb = 256;
/** Small pages in one 2 MiB large page. */
export const largePagePages = 512;

/**
 * Content classes. Zero pages all hold the same content; OS-image pages hold
 * the content of one page of a shared image (VMs from one image hold the same
 * pages); private pages are unique.
 */
export type PageClass = "zero" | "image" | "private";
export const ZERO = 0;
export const IMAGE = 1;
export const PRIVATE = 2;
export const pageClasses: readonly PageClass[] = ["zero", "image", "private"];
export const classCount = 3;

/**
 * Backing states, one row of `classCount` counts each in the ledger:
 * - LARGE: backed by a 2 MiB large page; TPS cannot share it until it is broken.
 * - AHEAD / BEHIND: backed by a small page of its own, not yet collapsed by
 *   TPS, ahead of or behind the scanner's cursor in its current pass.
 * - SCANNED: hashed into the sharing table (zero and image pages only;
 *   private pages are unique, so a scanned one just moves BEHIND).
 * - BALLOON: pinned by the guest's balloon driver; no machine page.
 * - SWAPPED: in the VM's host swap file.
 * Compressed pages live in the VM's compression cache, by class too.
 */
export const LARGE = 0;
export const AHEAD = 1;
export const BEHIND = 2;
export const SCANNED = 3;
export const BALLOON = 4;
export const SWAPPED = 5;
export const stateCount = 6;

/** Shares presets in shares per configured MB (vSphere's High/Normal/Low for memory). */
export const memorySharesPerMb = { high: 20, normal: 10, low: 5 } as const;
export type MemorySharesPreset = keyof typeof memorySharesPerMb;

/**
 * How a class's pages compress: the share that fits a 1 KB quarter-slot
 * (more than 75 % compression) and the share that fits a 2 KB half-slot; the
 * rest (over 2 KB) is swapped instead of kept.
 */
export interface Compressibility {
  quarter: number;
  half: number;
}

/**
 * Class means before each VM's seeded spread. Zero pages compress to almost
 * nothing, so all take the smallest slot. Image pages (code, read-only data)
 * compress well; private data mixes heaps, caches and already-compressed
 * media, so nearly half does not fit 2 KB. (Chosen, not measured.)
 */
export const compressibilityDefaults: Readonly<Record<PageClass, Compressibility>> = {
  zero: { quarter: 1, half: 0 },
  image: { quarter: 0.25, half: 0.4 },
  private: { quarter: 0.15, half: 0.35 },
};

/** How far (±, relative) a VM's image and private shares stray from the class means. */
export const compressibilitySpread = 0.3;

/**
 * A VM's compressibility per class, seeded: each share of the non-zero
 * classes is scaled by a factor in [1 − spread, 1 + spread] from `rng`, so two
 * VMs with the same data still split their swap candidates a little
 * differently, and a rerun with the same seed splits them the same way.
 * `fixed` overrides a class exactly (tests compute oracles from it).
 */
export function drawCompressibility(rng: Rng, fixed: Partial<Record<PageClass, Compressibility>> = {}): Float64Array {
  // Layout: [quarter of class 0..2, half of class 0..2].
  const out = new Float64Array(2 * classCount);
  for (let c = 0; c < classCount; c++) {
    const name = pageClasses[c]!;
    const given = fixed[name];
    const mean = compressibilityDefaults[name];
    let q = given ? given.quarter : mean.quarter;
    let h = given ? given.half : mean.half;
    if (!given && c !== ZERO) {
      q *= 1 + compressibilitySpread * (2 * rng.next() - 1);
      h *= 1 + compressibilitySpread * (2 * rng.next() - 1);
      const sum = q + h;
      if (sum > 1) {
        q /= sum;
        h /= sum;
      }
    }
    out[c] = q;
    out[classCount + c] = h;
  }
  return out;
}

/**
 * Overhead memory of a VM in MB: 14 + 4 per vCPU + 0.74 % of its configured
 * memory. This follows vSphere's published overhead table for one vCPU
 * within a few percent (256 MB → 20.3, 1 GB → 25.9, 4 GB → 48.6, 16 GB →
 * 139.6 MB there; 19.9, 25.6, 48.3, 139.2 here); the per-vCPU term is an
 * estimate. Overhead is reserved at power-on and never reclaimed.
 */
export function memoryOverheadMb(memoryMb: number, vcpus: number): number {
  return 14 + 4 * vcpus + 0.0074 * memoryMb;
}

/** One VM's memory as the manager holds it. */
export class VmPages {
  /** Page counts by [state * classCount + class]. Fractions of a page are allowed: rates times time. */
  readonly pages = new Float64Array(stateCount * classCount);
  /** Pages per class that share a machine page with another guest page (set by the sharing table). */
  readonly sharedPages = new Float64Array(classCount);
  /** Machine pages per class this VM is credited with saving by sharing (set by the sharing table). */
  readonly savedPages = new Float64Array(classCount);
  /** The mix each class makes of touched memory: zero, image, private. */
  readonly mix = new Float64Array(classCount);
  readonly cache: CompressionCache;
  /** Where the TPS cursor is in its current pass over this VM, 0..1. */
  scanProgress = 0;
  /** Swapped and compressed pages that belong to the guest's active set (they fault back in). */
  swappedActive = 0;
  compressedActive = 0;
  /** What the guest wants touched, in pages; touched memory moves towards it. */
  touchedTarget: number;
  activeFraction = 0.2;
  usedFraction = 0.6;
  dirtyFractionPerSec = 0;
  // Results of the last step.
  swapWaitFraction = 0;
  decompressMs = 0;
  allocationBlocked = false;
  zeroGroupKey = "";
  imageGroupKey = "";

  constructor(
    readonly id: string,
    readonly memoryPages: number,
    public reservationPages: number,
    public shares: number,
    readonly overheadPages: number,
    readonly imageId: string | undefined,
    readonly imagePages: number,
    readonly largePages: boolean,
    public salt: string,
    readonly balloonDriver: boolean,
    readonly compressibility: Float64Array,
    cacheCapacityKb: number,
    touchedTarget: number,
  ) {
    this.cache = new CompressionCache(cacheCapacityKb);
    this.touchedTarget = touchedTarget;
  }

  at(state: number, cls: number): number {
    return this.pages[state * classCount + cls]!;
  }

  add(state: number, cls: number, n: number): void {
    const i = state * classCount + cls;
    // Proportional takes leave float dust; a count never goes below zero.
    this.pages[i] = Math.max(0, this.pages[i]! + n);
  }

  /** Pages of `state` over all classes. */
  inState(state: number): number {
    const p = this.pages;
    const i = state * classCount;
    return p[i]! + p[i + 1]! + p[i + 2]!;
  }

  /** Backed by a machine page of their own (large or small, not in the sharing table). */
  unsharedPages(): number {
    return this.inState(LARGE) + this.inState(AHEAD) + this.inState(BEHIND);
  }

  /** Backed by machine memory, shared or not: vSphere's granted. */
  grantedPages(): number {
    return this.unsharedPages() + this.inState(SCANNED);
  }

  /** Every guest page the guest has touched, wherever it is now. */
  touchedPages(): number {
    return this.grantedPages() + this.inState(BALLOON) + this.inState(SWAPPED) + this.cache.totalPages();
  }

  /** The share of resident pages that are in the guest's active set (active memory is counted within touched memory). */
  activeShare(): number {
    const touched = this.touchedPages();
    return touched > 0 ? Math.min(1, (this.activeFraction * this.memoryPages) / touched) : 0;
  }
}
