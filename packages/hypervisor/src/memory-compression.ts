// A VM's memory compression cache, kept as batches of page counts in the
// order they were compressed: a page leaves the cache when the guest touches
// it (decompressed back), so the pages still there are least recently used
// in insertion order, and eviction to swap takes the oldest batch first. It
// holds counts only, never page contents, and a bounded number of batches.

/** Slot sizes in KB: a page compressed by more than 75 % takes a quarter, one of at most 2 KB a half. */
export const quarterSlotKb = 1;
export const halfSlotKb = 2;
/** Batches a cache keeps; past it the two neighbours with the fewest pages merge (their order against each other is lost, nothing else). */
export const cacheBatchesMax = 16;

const classes = 3;
// Per batch: [compressedAtMs, quarter pages of class 0..2, half pages of class 0..2].
const stride = 1 + 2 * classes;

/** The compressed pages of one VM, oldest first; counts per class and slot size. */
export class CompressionCache {
  private readonly ring = new Float64Array(cacheBatchesMax * stride);
  private head = 0;
  private count = 0;
  private usedKbTotal = 0;
  private pagesTotal = 0;

  /** @param capacityKb the cache's limit (Mem.MemZipMaxPct of the VM's memory). */
  constructor(public capacityKb: number) {}

  /** Compressed pages held (guest pages, not slots). */
  totalPages(): number {
    return this.pagesTotal;
  }

  /** Machine memory the slots take, in KB; charged to the VM. */
  usedKb(): number {
    return this.usedKbTotal;
  }

  /** Pages of class `cls` held. */
  classPages(cls: number): number {
    let n = 0;
    for (let b = 0; b < this.count; b++) {
      const o = this.offset(b);
      n += this.ring[o + 1 + cls]! + this.ring[o + 1 + classes + cls]!;
    }
    return n;
  }

  /**
   * Adds pages compressed at `atMs` (`quarter[c]`, `half[c]` pages of class
   * c), then evicts least recently used pages until the cache fits its
   * capacity; the evicted pages (which go to swap) are added per class to
   * `evicted`. A batch bigger than the whole cache evicts part of itself.
   */
  insert(atMs: number, quarter: ArrayLike<number>, half: ArrayLike<number>, evicted: Float64Array): void {
    let o: number;
    const newest = this.count > 0 ? this.offset(this.count - 1) : -1;
    if (newest >= 0 && this.ring[newest] === atMs) {
      o = newest;
    } else {
      if (this.count === cacheBatchesMax) this.mergeSmallestPair();
      o = this.offset(this.count);
      this.ring.fill(0, o, o + stride);
      this.ring[o] = atMs;
      this.count++;
    }
    for (let c = 0; c < classes; c++) {
      const q = quarter[c]!;
      const h = half[c]!;
      this.ring[o + 1 + c] = this.ring[o + 1 + c]! + q;
      this.ring[o + 1 + classes + c] = this.ring[o + 1 + classes + c]! + h;
      this.pagesTotal += q + h;
      this.usedKbTotal += q * quarterSlotKb + h * halfSlotKb;
    }
    this.evictToFit(evicted);
  }

  /** Evicts oldest pages until the cache fits `capacityKb` (after a capacity change too). */
  evictToFit(evicted: Float64Array): void {
    // A tolerance of a thousandth of a KB: float sums never land exactly.
    while (this.count > 0 && this.usedKbTotal > this.capacityKb + 1e-3) {
      const o = this.offset(0);
      const kb = this.batchKb(o);
      const over = this.usedKbTotal - this.capacityKb;
      if (kb <= over) {
        this.takeFraction(o, 1, evicted);
        this.head = (this.head + 1) % cacheBatchesMax;
        this.count--;
      } else {
        this.takeFraction(o, over / kb, evicted);
      }
    }
    if (this.count === 0) this.pagesTotal = this.usedKbTotal = 0;
  }

  /**
   * Takes `n` pages spread evenly over the cache (pages the guest touched, or
   * brought back when pressure went); adds them per class to `taken`.
   * @returns the pages taken (at most what the cache holds).
   */
  takeUniform(n: number, taken: Float64Array): number {
    if (n <= 0 || this.pagesTotal <= 0) return 0;
    const take = Math.min(n, this.pagesTotal);
    const fraction = take / this.pagesTotal;
    for (let b = 0; b < this.count; b++) this.takeFraction(this.offset(b), fraction, taken);
    if (fraction === 1) this.clear();
    return take;
  }

  /** Empties the cache (the VM is gone or its pages all came back). */
  clear(): void {
    this.head = this.count = 0;
    this.pagesTotal = this.usedKbTotal = 0;
  }

  /** The batches oldest first: when each was compressed and how many pages are left of it. */
  batches(): { compressedAtMs: number; pages: number }[] {
    const out: { compressedAtMs: number; pages: number }[] = [];
    for (let b = 0; b < this.count; b++) {
      const o = this.offset(b);
      out.push({ compressedAtMs: this.ring[o]!, pages: this.batchPages(o) });
    }
    return out;
  }

  private offset(b: number): number {
    return ((this.head + b) % cacheBatchesMax) * stride;
  }

  private batchKb(o: number): number {
    let kb = 0;
    for (let c = 0; c < classes; c++) kb += this.ring[o + 1 + c]! * quarterSlotKb + this.ring[o + 1 + classes + c]! * halfSlotKb;
    return kb;
  }

  /** Removes `fraction` of batch `o`'s pages, adding them per class to `out`. */
  private takeFraction(o: number, fraction: number, out: Float64Array): void {
    for (let c = 0; c < classes; c++) {
      const q = this.ring[o + 1 + c]! * fraction;
      const h = this.ring[o + 1 + classes + c]! * fraction;
      this.ring[o + 1 + c] = this.ring[o + 1 + c]! - q;
      this.ring[o + 1 + classes + c] = this.ring[o + 1 + classes + c]! - h;
      out[c] = out[c]! + q + h;
      this.pagesTotal = Math.max(0, this.pagesTotal - q - h);
      this.usedKbTotal = Math.max(0, this.usedKbTotal - q * quarterSlotKb - h * halfSlotKb);
    }
  }

  /**
   * Makes room for a batch by folding together the two neighbouring batches
   * with the fewest pages (keeping the older time), so batches stay of
   * similar size and eviction order stays close to exact LRU.
   */
  private mergeSmallestPair(): void {
    let best = 0;
    let bestPages = Infinity;
    for (let b = 0; b + 1 < this.count; b++) {
      const pages = this.batchPages(this.offset(b)) + this.batchPages(this.offset(b + 1));
      if (pages < bestPages) {
        bestPages = pages;
        best = b;
      }
    }
    const into = this.offset(best);
    const from = this.offset(best + 1);
    for (let i = 1; i < stride; i++) this.ring[into + i] = this.ring[into + i]! + this.ring[from + i]!;
    // Later batches move down one place.
    for (let b = best + 1; b + 1 < this.count; b++) {
      const to = this.offset(b);
      const next = this.offset(b + 1);
      for (let i = 0; i < stride; i++) this.ring[to + i] = this.ring[next + i]!;
    }
    this.count--;
  }

  private batchPages(o: number): number {
    let pages = 0;
    for (let i = 1; i < stride; i++) pages += this.ring[o + i]!;
    return pages;
  }
}
