// The vCPU scheduler of one simulated host, with vSphere's CPU semantics:
// reservation (a floor), limit (a ceiling, even on an idle host), shares
// (High/Normal/Low = 2000/1000/500 per vCPU, or custom), strict or relaxed
// co-scheduling, hyperthreads, a hosted (type 2) overhead, and esxtop's
// counters. It owns only CPU time: demand comes from the caller (a workload),
// swap stalls from the memory model, as plain numbers. Pure and deterministic:
// no I/O, no clock, no randomness, and no allocation in `step` but to grow.
//
// Model, per quantum (default 50 ms; one quantum across all pCPUs):
// 1. Each vCPU's backlog grows by demand × quantum of work (capped at one
//    quantum's) and it wants to run that long, less its swap wait.
// 2. A VM over its limit has its wants cut to the limit (%MLMTD); a VM with a
//    reservation gets min(reservation, want) first, out of turn.
// 3. The rest goes to VMs in order of virtual time (CPU charged / shares): a
//    stride scheduler, which converges to the max-min fair entitlement. The VM
//    reached when capacity runs out is served in part: relaxed, its vCPUs drawn
//    level (ESX 3+ interleaves finely); strict, whole slices to its laggards
//    until a leader is too far ahead, when the VM stops whole (ESX 2.x). Skew
//    from uneven load makes relaxed co-stop; strict co-stop comes from that
//    boundary too, which is why a wide VM co-stops and a narrow one never does.
// 4. Within a quantum capacity is fluid: a vCPU that wants 30% of a quantum
//    leaves the rest of its pCPU's quantum to another (McNaughton's wrap-around
//    rule makes any set of runs of at most one quantum each fit the pCPUs).
// 5. Hyperthreads add logical CPUs, not capacity: a vCPU beside a busy sibling
//    thread runs at half charge (%RUN > %USED), and the scheduler pairs vCPUs
//    only where that buys no VM more than its shares.

import { alreadyExists, checkName, checkRange, failedPrecondition, invalidArgument, notFound, resourceExhausted } from "@simdc/common";
import { VtHeap } from "./cpu-vt-heap.js";

/** "strict": ESX 2.x, a VM whose skew passes the threshold stops whole until all its busy vCPUs can run together. "relaxed": ESX 3+, only the leading vCPUs stop. */
export type Coscheduling = "strict" | "relaxed";

/** vSphere's CPU share presets. */
export type CpuSharesPreset = "high" | "normal" | "low";

/** Shares per vCPU of each preset (REFERENCES §1: 2000/1000/500 per vCPU). */
export const cpuSharesPerVcpu: Readonly<Record<CpuSharesPreset, number>> = { high: 2000, normal: 1000, low: 500 };

/** The bounds the scheduler enforces on its settings and inputs. */
export const cpuSchedulerLimits = {
  /** The most custom shares a VM may have (vSphere's custom range ends at 1,000,000). */
  sharesMax: 1_000_000,
  coresMax: 1024,
  coreMhzMax: 10_000,
  quantumMsMin: 1,
  quantumMsMax: 1000,
  skewThresholdMsMax: 10_000,
  hostedOverheadPctMax: 90,
  /** The highest admission cap accepted for vCPUs per core. */
  vcpusPerCoreMax: 256,
  /** vSphere 8's most vCPUs in one VM. */
  vcpusPerVmMax: 768,
  /** The longest simulated time one `step` may cover. */
  stepMsMax: 3_600_000,
} as const;
const L = cpuSchedulerLimits;

/** Host settings. Defaults: 1 thread per core, 2000 MHz, 50 ms quantum, relaxed, 3 ms skew, bare metal, 32 vCPUs per core. */
export interface CpuSchedulerOptions {
  /** Physical cores. */
  cores: number;
  /** 1, or 2 with hyperthreading: logical CPUs = cores × threadsPerCore, capacity stays cores × coreMhz. */
  threadsPerCore?: 1 | 2;
  /** One core's speed; reservations and limits are in MHz of it. */
  coreMhz?: number;
  /** The scheduling time slice; a step runs whole quanta (and a shorter last one). */
  quantumMs?: number;
  coscheduling?: Coscheduling;
  /** How far (ms of progress) a vCPU may run ahead of its slowest busy sibling before co-stop. */
  skewThresholdMs?: number;
  /** A hosted (type 2) host's cost: this share of every vCPU's run time does no guest work. 0 for bare metal. */
  hostedOverheadPct?: number;
  /** Admission cap: all powered-on vCPUs ≤ this × cores (vSphere 5.5: 32). */
  vcpusPerCoreMax?: number;
}

/** A VM's CPU settings, as vSphere has them. */
export interface VmCpuSettings {
  /** 1 to the host's logical CPUs. */
  vcpus: number;
  /** A preset (per vCPU) or a custom number for the whole VM. Default "normal". */
  shares?: CpuSharesPreset | number;
  /** Guaranteed MHz; at most vcpus × coreMhz, and it must fit in the host's unreserved MHz. Default 0. */
  reservationMhz?: number;
  /** Most MHz the VM may use, even on an idle host; ≥ reservation; undefined for unlimited. */
  limitMhz?: number;
}

/** Changeable settings of a powered-on VM (the vCPU count needs a power cycle). */
export type VmCpuUpdate = Omit<VmCpuSettings, "vcpus">;

/** Times in ms over some window (one vCPU, or summed over a VM's or host's vCPUs, as esxtop sums them). */
export interface CpuTimes {
  /** Scheduled on a logical CPU (%RUN). */
  runMs: number;
  /** Charged: run time, halved while the sibling hyperthread is busy too (%USED). */
  usedMs: number;
  /** Wanted to run but had no pCPU, including time held back by the limit (%RDY). */
  readyMs: number;
  /** Wanted to run but was co-stopped (%CSTP). */
  coStopMs: number;
  /** The part of readyMs held back by the limit (%MLMTD). */
  maxLimitedMs: number;
  /** Stalled on swap-in (%SWPWT). */
  swapWaitMs: number;
  /** Nothing to run. */
  idleMs: number;
  /** Work the guest wanted, in ms of one core at coreMhz. */
  workWantedMs: number;
  /** Work it got (used less any hosted overhead), in ms of one core. */
  workGotMs: number;
}

/** esxtop percentages of a window; for a VM they are sums over its vCPUs (up to vcpus × 100). */
export interface CpuPercentages {
  usedPct: number;
  runPct: number;
  readyPct: number;
  coStopPct: number;
  maxLimitedPct: number;
  swapWaitPct: number;
  /** Idle plus swap wait (%WAIT). */
  waitPct: number;
}

export interface VcpuCounters extends CpuPercentages {
  /** The last step's times. */
  window: CpuTimes;
  /** Since power-on. */
  total: CpuTimes;
}

export interface VmCpuCounters extends CpuPercentages {
  id: string;
  vcpus: number;
  /** Length of the last step, the window of the percentages. */
  windowMs: number;
  /** 1 − workGot / workWanted over the last step; 0 when nothing was wanted. */
  lostPerformance: number;
  window: CpuTimes;
  total: CpuTimes;
  perVcpu: VcpuCounters[];
}

export interface HostCpuCounters {
  windowMs: number;
  /** Σ used / (cores × window): how busy the cores were. */
  utilizationPct: number;
  /** Σ run / (logical CPUs × window): how busy the logical CPUs were. */
  runPct: number;
  cores: number;
  logicalCpus: number;
  vms: number;
  vcpus: number;
  /** The vCPU:pCPU ratio against cores (what the admission cap counts). */
  vcpusPerCore: number;
  /** The vCPU:pCPU ratio against logical CPUs. */
  vcpusPerLogicalCpu: number;
  capacityMhz: number;
  reservedMhz: number;
  unreservedMhz: number;
  /** Sums over the powered-on vCPUs, last step. */
  window: CpuTimes;
  /** Sums since the host started, including VMs since removed. */
  total: CpuTimes;
}

