// A binary heap ordered by a "comes before" function, with an optional
// callback that tells where each item moved, so a caller can keep an index
// of positions and re-rank or remove an item in O(log n).

export class Heap<T> {
  private readonly items: T[] = [];

  /**
   * @param before true when `a` must come out before `b`.
   * @param moved told each item's new position whenever it moves.
   */
  constructor(
    private readonly before: (a: T, b: T) => boolean,
    private readonly moved: (item: T, index: number) => void = () => undefined,
  ) {}

  get size(): number {
    return this.items.length;
  }

  /** The item at `index` (0 is the first out). */
  at(index: number): T | undefined {
    return this.items[index];
  }

  peek(): T | undefined {
    return this.items[0];
  }

  push(item: T): void {
    this.items.push(item);
    this.moved(item, this.items.length - 1);
    this.up(this.items.length - 1);
  }

  pop(): T | undefined {
    if (this.items.length === 0) return undefined;
    const top = this.items[0]!;
    this.removeAt(0);
    return top;
  }

  /** Replaces the item at `index` (same identity or not) and restores the order. */
  replaceAt(index: number, item: T): void {
    this.items[index] = item;
    this.moved(item, index);
    this.down(this.up(index));
  }

  removeAt(index: number): void {
    const last = this.items.pop()!;
    if (index === this.items.length) return;
    this.items[index] = last;
    this.moved(last, index);
    this.down(this.up(index));
  }

  private up(i: number): number {
    const items = this.items;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.before(items[i]!, items[parent]!)) break;
      this.swap(i, parent);
      i = parent;
    }
    return i;
  }

  private down(i: number): void {
    const items = this.items;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let first = i;
      if (l < items.length && this.before(items[l]!, items[first]!)) first = l;
      if (r < items.length && this.before(items[r]!, items[first]!)) first = r;
      if (first === i) return;
      this.swap(i, first);
      i = first;
    }
  }

  private swap(a: number, b: number): void {
    const items = this.items;
    const t = items[a]!;
    items[a] = items[b]!;
    items[b] = t;
    this.moved(items[a]!, a);
    this.moved(items[b]!, b);
  }
}
