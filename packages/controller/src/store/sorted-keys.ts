// A sorted set of keys (VM, volume and host ids) for paging: adding or
// removing a key costs O(log n + block) and a page after a token costs
// O(log n + page), so listing 200,000 VMs page by page never sorts the set
// again. Keys live in blocks of at most blockSizeMax, each sorted, the blocks
// in order.

const blockSizeMax = 512;

export class SortedKeys {
  private readonly blocks: string[][] = [];
  private count = 0;

  get size(): number {
    return this.count;
  }

  add(key: string): void {
    if (this.blocks.length === 0) {
      this.blocks.push([key]);
      this.count = 1;
      return;
    }
    const b = this.blockFor(key);
    const block = this.blocks[b]!;
    const i = lowerBound(block, key);
    if (block[i] === key) return;
    block.splice(i, 0, key);
    this.count += 1;
    if (block.length > blockSizeMax) this.blocks.splice(b + 1, 0, block.splice(block.length >> 1));
  }

  delete(key: string): void {
    if (this.blocks.length === 0) return;
    const b = this.blockFor(key);
    const block = this.blocks[b]!;
    const i = lowerBound(block, key);
    if (block[i] !== key) return;
    block.splice(i, 1);
    this.count -= 1;
    if (block.length === 0) this.blocks.splice(b, 1);
  }

  /** Up to `limit` keys strictly after `after` ("" for the start), in order. */
  after(after: string, limit: number): string[] {
    const out: string[] = [];
    if (this.blocks.length === 0 || limit <= 0) return out;
    let b = after === "" ? 0 : this.blockFor(after);
    let i = after === "" ? 0 : upperBound(this.blocks[b]!, after);
    for (; b < this.blocks.length && out.length < limit; b++, i = 0) {
      const block = this.blocks[b]!;
      for (; i < block.length && out.length < limit; i++) out.push(block[i]!);
    }
    return out;
  }

  /** The block whose range holds `key`: the last block whose first key is at or before it. */
  private blockFor(key: string): number {
    let lo = 0;
    let hi = this.blocks.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.blocks[mid]![0]! <= key) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }
}

function lowerBound(block: string[], key: string): number {
  let lo = 0;
  let hi = block.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (block[mid]! < key) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function upperBound(block: string[], key: string): number {
  let lo = 0;
  let hi = block.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (block[mid]! <= key) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