// Counters kept per vCPU, K to a vCPU, in ms. Idle time and work got are
// derived when read (idle = elapsed − the rest, got = used × efficiency), so
// the quantum loop writes only what it must.
const C_RUN = 0;
const C_USED = 1;
const C_READY = 2;
const C_COSTOP = 3;
const C_MLMTD = 4;
const C_SWPWT = 5;
const C_WANTED = 6;
const K = 7;

// Per-quantum VM flags; the scratch arrays of a VM are read only when its flag says they were written.
const F_RESERVED = 1; // run1 holds its reserved runs
const F_LIMITED = 2; // limShort holds what the limit took
const F_SERVED = 4; // run2 holds its shares runs
const F_CONTENDED = 8; // wanted more than it got
const F_COSTARTED = 16; // strict: ran with all its busy vCPUs together
const F_COSTOPPED_NOW = 32; // strict: stopped whole during this quantum
const F_SLEPT = 64; // got all it wanted and left time idle (a sleeper, in CFS's terms)
const F_QUIET = 128; // no demand and nothing queued: skipped this quantum

// Where a busy VM waits. The front holds VMs whose virtual time is below every
// backlogged VM's: they come first whatever their order among themselves, so
// while they fit they are served in one pass, and the heap orders only the rest.
const Q_NONE = 0;
const Q_HEAP = 1;
const Q_FRONT = 2;

/** Amounts below this (ms) are rounding, not time. */
const EPS = 1e-9;
/**
 * How far behind the busy VMs (in quanta of all its vCPUs) a sleeping VM's
 * virtual time may fall: a VM that was idle, or used less than its share, gets
 * at most this much catch-up when it turns busy, rather than its whole history's.
 */
const lagQuanta = 2;

/**
 * One host's vCPU scheduler. Units: reservations and limits in MHz of
 * `coreMhz`, demand in fractions of one core (0..1 per vCPU), times in ms,
 * work in ms of one core at `coreMhz`. Synchronous and single-threaded: the
 * host agent steps it on simulated time.
 */
export class CpuScheduler {
  readonly cores: number;
  readonly threadsPerCore: 1 | 2;
  readonly logicalCpus: number;
  readonly coreMhz: number;
  readonly quantumMs: number;
  readonly coscheduling: Coscheduling;
  readonly skewThresholdMs: number;
  readonly hostedOverheadPct: number;
  readonly vcpusPerCoreMax: number;
  /** cores × coreMhz: what reservations are admitted against (hyperthreads add none). */
  readonly capacityMhz: number;

  private readonly efficiency: number;
  private readonly ids: string[] = [];
  private readonly slots = new Map<string, number>();
  private nVms = 0;
  private nVcpus = 0;
  private reservedMhz = 0;
  private vtRef = 0;
  private windowMs = 0;
  private elapsedMs = 0;
  private removed: CpuTimes = zeroTimes();

  // Per VM slot.
  private vmCap = 0;
  private vmStart = new Int32Array(0);
  private vmCount = new Int32Array(0);
  private vmShares = new Float64Array(0);
  /** 1 / shares, and lagQuanta quanta of all its vCPUs in virtual time: kept with the settings, so the quantum loop divides nothing. */
  private vmPerShare = new Float64Array(0);
  private vmLagVt = new Float64Array(0);
  private vmReservationMhz = new Float64Array(0);
  private vmLimitMhz = new Float64Array(0);
  private vmResCores = new Float64Array(0);
  private vmLimitCores = new Float64Array(0);
  private vmVt = new Float64Array(0);
  private vmSwap = new Float64Array(0);
  private vmRem = new Float64Array(0);
  private vmSinceMs = new Float64Array(0);
  private vmWindowMs = new Float64Array(0);
  private vmDemandSum = new Float64Array(0);
  /** This quantum, for VMs served from the shares: run time given, the part on whole cores, and the charge per ms of it. */
  private vmGiven = new Float64Array(0);
  private vmSoloPart = new Float64Array(0);
  private vmCharge = new Float64Array(0);
  /** Hyperthreads, this quantum: a VM's run beside a solo partner, its solo time not yet shared, and what it shared. */
  private vmPairedOwn = new Float64Array(0);
  private vmUnpaired = new Float64Array(0);
  private vmAsPartner = new Float64Array(0);
  private partnerTop = -1;
  /** Whether any hyperthreads paired up this quantum (else every charge is 1). */
  private paired = false;
  /** this.popped[0, frontServed) came from the front, the rest from the heap. */
  private frontServed = 0;
  private vmCoStopped = new Uint8Array(0);
  /** 1 when the VM had nothing queued after the last quantum. */
  private vmQuiet = new Uint8Array(0);
  /** Q_NONE, Q_HEAP or Q_FRONT. */
  private vmQueue = new Uint8Array(0);
  private front = new Int32Array(0);
  private vmFlags = new Uint8Array(0);
  private popped = new Int32Array(0);
  /** The run queue is rebuilt on the next contended quantum (uncontended ones skip it). */
  private heapStale = false;

  // Per vCPU, a VM's vCPUs contiguous from vmStart.
  private vcpuCap = 0;
  private demand = new Float64Array(0);
  /** Work the guest has queued (ms of one core), at most one quantum's. */
  private backlog = new Float64Array(0);
  /** Progress ahead of the VM's slowest busy vCPU (ms); 0 for the laggard. */
  private prog = new Float64Array(0);
  /** This quantum: the run time wanted, and the same less a co-stopped leader's time and the limit's cut. */
  private want0 = new Float64Array(0);
  private want = new Float64Array(0);
  private cstpCap = new Float64Array(0);
  private limShort = new Float64Array(0);
  private run1 = new Float64Array(0);
  private run2 = new Float64Array(0);
  /** Counters since power-on, K a vCPU, and their values when the last step began. */
  private total = new Float64Array(0);
  private atStepStart = new Float64Array(0);
  /** Stands in for run1 of a VM without a reservation this quantum. */
  private zeros = new Float64Array(0);

  private readonly order: Int32Array;
  private readonly heap: VtHeap;

  /** @throws SimdcError INVALID_ARGUMENT naming the bad option. */
  constructor(options: CpuSchedulerOptions) {
    const o = options;
    this.cores = checkRange("cores", o.cores, 1, L.coresMax);
    const threads = o.threadsPerCore ?? 1;
    if (threads !== 1 && threads !== 2) throw invalidArgument(`threadsPerCore must be 1 or 2, got ${String(threads)}`);
    this.threadsPerCore = threads;
    this.logicalCpus = this.cores * threads;
    this.coreMhz = checkNumber("coreMhz", o.coreMhz ?? 2000, 1, L.coreMhzMax);
    this.quantumMs = checkNumber("quantumMs", o.quantumMs ?? 50, L.quantumMsMin, L.quantumMsMax);
    const co = o.coscheduling ?? "relaxed";
    if (co !== "strict" && co !== "relaxed") throw invalidArgument(`coscheduling must be "strict" or "relaxed", got ${JSON.stringify(co)}`);
    this.coscheduling = co;
    this.skewThresholdMs = checkNumber("skewThresholdMs", o.skewThresholdMs ?? 3, 0, L.skewThresholdMsMax);
    this.hostedOverheadPct = checkNumber("hostedOverheadPct", o.hostedOverheadPct ?? 0, 0, L.hostedOverheadPctMax);
    this.vcpusPerCoreMax = checkRange("vcpusPerCoreMax", o.vcpusPerCoreMax ?? 32, 1, L.vcpusPerCoreMax);
    this.capacityMhz = this.cores * this.coreMhz;
    this.efficiency = 1 - this.hostedOverheadPct / 100;
    this.order = new Int32Array(this.logicalCpus);
    this.heap = new VtHeap(this.vmVt, 0);
    this.growVms(16);
    this.growVcpus(64);
  }

