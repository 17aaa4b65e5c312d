// A host's free-memory states as vSphere 6.0 and later define them: minFree
// from its sliding scale (or a configured percentage), the thresholds that
// start each state's reclamation, and the hysteresis that keeps a host from
// flapping at a threshold. Pure arithmetic on megabytes; what each state does
// to the VMs is the memory manager's business, not this file's.

/**
 * The state vSphere reports for a host, from its free memory against minFree.
 * Each starts when free memory drops below its threshold × minFree.
 */
export type MemoryState =
  /** At or above 100 %: nothing is reclaimed under pressure; below the high threshold (400 %) large pages are broken for TPS. */
  | "high"
  /** Below 100 %: large pages are broken at once and TPS collapses them. */
  | "clear"
  /** Below 64 %: TPS and ballooning. */
  | "soft"
  /** Below 32 %: TPS, compression and host swap; the balloon stops inflating. */
  | "hard"
  /** Below 16 %: compression and swap, and VM allocations block. */
  | "low";

/**
 * The manager's finer view: 0 = high with nothing to do (free ≥ 400 %),
 * 1 = high and breaking large pages, 2 = clear, 3 = soft, 4 = hard, 5 = low.
 */
export type MemoryLevel = 0 | 1 | 2 | 3 | 4 | 5;

/** The state each level reports. */
export const memoryLevelStates: readonly MemoryState[] = ["high", "high", "clear", "soft", "hard", "low"];

/** Epping's table for 6.0: high 400 %, clear 100 %, soft 64 %, hard 32 %, low 16 % (percent of minFree). */
export const memoryStateThresholdsPct = { high: 400, clear: 100, soft: 64, hard: 32, low: 16 } as const;

/**
 * Hysteresis band default, in percent of a threshold: a host leaves a state
 * upwards only when free memory reaches threshold × (1 + band). The sources
 * say transitions have hysteresis but not how wide (unverified), so it is a
 * parameter.
 */
export const hysteresisPctDefault = 10;

/** The sliding scale's steps: [size of the slice in MB, percent of it kept free]. */
const slidingScale: readonly (readonly [number, number])[] = [
  [4 * 1024, 6],
  [8 * 1024, 4],
  [16 * 1024, 2],
  [Infinity, 1],
];

/**
 * minFree of a host, in MB: the sliding scale (6 % of the first 4 GB, 4 % of
 * the next 8 GB, 2 % of the next 16 GB, 1 % above 28 GB) when `minFreePct` is
 * 0 (Mem.MemMinFreePct's "auto"), else that percent of the host's memory.
 */
export function minFreeMb(memoryMb: number, minFreePct = 0): number {
  if (minFreePct > 0) return (memoryMb * minFreePct) / 100;
  let rest = memoryMb;
  let total = 0;
  for (const [sliceMb, pct] of slidingScale) {
    const take = Math.min(rest, sliceMb);
    total += (take * pct) / 100;
    rest -= take;
    if (rest <= 0) break;
  }
  return total;
}

/**
 * The free-memory levels (in MB) below which levels 1..5 start, highest first.
 * @param highThresholdPct the high state's threshold (400 in Epping's table, 300 in another source).
 */
export function memoryLevelThresholdsMb(minFree: number, highThresholdPct: number = memoryStateThresholdsPct.high): number[] {
  const t = memoryStateThresholdsPct;
  return [highThresholdPct, t.clear, t.soft, t.hard, t.low].map((pct) => (minFree * pct) / 100);
}

/**
 * The level after seeing `freeMb` free: down at once to the deepest
 * threshold crossed, up one level at a time only past threshold × (1 + band),
 * so a host that just reclaimed to its threshold does not flap back.
 */
export function nextMemoryLevel(level: MemoryLevel, freeMb: number, thresholdsMb: readonly number[], hysteresisPct: number): MemoryLevel {
  let deepest = 0;
  for (let i = 0; i < thresholdsMb.length; i++) if (freeMb < thresholdsMb[i]!) deepest = i + 1;
  if (deepest > level) return deepest as MemoryLevel;
  let next: number = level;
  const band = 1 + hysteresisPct / 100;
  while (next > 0 && freeMb >= thresholdsMb[next - 1]! * band) next--;
  return next as MemoryLevel;
}
