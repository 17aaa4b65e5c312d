// The CPU scheduler's run queue: a binary min-heap of VM slots ordered by
// virtual time (the key array belongs to the scheduler), with a position index
// so a VM can be removed or re-ranked in O(log n). Typed arrays only and no
// closures, because it runs every quantum; it must not allocate except to grow.
// Each entry's key is copied beside it in heap order, so sifting reads
// neighbouring memory rather than chasing slots into the key array.

/** A min-heap of small integer slots keyed by `keys[slot]`, ties broken by the lower slot. */
export class VtHeap {
  private heap: Int32Array;
  /** hk[i] = keys[heap[i]] as of the last push or update. */
  private hk: Float64Array;
  private pos: Int32Array;
  private n = 0;

  /** @param keys the key of each slot; read, never written. Replace it with `rekey` when it grows. */
  constructor(
    private keys: Float64Array,
    capacity: number,
  ) {
    this.heap = new Int32Array(capacity);
    this.hk = new Float64Array(capacity);
    this.pos = new Int32Array(capacity).fill(-1);
  }

  get size(): number {
    return this.n;
  }

  /** Points the heap at a new (grown) key array and makes room for `capacity` slots. */
  rekey(keys: Float64Array, capacity: number): void {
    this.keys = keys;
    if (capacity > this.pos.length) {
      const heap = new Int32Array(capacity);
      heap.set(this.heap.subarray(0, this.n));
      const hk = new Float64Array(capacity);
      hk.set(this.hk.subarray(0, this.n));
      this.hk = hk;
      const pos = new Int32Array(capacity).fill(-1);
      pos.set(this.pos);
      this.heap = heap;
      this.pos = pos;
    }
  }

  has(slot: number): boolean {
    return this.pos[slot]! >= 0;
  }

  /** The slot with the lowest key; -1 when empty. */
  peek(): number {
    return this.n > 0 ? this.heap[0]! : -1;
  }

  push(slot: number): void {
    const i = this.n++;
    this.heap[i] = slot;
    this.hk[i] = this.keys[slot]!;
    this.pos[slot] = i;
    this.up(i);
  }

  /** Removes and returns the slot with the lowest key; -1 when empty. */
  pop(): number {
    if (this.n === 0) return -1;
    const top = this.heap[0]!;
    this.removeAt(0);
    return top;
  }

  remove(slot: number): void {
    const i = this.pos[slot]!;
    if (i >= 0) this.removeAt(i);
  }

  /** Restores the order after `keys[slot]` changed. */
  update(slot: number): void {
    const i = this.pos[slot]!;
    if (i < 0) return;
    this.hk[i] = this.keys[slot]!;
    this.down(this.up(i));
  }

  clear(): void {
    for (let i = 0; i < this.n; i++) this.pos[this.heap[i]!] = -1;
    this.n = 0;
  }

  private removeAt(i: number): void {
    const gone = this.heap[i]!;
    this.pos[gone] = -1;
    const last = --this.n;
    if (i === last) return;
    const moved = this.heap[last]!;
    this.heap[i] = moved;
    this.hk[i] = this.hk[last]!;
    this.pos[moved] = i;
    this.down(this.up(i));
  }

  // Moves the entry at i towards the root while it comes before its parent; returns where it stopped.
  private up(i: number): number {
    const heap = this.heap;
    const hk = this.hk;
    const pos = this.pos;
    const slot = heap[i]!;
    const key = hk[i]!;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      const pk = hk[parent]!;
      const p = heap[parent]!;
      if (!(key < pk || (key === pk && slot < p))) break;
      heap[i] = p;
      hk[i] = pk;
      pos[p] = i;
      i = parent;
    }
    heap[i] = slot;
    hk[i] = key;
    pos[slot] = i;
    return i;
  }

  private down(i: number): void {
    const heap = this.heap;
    const hk = this.hk;
    const pos = this.pos;
    const n = this.n;
    const slot = heap[i]!;
    const key = hk[i]!;
    for (;;) {
      let child = 2 * i + 1;
      if (child >= n) break;
      let ck = hk[child]!;
      const right = child + 1;
      if (right < n) {
        const rk = hk[right]!;
        if (rk < ck || (rk === ck && heap[right]! < heap[child]!)) {
          child = right;
          ck = rk;
        }
      }
      const c = heap[child]!;
      if (!(ck < key || (ck === key && c < slot))) break;
      heap[i] = c;
      hk[i] = ck;
      pos[c] = i;
      i = child;
    }
    heap[i] = slot;
    hk[i] = key;
    pos[slot] = i;
  }
}