  /** Powered-on VM ids, in the order they were added. */
  vmIds(): string[] {
    return this.ids.slice(0, this.nVms);
  }

  has(id: string): boolean {
    return this.slots.has(id);
  }

  /** Simulated ms since the host started. */
  get nowMs(): number {
    return this.elapsedMs;
  }

  /**
   * The VM's settings as admitted: shares as the VM's total (a preset times
   * its vCPUs), limitMhz undefined when unlimited.
   * @throws SimdcError NOT_FOUND.
   */
  settings(id: string): VmCpuSettings & { shares: number; reservationMhz: number } {
    const v = this.slot(id);
    const limit = this.vmLimitMhz[v]!;
    return {
      vcpus: this.vmCount[v]!,
      shares: this.vmShares[v]!,
      reservationMhz: this.vmReservationMhz[v]!,
      limitMhz: Number.isFinite(limit) ? limit : undefined,
    };
  }

  /**
   * Powers a VM on: admits it (vCPUs, reservation) with no demand yet.
   * @throws SimdcError INVALID_ARGUMENT for a bad id, vCPU count, shares (not
   * positive, unknown preset), a reservation above what its vCPUs can use, or
   * a limit below the reservation; ALREADY_EXISTS for a known id;
   * FAILED_PRECONDITION when the VM has more vCPUs than the host has logical
   * CPUs, or reserves more than the whole host; RESOURCE_EXHAUSTED when the
   * admission cap (vCPUs per core) or the unreserved MHz cannot take it.
   * Nothing changes on error.
   */
  addVm(id: string, settings: VmCpuSettings): void {
    checkName("vm id", id);
    if (this.slots.has(id)) throw alreadyExists(`vm ${id} is already on this host`);
    if (typeof settings !== "object" || settings === null) throw invalidArgument(`vm ${id}: settings must be an object`);
    const vcpus = checkRange(`vm ${id}: vcpus`, settings.vcpus, 1, L.vcpusPerVmMax);
    if (vcpus > this.logicalCpus) {
      throw failedPrecondition(`vm ${id}: ${vcpus} vCPUs is more than the host's ${this.logicalCpus} logical CPUs`);
    }
    const s = this.checkSettings(id, vcpus, settings, 0);
    const admitted = this.vcpusPerCoreMax * this.cores;
    if (this.nVcpus + vcpus > admitted) {
      throw resourceExhausted(
        `vm ${id}: ${vcpus} more vCPUs would make ${this.nVcpus + vcpus}, above the cap of ${this.vcpusPerCoreMax} per core (${admitted})`,
      );
    }
    if (this.nVms + 1 > this.vmCap) this.growVms(this.vmCap * 2);
    if (this.nVcpus + vcpus > this.vcpuCap) this.growVcpus(Math.max(this.vcpuCap * 2, this.nVcpus + vcpus));
    const v = this.nVms++;
    const start = this.nVcpus;
    this.nVcpus += vcpus;
    this.ids[v] = id;
    this.slots.set(id, v);
    this.vmStart[v] = start;
    this.vmCount[v] = vcpus;
    this.vmReservationMhz[v] = 0;
    this.apply(v, s);
    this.vmVt[v] = this.vtRef;
    this.vmSwap[v] = 0;
    this.vmRem[v] = 0;
    this.vmSinceMs[v] = this.elapsedMs;
    this.vmWindowMs[v] = 0;
    this.vmCoStopped[v] = 0;
    this.vmQuiet[v] = 1;
    this.vmQueue[v] = Q_NONE;
    this.vmDemandSum[v] = 0;
    this.vmFlags[v] = 0;
    this.demand.fill(0, start, start + vcpus);
    this.backlog.fill(0, start, start + vcpus);
    this.prog.fill(0, start, start + vcpus);
    this.total.fill(0, start * K, (start + vcpus) * K);
    this.atStepStart.fill(0, start * K, (start + vcpus) * K);
  }

  /**
   * Changes a powered-on VM's shares, reservation or limit; fields left out
   * keep their value, `limitMhz: undefined` removes the limit.
   * @throws SimdcError NOT_FOUND, or INVALID_ARGUMENT, FAILED_PRECONDITION or
   * RESOURCE_EXHAUSTED as addVm (also for a vcpus field). Nothing changes on error.
   */
  updateVm(id: string, update: VmCpuUpdate): void {
    const v = this.slot(id);
    if (typeof update !== "object" || update === null) throw invalidArgument(`vm ${id}: update must be an object`);
    if ("vcpus" in update) throw invalidArgument(`vm ${id}: the vCPU count changes only with a power cycle (removeVm, addVm)`);
    const current = this.settings(id);
    const merged: VmCpuSettings = {
      vcpus: current.vcpus,
      shares: update.shares ?? current.shares,
      reservationMhz: update.reservationMhz ?? current.reservationMhz,
      limitMhz: "limitMhz" in update ? update.limitMhz : current.limitMhz,
    };
    const s = this.checkSettings(id, current.vcpus, merged, current.reservationMhz);
    this.apply(v, s);
    // New settings are a new contract: the VM's standing starts from where the busy VMs are.
    if (this.vmVt[v]! < this.vtRef) this.vmVt[v] = this.vtRef;
    this.heap.update(v);
  }

  /**
   * Powers a VM off; its reservation and vCPUs are free again, its counters
   * stay in the host's totals.
   * @throws SimdcError NOT_FOUND.
   */
  removeVm(id: string): void {
    const v = this.slot(id);
    const start = this.vmStart[v]!;
    const count = this.vmCount[v]!;
    const gone = times(this.total, start, count, count * (this.elapsedMs - this.vmSinceMs[v]!), this.efficiency);
    for (const key of Object.keys(gone) as (keyof CpuTimes)[]) this.removed[key] += gone[key];
    this.reservedMhz = Math.max(0, this.reservedMhz - this.vmReservationMhz[v]!);
    const queued: number[] = [];
    for (let u = 0; u < this.nVms; u++) if (u !== v && this.heap.has(u)) queued.push(u > v ? u - 1 : u);
    this.heap.clear();
    // Slide later VMs and their vCPUs down: removal is rare, and the step loop stays simple.
    const n = this.nVms;
    for (const a of [this.vmShares, this.vmPerShare, this.vmLagVt, this.vmReservationMhz, this.vmLimitMhz, this.vmResCores, this.vmLimitCores, this.vmVt, this.vmSwap, this.vmRem, this.vmSinceMs, this.vmWindowMs, this.vmDemandSum]) {
      a.copyWithin(v, v + 1, n);
    }
    this.vmStart.copyWithin(v, v + 1, n);
    this.vmCount.copyWithin(v, v + 1, n);
    this.vmCoStopped.copyWithin(v, v + 1, n);
    this.vmQuiet.copyWithin(v, v + 1, n);
    this.vmQueue.copyWithin(v, v + 1, n);
    this.vmFlags.copyWithin(v, v + 1, n);
    for (let u = v; u < n - 1; u++) this.vmStart[u]! -= count;
    const end = start + count;
    for (const a of [this.demand, this.backlog, this.prog, this.want0, this.want, this.cstpCap, this.limShort, this.run1, this.run2]) {
      a.copyWithin(start, end, this.nVcpus);
    }
    this.total.copyWithin(start * K, end * K, this.nVcpus * K);
    this.atStepStart.copyWithin(start * K, end * K, this.nVcpus * K);
    this.ids.splice(v, 1);
    this.slots.delete(id);
    this.nVms--;
    this.nVcpus -= count;
    for (let u = v; u < this.nVms; u++) this.slots.set(this.ids[u]!, u);
    for (const u of queued) this.heap.push(u);
  }

