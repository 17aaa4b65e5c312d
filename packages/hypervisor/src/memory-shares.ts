// Which VMs give up memory under pressure: Waldspurger's share-based
// allocation with an idle memory tax (OSDI 2002). Pages are reclaimed from
// the VM with the lowest adjusted shares-per-page ratio ρ, so idle memory is
// taxed; this file turns "reclaim N pages" into per-VM amounts and holds no
// state of its own.

/** Mem.IdleTax's default, as a fraction: idle pages cost four times active ones (k = 1 / (1 − τ) = 4). */
export const idleTaxDefault = 0.75;

/**
 * ρ = S / (P · (f + k(1 − f))) with k = 1 / (1 − τ).
 * @param shares S, the VM's memory shares.
 * @param pages P, pages the VM holds now.
 * @param activeFraction f, the active share of its memory, 0..1.
 * @param idleTax τ, 0..1 (exclusive).
 */
export function memoryShareRatio(shares: number, pages: number, activeFraction: number, idleTax: number): number {
  const k = 1 / (1 - idleTax);
  return shares / (pages * (activeFraction + k * (1 - activeFraction)));
}

/** Bisection steps for the water level; 2^-60 of the range is far below a page. */
const bisectionSteps = 60;

/**
 * Splits `total` pages of reclamation among `n` VMs, lowest ρ first: taking
 * from the VM of lowest ρ raises its ρ (it holds fewer pages), so the result
 * is a water level λ where every VM that gives pages ends at ρ = λ, or gives
 * all it can (`avail`). Writes each VM's pages into `out`.
 * @returns the pages allotted, `total` or less when all VMs together have less.
 */
export function reclaimByShares(
  total: number,
  n: number,
  shares: Float64Array,
  pages: Float64Array,
  activeFraction: Float64Array,
  avail: Float64Array,
  idleTax: number,
  out: Float64Array,
): number {
  let availSum = 0;
  for (let i = 0; i < n; i++) availSum += Math.max(0, avail[i]!);
  if (total <= 0 || availSum <= 0) {
    out.fill(0, 0, n);
    return 0;
  }
  if (availSum <= total) {
    for (let i = 0; i < n; i++) out[i] = Math.max(0, avail[i]!);
    return availSum;
  }
  const k = 1 / (1 - idleTax);
  // At λ a VM keeps S / (λ·c) pages, c = f + k(1 − f): it gives P − S/(λc), within [0, avail].
  const taken = (lambda: number): number => {
    let sum = 0;
    for (let i = 0; i < n; i++) {
      const a = avail[i]!;
      if (a <= 0) continue;
      const c = activeFraction[i]! + k * (1 - activeFraction[i]!);
      sum += Math.min(a, Math.max(0, pages[i]! - shares[i]! / (lambda * c)));
    }
    return sum;
  };
  let lo = Infinity;
  for (let i = 0; i < n; i++) {
    if (avail[i]! > 0) lo = Math.min(lo, memoryShareRatio(shares[i]!, pages[i]!, activeFraction[i]!, idleTax));
  }
  let hi = lo * 2;
  // The level where the allotment reaches `total` is finite since all VMs together hold more.
  for (let i = 0; i < 2000 && taken(hi) < total; i++) hi *= 2;
  for (let i = 0; i < bisectionSteps; i++) {
    const mid = (lo + hi) / 2;
    if (taken(mid) < total) lo = mid;
    else hi = mid;
  }
  const c0 = taken(hi);
  const scale = c0 > 0 ? total / c0 : 0;
  for (let i = 0; i < n; i++) {
    const a = avail[i]!;
    const c = activeFraction[i]! + k * (1 - activeFraction[i]!);
    out[i] = a <= 0 ? 0 : Math.min(a, Math.max(0, pages[i]! - shares[i]! / (hi * c))) * scale;
  }
  return total;
}