  /**
   * Sets what the guest wants from now on: a fraction of one core per vCPU
   * (0 idle, 1 CPU-bound), one number for all vCPUs or one per vCPU.
   * @throws SimdcError NOT_FOUND; INVALID_ARGUMENT for a value outside 0..1
   * or a list of the wrong length (nothing changes).
   */
  setDemand(id: string, perVcpuDemand: number | ArrayLike<number>): void {
    const v = this.slot(id);
    const start = this.vmStart[v]!;
    const count = this.vmCount[v]!;
    if (typeof perVcpuDemand === "number") {
      checkFraction(`vm ${id}: demand`, perVcpuDemand);
      this.demand.fill(perVcpuDemand, start, start + count);
      this.vmDemandSum[v] = perVcpuDemand * count;
      return;
    }
    if (perVcpuDemand.length !== count) {
      throw invalidArgument(`vm ${id}: demand has ${perVcpuDemand.length} values for ${count} vCPUs`);
    }
    for (let j = 0; j < count; j++) checkFraction(`vm ${id}: demand[${j}]`, perVcpuDemand[j]!);
    let sum = 0;
    for (let j = 0; j < count; j++) {
      this.demand[start + j] = perVcpuDemand[j]!;
      sum += perVcpuDemand[j]!;
    }
    this.vmDemandSum[v] = sum;
  }

  /**
   * Sets the fraction (0..1) of time the VM's busy vCPUs stall on swap-in,
   * from the memory model, until changed. Shown as %SWPWT on every vCPU with
   * demand; the stalled time does no work, so the guest loses that much of
   * what it wanted.
   * @throws SimdcError NOT_FOUND; INVALID_ARGUMENT outside 0..1.
   */
  setSwapWait(id: string, fraction: number): void {
    const v = this.slot(id);
    checkFraction(`vm ${id}: swap wait`, fraction);
    this.vmSwap[v] = fraction;
  }

  /**
   * Advances simulated time by `dtMs` in quanta (the last one shorter when
   * dtMs is not a multiple). The counters' window becomes this step.
   * @throws SimdcError INVALID_ARGUMENT unless 0 < dtMs ≤ cpuSchedulerLimits.stepMsMax.
   */
  step(dtMs: number): void {
    if (!(typeof dtMs === "number" && dtMs > 0 && dtMs <= L.stepMsMax)) {
      throw invalidArgument(`step must be more than 0 and at most ${L.stepMsMax} ms, got ${dtMs}`);
    }
    this.atStepStart.set(this.total.subarray(0, this.nVcpus * K));
    let left = dtMs;
    // Demand and swap wait hold for the whole step: the first quantum counts them for all of it.
    let stepMs = dtMs;
    while (left > EPS) {
      const q = left < this.quantumMs ? left : this.quantumMs;
      this.quantum(q, stepMs);
      stepMs = 0;
      left -= q;
    }
    this.vmWindowMs.fill(dtMs, 0, this.nVms);
    this.windowMs = dtMs;
    this.elapsedMs += dtMs;
  }

  /**
   * esxtop's view of one VM over the last step (sums over its vCPUs), with
   * cumulative ms so a caller can compute any window, and each vCPU's own.
   * @throws SimdcError NOT_FOUND.
   */
  vmCounters(id: string): VmCpuCounters {
    const v = this.slot(id);
    const start = this.vmStart[v]!;
    const count = this.vmCount[v]!;
    const eff = this.efficiency;
    const windowMs = this.vmWindowMs[v]!;
    const sinceMs = this.elapsedMs - this.vmSinceMs[v]!;
    const window = diffTimes(this.total, this.atStepStart, start, count, count * windowMs, eff);
    const total = times(this.total, start, count, count * sinceMs, eff);
    const perVcpu: VcpuCounters[] = [];
    for (let i = start; i < start + count; i++) {
      const w = diffTimes(this.total, this.atStepStart, i, 1, windowMs, eff);
      perVcpu.push({ ...percentages(w, windowMs), window: w, total: times(this.total, i, 1, sinceMs, eff) });
    }
    return {
      id,
      vcpus: count,
      windowMs,
      ...percentages(window, windowMs),
      lostPerformance: window.workWantedMs > 0 ? Math.max(0, 1 - window.workGotMs / window.workWantedMs) : 0,
      window,
      total,
      perVcpu,
    };
  }

  /** The host's view over the last step: utilization, the vCPU:pCPU ratio, reservations. */
  hostCounters(): HostCpuCounters {
    const eff = this.efficiency;
    let windowElapsed = 0;
    let totalElapsed = 0;
    for (let v = 0; v < this.nVms; v++) {
      windowElapsed += this.vmCount[v]! * this.vmWindowMs[v]!;
      totalElapsed += this.vmCount[v]! * (this.elapsedMs - this.vmSinceMs[v]!);
    }
    const window = diffTimes(this.total, this.atStepStart, 0, this.nVcpus, windowElapsed, eff);
    const total = times(this.total, 0, this.nVcpus, totalElapsed, eff);
    for (const key of Object.keys(total) as (keyof CpuTimes)[]) total[key] += this.removed[key];
    const w = this.windowMs;
    return {
      windowMs: w,
      utilizationPct: w > 0 ? (window.usedMs / (this.cores * w)) * 100 : 0,
      runPct: w > 0 ? (window.runMs / (this.logicalCpus * w)) * 100 : 0,
      cores: this.cores,
      logicalCpus: this.logicalCpus,
      vms: this.nVms,
      vcpus: this.nVcpus,
      vcpusPerCore: this.nVcpus / this.cores,
      vcpusPerLogicalCpu: this.nVcpus / this.logicalCpus,
      capacityMhz: this.capacityMhz,
      reservedMhz: this.reservedMhz,
      unreservedMhz: this.capacityMhz - this.reservedMhz,
      window,
      total,
    };
  }

  // One quantum across all logical CPUs. The hot path: typed arrays and locals only.
  private quantum(q: number, stepMs: number): void {
    const nv = this.nVms;
    const eff = this.efficiency;
    // Run time per ms of guest work: more than 1 on a hosted host.
    const perWork = 1 / eff;
    const theta = this.skewThresholdMs;
    const relaxed = this.coscheduling === "relaxed";
    const strict = !relaxed;
    const vmStart = this.vmStart;
    const vmCount = this.vmCount;
    const vmResCores = this.vmResCores;
    const vmLimitCores = this.vmLimitCores;
    const vmVt = this.vmVt;
    const vmSwap = this.vmSwap;
    const vmRem = this.vmRem;
    const vmFlags = this.vmFlags;
    const vmCoStopped = this.vmCoStopped;
    const demand = this.demand;
    const backlog = this.backlog;
    const prog = this.prog;
    const want0 = this.want0;
    const want = this.want;
    const cstpCap = this.cstpCap;
    const limShort = this.limShort;
    const run1 = this.run1;
    const run2 = this.run2;
    const total = this.total;
    const heap = this.heap;
    const vmLagVt = this.vmLagVt;
    const vmPerShare = this.vmPerShare;

    // 1. Wants, limits, reservations; the run queue holds the VMs that still want CPU.
    const vmDemandSum = this.vmDemandSum;
    const vmQuiet = this.vmQuiet;
    const stale = this.heapStale;
    const vmQueue = this.vmQueue;
    const front = this.front;
    const vtRef = this.vtRef;
    let r1Total = 0;
    let remTotal = 0;
    let nf = 0;
    let frontRem = 0;
    for (let v = 0; v < nv; v++) {
      if (vmQuiet[v] && vmDemandSum[v] === 0) {
        // Nothing to run and nothing to count: most VMs on a quiet host.
        vmFlags[v] = F_QUIET;
        vmRem[v] = 0;
        continue;
      }
      if (vmFlags[v]! & F_SLEPT) {
        // Last quantum it had all it wanted and idled: see lagQuanta.
        const floor = vtRef - vmLagVt[v]!;
        if (vmVt[v]! < floor) vmVt[v] = floor;
      }
      const avail = q * (1 - vmSwap[v]!);
      const start = vmStart[v]!;
      const end = start + vmCount[v]!;
      if (stepMs > 0) {
        const swapMs = vmSwap[v]! * stepMs;
        for (let i = start; i < end; i++) {
          const d = demand[i]!;
          if (d <= 0) continue;
          total[i * K + C_WANTED]! += d * stepMs;
          total[i * K + C_SWPWT]! += swapMs;
        }
      }
      let sum = 0;
      for (let i = start; i < end; i++) {
        // Work waits in the guest up to one quantum's worth; beyond that it is lost.
        let b = backlog[i]! + demand[i]! * avail;
        if (b > q) b = q;
        backlog[i] = b;
        if (b <= EPS) {
          want0[i] = 0;
          want[i] = 0;
          cstpCap[i] = 0;
          continue;
        }
        let x = b * perWork;
        if (x > avail) x = avail;
        want0[i] = x;
        let cap = 0;
        if (relaxed) {
          // A leader stops until its slowest busy sibling is back within the threshold.
          const lead = prog[i]! - theta;
          if (lead > 0) {
            cap = lead < avail ? lead : avail;
            const room = avail - cap;
            if (x > room) x = room;
          }
        }
        cstpCap[i] = cap;
        want[i] = x;
        sum += x;
      }
      let flags = 0;
      // The limit scales the runnable wants down alike; what it takes is %MLMTD.
      // (After co-stop, so a stopped leader's budget goes to its siblings.) It
      // caps run time, so with paired hyperthreads the charge stays below it.
      const limitMs = vmLimitCores[v]! * q;
      if (sum > limitMs) {
        const k = limitMs / sum;
        for (let i = start; i < end; i++) {
          const x = want[i]!;
          limShort[i] = x - x * k;
          want[i] = x * k;
        }
        sum = limitMs;
        flags |= F_LIMITED;
      }
      let r1 = 0;
      const reservedMs = vmResCores[v]! * q;
      if (reservedMs > 0 && sum > EPS) {
        // The reservation is served first and to every runnable vCPU at once, so it is also a co-start.
        r1 = reservedMs < sum ? reservedMs : sum;
        const k = r1 / sum;
        for (let i = start; i < end; i++) run1[i] = want[i]! * k;
        flags |= F_RESERVED;
        if (vmCoStopped[v]) flags |= F_COSTARTED;
      }
      r1Total += r1;
      const rem = sum - r1;
      vmRem[v] = rem;
      vmFlags[v] = flags;
      const queue = vmQueue[v]!;
      if (rem > EPS) {
        remTotal += rem;
        if (queue === Q_NONE) {
          // Newly busy: no further behind the busy VMs than a sleeper may be.
          const floor = vtRef - vmLagVt[v]!;
          if (vmVt[v]! < floor) vmVt[v] = floor;
        }
        if (vmVt[v]! < vtRef) {
          if (queue === Q_HEAP && !stale) heap.remove(v);
          vmQueue[v] = Q_FRONT;
          front[nf++] = v;
          frontRem += rem;
        } else {
          if (queue !== Q_HEAP && !stale) heap.push(v);
          vmQueue[v] = Q_HEAP;
        }
      } else if (queue !== Q_NONE) {
        if (queue === Q_HEAP && !stale) heap.remove(v);
        vmQueue[v] = Q_NONE;
      }
    }

    // 2. Shares: VMs in virtual-time order until the capacity is gone. Reserved
    // runs had whole cores; with hyperthreads, what is left can host two vCPUs a core.
    const soloLeft = this.cores * q - r1Total;
    const popped = this.popped;
    let np = 0;
    if (remTotal <= soloLeft + EPS) {
      // No contention: everyone gets all it wants on whole cores, in no
      // particular order, so the run queue can wait until contention returns.
      for (let v = 0; v < nv; v++) {
        const rem = vmRem[v]!;
        if (rem <= EPS) continue;
        const start = vmStart[v]!;
        const end = start + vmCount[v]!;
        const flags = vmFlags[v]!;
        if (flags & F_RESERVED) for (let i = start; i < end; i++) run2[i] = want[i]! - run1[i]!;
        else for (let i = start; i < end; i++) run2[i] = want[i]!;
        vmFlags[v] = flags | F_SERVED | (vmCoStopped[v] ? F_COSTARTED : 0);
        popped[np++] = v;
      }
      this.heapStale = true;
      this.frontServed = np;
      this.paired = false;
      if (!stale) heap.clear();
    } else {
      if (stale) this.rebuildQueue(nv);
      np = this.contended(q, soloLeft, strict, nf, frontRem);
    }
    // 3. Charge, count, and track skew. Also find the reference virtual time:
    // the lowest of the VMs that were served and did not idle (the busy ones).
    const queued = !this.heapStale;
    const paired = this.paired;
    const vmCharge = this.vmCharge;
    let ref = Infinity;
    let sleptMax = -Infinity;
    for (let v = 0; v < nv; v++) {
      const flags = vmFlags[v]!;
      if (flags & F_QUIET) continue;
      const avail = q * (1 - vmSwap[v]!);
      const start = vmStart[v]!;
      const end = start + vmCount[v]!;
      const reserved = (flags & F_RESERVED) !== 0;
      const served = (flags & F_SERVED) !== 0;
      const limited = (flags & F_LIMITED) !== 0;
      const coStoppedNow = strict && ((vmCoStopped[v]! && !(flags & F_COSTARTED)) || (flags & F_COSTOPPED_NOW) !== 0);
      const charge = served && paired ? vmCharge[v]! : 1;
      const single = end - start === 1;
      let used = 0;
      let ran = 0;
      let busy = 0;
      let progMax = -Infinity;
      let progMin = Infinity;
      for (let i = start; i < end; i++) {
        const a = reserved ? run1[i]! : 0;
        const b = served ? run2[i]! : 0;
        const r = a + b;
        const w0 = want0[i]!;
        if (r > 0) {
          const u = a + b * charge;
          used += u;
          ran += r;
          const left = backlog[i]! - u * eff;
          backlog[i] = left > 0 ? left : 0;
          total[i * K + C_RUN]! += r;
          total[i * K + C_USED]! += u;
        }
        if (w0 <= 0) continue;
        busy++;
        let stalled = 0;
        if (r < w0 - EPS) {
          const wait = avail - r;
          let cs = coStoppedNow ? wait : cstpCap[i]!;
          if (cs > wait) cs = wait;
          const rdy = wait - cs;
          const w = i * K;
          total[w + C_READY]! += rdy;
          if (cs > 0) total[w + C_COSTOP]! += cs;
          if (limited && rdy > 0) {
            const ls = limShort[i]!;
            const short = w0 - r;
            if (ls > 0) total[w + C_MLMTD]! += ls >= short ? rdy : (rdy * ls) / short;
          }
          stalled = wait;
        }
        if (single) continue;
        const p = prog[i]! + q - stalled;
        prog[i] = p;
        if (p > progMax) progMax = p;
        if (p < progMin) progMin = p;
      }
      vmQuiet[v] = busy === 0 ? 1 : 0;
      // Idle vCPUs count as progressing: they neither lag nor lead the busy
      // ones. (A lone vCPU has no sibling to be skewed against: it stays at 0.)
      if (single) {
        prog[start] = 0;
      } else if (busy === 0) {
        for (let i = start; i < end; i++) prog[i] = 0;
      } else if (busy === end - start) {
        for (let i = start; i < end; i++) prog[i]! -= progMin;
      } else {
        for (let i = start; i < end; i++) prog[i] = (want0[i]! <= 0 ? progMax : prog[i]!) - progMin;
      }
      if (strict && !single) {
        if (vmCoStopped[v]) {
          if (flags & F_COSTARTED) {
            vmCoStopped[v] = 0;
            for (let i = start; i < end; i++) prog[i] = 0;
          }
        } else if (flags & F_COSTOPPED_NOW || (busy > 1 && progMax - progMin > theta)) {
          vmCoStopped[v] = 1;
        }
      }
      const slept = !(flags & F_CONTENDED) && ran < avail * (end - start) - EPS;
      if (slept) vmFlags[v] = flags | F_SLEPT;
      if (used > 0) {
        vmVt[v]! += used * vmPerShare[v]!;
        if (queued && vmQueue[v] === Q_HEAP && heap.has(v)) heap.update(v);
      }
      if (flags & (F_SERVED | F_CONTENDED)) {
        const vt = vmVt[v]!;
        if (!slept) {
          if (vt < ref) ref = vt;
        } else if (vt > sleptMax) {
          sleptMax = vt;
        }
      }
    }

    // 4. Back to the run queue. Like CFS's sleepers, a VM that had all it
    // wanted and idled may not fall further behind the busy VMs than lagQuanta
    // quanta of all its vCPUs (applied as the next quantum starts), so history
    // cannot buy it a long monopoly later. VMs popped from the heap go back to
    // it, or to the front if they are now ahead of every busy VM.
    if (heap.size > 0 && vmVt[heap.peek()]! < ref) ref = vmVt[heap.peek()]!;
    if (ref === Infinity) ref = sleptMax === -Infinity ? this.vtRef : sleptMax;
    if (queued) {
      for (let j = this.frontServed; j < np; j++) {
        const v = popped[j]!;
        if (vmQueue[v] !== Q_HEAP) continue;
        if (vmVt[v]! < ref) vmQueue[v] = Q_FRONT;
        else heap.push(v);
      }
    }
    this.vtRef = ref;
  }

  // Phase 2 under contention: the front if it fits, then VMs in virtual-time
  // order until the capacity is gone. Returns how many VMs it put in
  // this.popped; sets each served VM's charge per ms of run (below 1 where
  // hyperthreads paired up).
  private contended(q: number, soloLeft: number, strict: boolean, nf: number, frontRem: number): number {
    const heap = this.heap;
    const vmRem = this.vmRem;
    const vmFlags = this.vmFlags;
    const vmStart = this.vmStart;
    const vmCount = this.vmCount;
    const vmCoStopped = this.vmCoStopped;
    const want = this.want;
    const run1 = this.run1;
    const run2 = this.run2;
    const popped = this.popped;
    const solo = this.vmSoloPart;
    const given = this.vmGiven;
    const pairedOwn = this.vmPairedOwn;
    const unpaired = this.vmUnpaired;
    const asPartner = this.vmAsPartner;
    const ht = this.threadsPerCore > 1;
    let soloUsed = 0;
    let np = 0;
    let paired = false;
    this.partnerTop = -1;
    if (frontRem <= soloLeft + EPS) {
      // The front fits on whole cores: all of it is served, in any order.
      for (let j = 0; j < nf; j++) {
        const v = this.front[j]!;
        const rem = vmRem[v]!;
        const start = vmStart[v]!;
        const end = start + vmCount[v]!;
        const flags = vmFlags[v]!;
        if (flags & F_RESERVED) for (let i = start; i < end; i++) run2[i] = want[i]! - run1[i]!;
        else for (let i = start; i < end; i++) run2[i] = want[i]!;
        vmFlags[v] = flags | F_SERVED | (vmCoStopped[v] ? F_COSTARTED : 0);
        popped[np++] = v;
        if (ht) {
          given[v] = rem;
          solo[v] = rem;
          unpaired[v] = rem;
          pairedOwn[v] = 0;
          asPartner[v] = 0;
        }
        soloUsed += rem;
      }
      this.partnerTop = np - 1;
      this.frontServed = np;
    } else {
      this.frontServed = 0;
      // Sleepers woke up wanting more than there is: they need ordering too.
      for (let j = 0; j < nf; j++) {
        const v = this.front[j]!;
        this.vmQueue[v] = Q_HEAP;
        heap.push(v);
      }
    }
    while (heap.size > 0) {
      const v = heap.peek();
      const rem = vmRem[v]!;
      const soloRoom = soloLeft - soloUsed > 0 ? soloLeft - soloUsed : 0;
      const pairRoom = ht && rem > soloRoom + EPS ? this.pairRoom(v, rem - soloRoom) : 0;
      const room = soloRoom + pairRoom;
      // Nothing for this VM, and in virtual-time order nothing for those after it.
      if (room <= EPS) break;
      heap.pop();
      popped[np++] = v;
      const flags = vmFlags[v]!;
      let g: number;
      if (rem <= room + EPS) {
        const start = vmStart[v]!;
        const end = start + vmCount[v]!;
        if (flags & F_RESERVED) for (let i = start; i < end; i++) run2[i] = want[i]! - run1[i]!;
        else for (let i = start; i < end; i++) run2[i] = want[i]!;
        g = rem;
        vmFlags[v] = flags | F_SERVED | (vmCoStopped[v] ? F_COSTARTED : 0);
      } else if (strict && vmCoStopped[v]) {
        // Strict: a co-stopped VM starts again only with all its busy vCPUs.
        vmFlags[v] = flags | F_CONTENDED;
        if (ht) {
          given[v] = 0;
          solo[v] = 0;
          unpaired[v] = 0;
        }
        continue;
      } else {
        vmFlags[v] = flags | F_CONTENDED | F_SERVED;
        g = this.partial(v, room, strict, q);
      }
      const own = g < soloRoom ? g : soloRoom;
      soloUsed += own;
      if (!ht) continue;
      given[v] = g;
      solo[v] = own;
      unpaired[v] = own;
      pairedOwn[v] = 0;
      asPartner[v] = 0;
      if (own > EPS) this.partnerTop = np - 1;
      if (g - own > EPS) {
        this.commitPairs(v, g - own);
        paired = true;
      }
    }
    if (paired) {
      for (let j = 0; j < np; j++) {
        const v = popped[j]!;
        const g = given[v]!;
        // Whole-core time at 1, time beside a partner at ½, and a partner gives up ½ of what it shared.
        this.vmCharge[v] = g > EPS ? (solo[v]! - 0.5 * asPartner[v]! + 0.5 * pairedOwn[v]!) / g : 1;
      }
    }
    this.paired = paired;
    return np;
  }

  /**
   * Hyperthreads: how much of `need` VM v may run on the second thread of a
   * core that a VM served solo has, both then charged half. The partner is the
   * solo VM furthest ahead with time left to share; v may take from it only
   * while v, charged half, would not end the quantum ahead of where the
   * partner would have ended alone. So sharing never buys a VM more than its
   * shares, and two siblings at 2:1 on one core still get 2:1.
   */
  private pairRoom(v: number, need: number): number {
    const vt = this.vmVt[v]!;
    const shares = this.vmShares[v]!;
    let got = 0;
    for (let j = this.partnerTop; j >= 0 && got < need - EPS; j--) {
      const d = this.popped[j]!;
      const free = this.vmUnpaired[d]!;
      if (d === v || free <= EPS) continue;
      const partnerEnd = this.vmVt[d]! + this.vmGiven[d]! / this.vmShares[d]!;
      const bound = 2 * shares * (partnerEnd - vt) - got;
      if (bound <= EPS) break;
      let c = need - got;
      if (c > free) c = free;
      if (c > bound) c = bound;
      got += c;
    }
    return got;
  }

  // Takes `amount` of v's run from the partners' solo time, most-ahead first.
  private commitPairs(v: number, amount: number): void {
    let left = amount;
    for (let j = this.partnerTop; j >= 0 && left > EPS; j--) {
      const d = this.popped[j]!;
      if (d === v) continue;
      const free = this.vmUnpaired[d]!;
      if (free <= EPS) continue;
      const c = left < free ? left : free;
      this.vmUnpaired[d] = free - c;
      this.vmAsPartner[d]! += c;
      left -= c;
    }
    this.vmPairedOwn[v]! += amount - left;
    while (this.partnerTop >= 0) {
      const d = this.popped[this.partnerTop]!;
      if (d !== v && this.vmUnpaired[d]! > EPS) break;
      this.partnerTop--;
    }
  }

  // Refills the run queue after uncontended quanta.
  private rebuildQueue(nv: number): void {
    const heap = this.heap;
    heap.clear();
    for (let v = 0; v < nv; v++) if (this.vmQueue[v] === Q_HEAP) heap.push(v);
    this.heapStale = false;
  }

  /**
   * Serves the boundary VM in part. Relaxed (ESX 3+ interleaves vCPUs finely
   * and prefers laggards): the room is water-filled on progress, the slowest
   * vCPUs first until they draw level, so a partial quantum adds no skew.
   * Strict (ESX 2.x): whole slices to the slowest vCPUs first, and a leader
   * runs only until it is `skewThresholdMs` ahead of its slowest busy
   * sibling; then the whole VM stops for the rest of the quantum. Returns the
   * run time given.
   */
  private partial(v: number, room: number, strict: boolean, q: number): number {
    const start = this.vmStart[v]!;
    const end = start + this.vmCount[v]!;
    const want = this.want;
    // run1 is only meaningful for a VM with a reservation this quantum.
    const run1 = this.vmFlags[v]! & F_RESERVED ? this.run1 : this.zeros;
    const run2 = this.run2;
    const prog = this.prog;
    if (!strict) {
      // Level L such that Σ min(rem_i, max(0, L − prog_i)) = room, by bisection:
      // one VM a quantum is the boundary, so 50 rounds over its vCPUs are cheap.
      let lo = Infinity;
      let hi = -Infinity;
      for (let i = start; i < end; i++) {
        const rem = want[i]! - run1[i]!;
        if (rem <= EPS) continue;
        const p = prog[i]! + run1[i]!;
        if (p < lo) lo = p;
        if (p + rem > hi) hi = p + rem;
      }
      if (lo === Infinity) return 0;
      for (let round = 0; round < 50; round++) {
        const mid = 0.5 * (lo + hi);
        let f = 0;
        for (let i = start; i < end; i++) {
          const rem = want[i]! - run1[i]!;
          if (rem <= EPS) continue;
          const x = mid - prog[i]! - run1[i]!;
          f += x <= 0 ? 0 : x < rem ? x : rem;
        }
        if (f > room) hi = mid;
        else lo = mid;
      }
      let given = 0;
      for (let i = start; i < end; i++) {
        const rem = want[i]! - run1[i]!;
        if (rem <= EPS) {
          run2[i] = 0;
          continue;
        }
        const x = lo - prog[i]! - run1[i]!;
        const r = x <= 0 ? 0 : x < rem ? x : rem;
        run2[i] = r;
        given += r;
      }
      return given;
    }
    const order = this.order;
    let m = 0;
    for (let i = start; i < end; i++) {
      run2[i] = 0;
      if (want[i]! - run1[i]! > EPS) order[m++] = i;
    }
    for (let a = 1; a < m; a++) {
      const x = order[a]!;
      const px = prog[x]!;
      let b = a - 1;
      while (b >= 0 && prog[order[b]!]! > px) {
        order[b + 1] = order[b]!;
        b--;
      }
      order[b + 1] = x;
    }
    let left = room;
    for (let j = 0; j < m && left > EPS; j++) {
      const i = order[j]!;
      let x = want[i]! - run1[i]!;
      if (x > left) x = left;
      run2[i] = x;
      left -= x;
    }
    let given = room - left;
    const want0 = this.want0;
    let busy = 0;
    let slowest = Infinity;
    for (let i = start; i < end; i++) {
      const w0 = want0[i]!;
      if (w0 <= 0) continue;
      busy++;
      const r = run1[i]! + run2[i]!;
      const p = prog[i]! + (r >= w0 - EPS ? q : r);
      if (p < slowest) slowest = p;
    }
    if (busy < 2) return given;
    for (let i = start; i < end; i++) {
      if (want0[i]! <= 0) continue;
      const allowed = slowest + this.skewThresholdMs - prog[i]! - run1[i]!;
      const x = run2[i]!;
      if (x > allowed) {
        const cut = x - (allowed > 0 ? allowed : 0);
        run2[i] = x - cut;
        given -= cut;
        this.vmFlags[v]! |= F_COSTOPPED_NOW;
      }
    }
    return given;
  }

  private slot(id: string): number {
    const v = this.slots.get(id);
    if (v === undefined) throw notFound(`vm ${id} is not on this host`);
    return v;
  }

  // Validates settings against the host; `ownReservationMhz` is what the VM already holds.
  private checkSettings(id: string, vcpus: number, s: VmCpuSettings, ownReservationMhz: number) {
    const preset = s.shares ?? "normal";
    let shares: number;
    if (typeof preset === "string") {
      if (!Object.hasOwn(cpuSharesPerVcpu, preset)) {
        throw invalidArgument(`vm ${id}: unknown shares preset ${JSON.stringify(preset)} (high, normal, low or a number)`);
      }
      shares = cpuSharesPerVcpu[preset as CpuSharesPreset] * vcpus;
    } else if (typeof preset === "number" && Number.isFinite(preset) && preset > 0 && preset <= L.sharesMax) {
      shares = preset;
    } else {
      throw invalidArgument(`vm ${id}: shares must be a preset or a number above 0 and at most ${L.sharesMax}, got ${String(preset)}`);
    }
    const reservationMhz = s.reservationMhz ?? 0;
    if (!(typeof reservationMhz === "number" && Number.isFinite(reservationMhz) && reservationMhz >= 0)) {
      throw invalidArgument(`vm ${id}: reservationMhz must be a number ≥ 0, got ${String(reservationMhz)}`);
    }
    const usableMhz = vcpus * this.coreMhz;
    if (reservationMhz > usableMhz) {
      throw invalidArgument(`vm ${id}: reservation ${reservationMhz} MHz is more than its ${vcpus} vCPUs can use (${usableMhz} MHz)`);
    }
    const limitMhz = s.limitMhz ?? Infinity;
    if (!(typeof limitMhz === "number" && limitMhz > 0 && !Number.isNaN(limitMhz))) {
      throw invalidArgument(`vm ${id}: limitMhz must be a number above 0 (or left out for unlimited), got ${String(limitMhz)}`);
    }
    if (limitMhz < reservationMhz) {
      throw invalidArgument(`vm ${id}: limit ${limitMhz} MHz is below the reservation ${reservationMhz} MHz`);
    }
    if (reservationMhz > this.capacityMhz) {
      throw failedPrecondition(`vm ${id}: reservation ${reservationMhz} MHz is more than the host's ${this.capacityMhz} MHz`);
    }
    const unreserved = this.capacityMhz - (this.reservedMhz - ownReservationMhz);
    if (reservationMhz > unreserved + 1e-6) {
      throw resourceExhausted(`vm ${id}: reservation ${reservationMhz} MHz does not fit in the host's ${unreserved} MHz unreserved`);
    }
    return { shares, reservationMhz, limitMhz };
  }

  private apply(v: number, s: { shares: number; reservationMhz: number; limitMhz: number }): void {
    this.reservedMhz += s.reservationMhz - this.vmReservationMhz[v]!;
    this.vmShares[v] = s.shares;
    this.vmPerShare[v] = 1 / s.shares;
    this.vmLagVt[v] = (lagQuanta * this.quantumMs * this.vmCount[v]!) / s.shares;
    this.vmReservationMhz[v] = s.reservationMhz;
    this.vmLimitMhz[v] = s.limitMhz;
    this.vmResCores[v] = s.reservationMhz / this.coreMhz;
    this.vmLimitCores[v] = s.limitMhz / this.coreMhz;
  }

  private growVms(cap: number): void {
    const f64 = (a: Float64Array) => grow(a, cap);
    this.vmShares = f64(this.vmShares);
    this.vmPerShare = f64(this.vmPerShare);
    this.vmLagVt = f64(this.vmLagVt);
    this.vmReservationMhz = f64(this.vmReservationMhz);
    this.vmLimitMhz = f64(this.vmLimitMhz);
    this.vmResCores = f64(this.vmResCores);
    this.vmLimitCores = f64(this.vmLimitCores);
    this.vmVt = f64(this.vmVt);
    this.vmSwap = f64(this.vmSwap);
    this.vmRem = f64(this.vmRem);
    this.vmSinceMs = f64(this.vmSinceMs);
    this.vmDemandSum = f64(this.vmDemandSum);
    this.vmGiven = f64(this.vmGiven);
    this.vmSoloPart = f64(this.vmSoloPart);
    this.vmCharge = f64(this.vmCharge);
    this.vmPairedOwn = f64(this.vmPairedOwn);
    this.vmUnpaired = f64(this.vmUnpaired);
    this.vmAsPartner = f64(this.vmAsPartner);
    this.vmQuiet = growU8(this.vmQuiet, cap);
    this.vmQueue = growU8(this.vmQueue, cap);
    this.front = growI32(this.front, cap);
    this.vmWindowMs = f64(this.vmWindowMs);
    this.vmStart = growI32(this.vmStart, cap);
    this.vmCount = growI32(this.vmCount, cap);
    this.popped = growI32(this.popped, cap);
    this.vmCoStopped = growU8(this.vmCoStopped, cap);
    this.vmFlags = growU8(this.vmFlags, cap);
    this.vmCap = cap;
    this.heap.rekey(this.vmVt, cap);
  }

  private growVcpus(cap: number): void {
    const f64 = (a: Float64Array) => grow(a, cap);
    this.demand = f64(this.demand);
    this.backlog = f64(this.backlog);
    this.prog = f64(this.prog);
    this.want0 = f64(this.want0);
    this.want = f64(this.want);
    this.cstpCap = f64(this.cstpCap);
    this.limShort = f64(this.limShort);
    this.run1 = f64(this.run1);
    this.run2 = f64(this.run2);
    this.total = grow(this.total, cap * K);
    this.atStepStart = grow(this.atStepStart, cap * K);
    this.zeros = new Float64Array(cap);
    this.vcpuCap = cap;
  }
}

function grow(a: Float64Array, n: number): Float64Array<ArrayBuffer> {
  const b = new Float64Array(n);
  b.set(a.subarray(0, Math.min(a.length, n)));
  return b;
}

function growI32(a: Int32Array, n: number): Int32Array<ArrayBuffer> {
  const b = new Int32Array(n);
  b.set(a.subarray(0, Math.min(a.length, n)));
  return b;
}

function growU8(a: Uint8Array, n: number): Uint8Array<ArrayBuffer> {
  const b = new Uint8Array(n);
  b.set(a.subarray(0, Math.min(a.length, n)));
  return b;
}

function checkNumber(field: string, value: number, min: number, max: number): number {
  if (!(typeof value === "number" && value >= min && value <= max)) {
    throw invalidArgument(`${field} must be a number from ${min} to ${max}, got ${String(value)}`);
  }
  return value;
}

function checkFraction(field: string, value: number): void {
  if (!(typeof value === "number" && value >= 0 && value <= 1)) {
    throw invalidArgument(`${field} must be a number from 0 to 1, got ${String(value)}`);
  }
}

function zeroTimes(): CpuTimes {
  return { runMs: 0, usedMs: 0, readyMs: 0, coStopMs: 0, maxLimitedMs: 0, swapWaitMs: 0, idleMs: 0, workWantedMs: 0, workGotMs: 0 };
}

// Sums `count` vCPUs' counters from `first`, less `base` when given (a window);
// `elapsedMs` is their summed lifetime in that span, which idle time completes.
function sumTimes(a: Float64Array, base: Float64Array | undefined, first: number, count: number, elapsedMs: number, efficiency: number): CpuTimes {
  const s = new Float64Array(K);
  for (let i = first; i < first + count; i++) {
    for (let c = 0; c < K; c++) s[c]! += a[i * K + c]! - (base ? base[i * K + c]! : 0);
  }
  const busyMs = s[C_RUN]! + s[C_READY]! + s[C_COSTOP]! + s[C_SWPWT]!;
  return {
    runMs: s[C_RUN]!,
    usedMs: s[C_USED]!,
    readyMs: s[C_READY]!,
    coStopMs: s[C_COSTOP]!,
    maxLimitedMs: s[C_MLMTD]!,
    swapWaitMs: s[C_SWPWT]!,
    idleMs: Math.max(0, elapsedMs - busyMs),
    workWantedMs: s[C_WANTED]!,
    workGotMs: s[C_USED]! * efficiency,
  };
}

function times(a: Float64Array, first: number, count: number, elapsedMs: number, efficiency: number): CpuTimes {
  return sumTimes(a, undefined, first, count, elapsedMs, efficiency);
}

function diffTimes(a: Float64Array, base: Float64Array, first: number, count: number, elapsedMs: number, efficiency: number): CpuTimes {
  return sumTimes(a, base, first, count, elapsedMs, efficiency);
}

function percentages(t: CpuTimes, windowMs: number): CpuPercentages {
  const pct = (ms: number) => (windowMs > 0 ? (ms / windowMs) * 100 : 0);
  return {
    usedPct: pct(t.usedMs),
    runPct: pct(t.runMs),
    readyPct: pct(t.readyMs),
    coStopPct: pct(t.coStopMs),
    maxLimitedPct: pct(t.maxLimitedMs),
    swapWaitPct: pct(t.swapWaitMs),
    waitPct: pct(t.idleMs + t.swapWaitMs),
  };
}
