// One host's memory manager as vSphere's works: VMs' guest memory kept as page
// counts by class and backing state, the free-memory state with hysteresis
// deciding which reclamation runs (TPS with salting and large pages, the
// balloon with the idle memory tax, compression, host swap), pages coming back
// when pressure goes, and the counters esxtop would show. Pure and stepped on
// the caller's simulated time; the only randomness is each VM's seeded
// compressibility, so a run repeats from its seed. It must hold nothing per
// guest page: a VM costs a few KiB whatever its configured size.

import { checkName, invalidArgument, failedPrecondition, notFound, alreadyExists, resourceExhausted, Rng } from "@simdc/common";
import {
  AHEAD,
  BALLOON,
  BEHIND,
  classCount,
  drawCompressibility,
  IMAGE,
  LARGE,
  memoryOverheadMb,
  pagesPerMb,
  PRIVATE,
  SCANNED,
  memorySharesPerMb,
  SWAPPED,
  VmPages,
  ZERO,
  type Compressibility,
  type PageClass,
  type MemorySharesPreset,
} from "./memory-pages.js";
import { SharingTable, sharingKey } from "./memory-sharing.js";
import { idleTaxDefault, reclaimByShares } from "./memory-shares.js";
import { hysteresisPctDefault, memoryLevelStates, memoryLevelThresholdsMb, memoryStateThresholdsPct, minFreeMb, nextMemoryLevel, type MemoryLevel, type MemoryState } from "./memory-states.js";
import { halfSlotKb, quarterSlotKb } from "./memory-compression.js";

/** The memory manager's limits. */
export const memoryManagerLimits = {
  /** VMs one host holds (ESXi 7 and 8's maximum). */
  vmsMax: 1024,
  /** OS images one host knows. */
  imagesMax: 1024,
  /** Host and VM memory in MB (24 TB, ESXi 8's maximum for both). */
  memoryMbMax: 24 * 1024 * 1024,
  /** The longest step: Mem.SamplePeriod. Longer steps would let rates overshoot their targets. */
  stepMsMax: 60_000,
} as const;
const { vmsMax, imagesMax, memoryMbMax, stepMsMax } = memoryManagerLimits;

/**
 * Mem.ShareForceSalting as two choices: "per-vm" (2, the default since 5.5U2d
 * and 6.0: each VM's salt is its `salt` if given, else its own identity, so
 * only intra-VM sharing happens unless VMs are given equal salts; salt 0 is
 * legacy inter-VM sharing) or "off" (0: every VM salt 0, inter-VM sharing).
 */
export type ShareSalting = "per-vm" | "off";

/** A host's memory: its size and the knobs of its reclamation. Defaults are vSphere's where it has one, else marked chosen. */
export interface MemoryManagerOptions {
  /** Host memory in MB. */
  memoryMb: number;
  /** Mem.MemMinFreePct: 0 (default) uses the sliding scale. */
  minFreePct?: number;
  /** The high state's threshold in percent of minFree: 400 (Epping's table); another source says 300. */
  highThresholdPct?: number;
  /** Hysteresis band, percent of a threshold; default 10 (chosen: the sources give none). */
  hysteresisPct?: number;
  /** Default "per-vm". */
  salting?: ShareSalting;
  /**
   * TPS scan rate over the whole host, pages/s. Default: every VM's resident
   * memory once per Mem.ShareScanTime (60 min), capped at Mem.ShareScanGHz ×
   * 4 MB/s per GHz of `cpuFreeGhz` when that is known.
   */
  shareScanPagesPerSec?: number;
  /** Mem.ShareScanTime, minutes for a full scan of a VM; default 60. */
  shareScanTimeMin?: number;
  /** Mem.ShareScanGHz: GHz-worth of scanning (4 MB/s each) per free GHz; default 4. */
  shareScanGhz?: number;
  /** Free CPU of the host in GHz, if known (the CPU scheduler can set it with `setFreeCpuGhz`). */
  cpuFreeGhz?: number;
  /** Mem.CtlMaxPercent: the balloon's limit in percent of a VM's memory; 0 disables ballooning. Default 65. */
  ctlMaxPct?: number;
  /** Mem.IdleTax as a fraction, 0 ≤ τ < 1; default 0.75. */
  idleTax?: number;
  /** Mem.MemZipMaxPct: a VM's compression cache limit in percent of its memory; 0 disables compression. Default 10. */
  memZipMaxPct?: number;
  /** How fast a balloon driver inflates or deflates, MB/s per VM; default 128 (chosen). */
  balloonMbPerSec?: number;
  /** Swap candidates the host can compress or swap, MB/s over all VMs; default 256 (chosen: disk and CPU bound). */
  reclaimMbPerSec?: number;
  /** Latency of one swap-in that a faulting vCPU waits for, ms; default 2 (a random 4 KB read from a shared datastore; about 0.1 with swap to host cache). */
  swapInLatencyMs?: number;
  /** Swapped pages brought back ahead of use once pressure is gone, MB/s over the host; default 64 (chosen). */
  swapInMbPerSec?: number;
  /** CPU to compress one candidate page, µs; default 20 (chosen). */
  compressUsPerPage?: number;
  /** CPU to decompress one page, µs; default 10 (chosen: two orders of magnitude below a swap-in). */
  decompressUsPerPage?: number;
  /** How fast a guest can touch new memory, MB/s per VM; default 2048 (chosen: a guest zeroing its memory at boot). */
  allocateMbPerSec?: number;
  /** Period within which the guest touches every page of its active set, s; default 60 (Mem.SamplePeriod). */
  activeTouchPeriodS?: number;
  /** OS images VMs can be made from: id → MB of the image's pages in a guest's memory. */
  images?: Record<string, number>;
}

/** A VM's memory configuration. */
export interface VmMemorySpec {
  /** Configured memory, MB. */
  memoryMb: number;
  /** Reserved memory, MB (≤ memoryMb): never reclaimed once touched; admission control on power-on. Default 0. */
  reservationMb?: number;
  /** "high" | "normal" | "low" (20 / 10 / 5 shares per configured MB) or a number of shares. Default "normal". */
  shares?: MemorySharesPreset | number;
  /** The OS image the VM runs (defined on the manager); its pages can be shared with other VMs of the image. */
  imageId?: string;
  /** MB of the image in this VM's memory; default the whole image. */
  imageMb?: number;
  /** Share of the VM's touched memory that is zero pages; default 0.1. */
  zeroFraction?: number;
  /** Backed by 2 MiB large pages when the host has memory to spare (hardware MMU); default true. */
  largePages?: boolean;
  /** sched.mem.pshare.salt: VMs with equal salts share across VMs under per-VM salting. */
  salt?: number;
  /** vCPUs, for the overhead memory; default 1. */
  vcpus?: number;
  /** Memory the guest touches, MB; default all of memoryMb. */
  touchedMb?: number;
  /** Whether VMware Tools' balloon driver runs; default true. Without it the host can only compress and swap. */
  balloonDriver?: boolean;
  /** Exact compressibility of classes, overriding the seeded draw. */
  compressibility?: Partial<Record<PageClass, Compressibility>>;
}

/** What can change on a running VM. */
export interface VmMemoryUpdate {
  reservationMb?: number;
  shares?: MemorySharesPreset | number;
  touchedMb?: number;
  salt?: number;
}

/** What the guest does, per step, as plain numbers (the workload model sets them). */
export interface GuestMemoryActivity {
  /** Share of configured memory in the active set, 0..1. */
  activeFraction: number;
  /** Share of configured memory the guest uses (the rest is free and goes to the balloon first), 0..1. */
  usedFraction: number;
  /** Share of configured memory written per second, 0..1: breaks copy-on-write sharing. */
  dirtyFractionPerSec: number;
}

/** Memory counters of one VM, MB unless named otherwise. */
export interface VmMemoryCounters {
  id: string;
  memoryMb: number;
  reservationMb: number;
  shares: number;
  /** Guest memory the guest has touched, wherever it is now. */
  touchedMb: number;
  /** Backed by machine memory (shared or not). */
  grantedMb: number;
  /** Machine memory the VM uses for guest memory: granted less its credit for shared pages, plus its compression cache. */
  consumedMb: number;
  /** Active memory (the guest's working set). */
  activeMb: number;
  /** Guest memory sharing a machine page with other guest memory. */
  sharedMb: number;
  /** Machine memory saved by sharing credited to this VM. */
  sharedSavedMb: number;
  balloonMb: number;
  /** Ballooned memory beyond the guest's free memory: the guest paged it out itself. */
  guestSwappedMb: number;
  /** Guest memory held compressed. */
  compressedMb: number;
  /** Machine memory the compression cache takes (≤ memZipMaxPct of memoryMb). */
  compressionCacheMb: number;
  swappedMb: number;
  overheadMb: number;
  /** Share of the last step the VM waited for swap-ins, 0..1 (esxtop's %SWPWT). */
  swapWaitFraction: number;
  /** CPU spent decompressing pages the guest touched in the last step, ms. */
  decompressMs: number;
  /** Share of the last step the VM lost to memory (swap wait plus decompression), 0..1. */
  stallFraction: number;
  /** The guest wanted memory in the last step and was blocked (host in low state). */
  allocationBlocked: boolean;
}

/** Memory counters of the host, MB unless named otherwise. */
export interface HostMemoryCounters {
  state: MemoryState;
  /** Free memory below the high threshold: large pages are being broken for TPS. */
  largePagesBreaking: boolean;
  memoryMb: number;
  freeMb: number;
  minFreeMb: number;
  /** Memory taken outside the VMs (injected pressure). */
  pressureMb: number;
  /** Configured memory of all VMs over host memory. */
  overcommitRatio: number;
  grantedMb: number;
  consumedMb: number;
  overheadMb: number;
  /** Machine memory saved by page sharing. */
  sharingSavingsMb: number;
  /** The part of the savings that needs pages of two VMs (0 under default salting). */
  interVmSharingSavingsMb: number;
  balloonMb: number;
  compressedMb: number;
  compressionCacheMb: number;
  swappedMb: number;
  /** TPS rate in the last step, pages/s. */
  shareScanPagesPerSec: number;
  /** CPU spent compressing swap candidates and decompressing pages in the last step, ms. */
  compressionCpuMs: number;
  /** Written to swap in the last step (swapped candidates and cache evictions). */
  swapOutMb: number;
  /** Read from swap in the last step (faults and swap-ins ahead of use). */
  swapInMb: number;
  /** Simulated time, ms: the sum of the steps. */
  nowMs: number;
}

/** What a step saw happen. */
export type MemoryEvent =
  /** The host's memory state changed, seen at the step's start. */
  | { kind: "memory-state"; from: MemoryState; to: MemoryState; atMs: number; freeMb: number }
  /** Large pages started (free under the high threshold) or stopped being broken for TPS. */
  | { kind: "large-pages"; breaking: boolean; atMs: number; freeMb: number };

const noEvents: readonly MemoryEvent[] = Object.freeze([]);
// State lists, so loops over them allocate nothing.
const sharableClasses = [ZERO, IMAGE] as const;
const residentStates = [LARGE, AHEAD, BEHIND, SCANNED] as const;
const unsharedStates = [LARGE, AHEAD, BEHIND] as const;
const shrinkStates = [LARGE, AHEAD, BEHIND, SCANNED, SWAPPED] as const;

/**
 * Returns `value` when it is a finite number within [min, max].
 * @throws SimdcError INVALID_ARGUMENT naming the field.
 */
function checkNumber(field: string, value: unknown, min: number, max: number): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value < min || value > max) {
    throw invalidArgument(`${field} must be a number from ${min} to ${max}, got ${String(value)}`);
  }
  return value;
}

function resolveShares(shares: MemorySharesPreset | number | undefined, memoryMb: number): number {
  if (shares === undefined) return memorySharesPerMb.normal * memoryMb;
  if (typeof shares === "string") {
    if (!Object.hasOwn(memorySharesPerMb, shares)) throw invalidArgument(`shares must be high, normal, low or a number, got ${JSON.stringify(shares)}`);
    return memorySharesPerMb[shares] * memoryMb;
  }
  return checkNumber("shares", shares, 1, 1e12);
}

/** The default VDI desktops' image: a Windows image with 1 GB of its pages in a guest's memory (chosen). */
export const vdiMemoryImage = Object.freeze({ id: "win10-vdi", sizeMb: 1024 });
/**
 * The default VDI desktop: 4 GB and 2 vCPUs from `vdiMemoryImage`, 10 % of its
 * memory zero pages, the rest private. Define `vdiMemoryImage` on the manager first.
 */
export const vdiMemoryProfile: Readonly<VmMemorySpec> = Object.freeze({ memoryMb: 4096, imageId: vdiMemoryImage.id, zeroFraction: 0.1, largePages: true, vcpus: 2 });

/**
 * The memory manager of one host. Every method validates its input first and
 * changes nothing when it throws.
 */
export class MemoryManager {
  readonly memoryMb: number;
  readonly minFreeMb: number;
  private readonly hostPages: number;
  private readonly thresholdsMb: number[];
  private readonly hysteresisPct: number;
  private readonly salting: ShareSalting;
  private readonly scanPagesPerSec: number | undefined;
  private readonly scanTimeS: number;
  private readonly scanGhz: number;
  private cpuFreeGhz: number | undefined;
  private readonly ctlMaxPct: number;
  private readonly idleTax: number;
  private readonly memZipMaxPct: number;
  private readonly balloonPagesPerSec: number;
  private readonly reclaimPagesPerSec: number;
  private readonly swapInLatencyMs: number;
  private readonly swapInPagesPerSec: number;
  private readonly compressUs: number;
  private readonly decompressUs: number;
  private readonly allocatePagesPerSec: number;
  private readonly activeTouchPeriodS: number;

  private readonly images = new Map<string, number>();
  private readonly vms = new Map<string, VmPages>();
  private list: VmPages[] = [];
  private readonly sharing = new SharingTable();
  private level: MemoryLevel = 0;
  private pressurePages = 0;
  private overheadPagesTotal = 0;
  private freePages: number;
  private nowMs = 0;
  // Last step's host figures.
  private lastScanPagesPerSec = 0;
  private compressionCpuMs = 0;
  private swapOutPages = 0;
  private swapInPages = 0;
  private lastStepMs = 1;
  // Scratch, reused every step so the hot path allocates (almost) nothing.
  private sShares = new Float64Array(0);
  private sPages = new Float64Array(0);
  private sActive = new Float64Array(0);
  private sAvail = new Float64Array(0);
  private sGain = new Float64Array(0);
  private sOut = new Float64Array(0);
  private readonly perClass = new Float64Array(classCount);
  private readonly quarter = new Float64Array(classCount);
  private readonly half = new Float64Array(classCount);
  private readonly evicted = new Float64Array(classCount);

  /**
   * @param rng the host's stream; each VM derives its own from its id.
   * @throws SimdcError INVALID_ARGUMENT on a bad option.
   */
  constructor(
    options: MemoryManagerOptions,
    private readonly rng: Rng,
  ) {
    const o = options;
    this.memoryMb = checkNumber("memoryMb", o.memoryMb, 1, memoryMbMax);
    const minFreePct = checkNumber("minFreePct", o.minFreePct ?? 0, 0, 50);
    const highPct = checkNumber("highThresholdPct", o.highThresholdPct ?? memoryStateThresholdsPct.high, memoryStateThresholdsPct.clear, 1000);
    this.hysteresisPct = checkNumber("hysteresisPct", o.hysteresisPct ?? hysteresisPctDefault, 0, 100);
    const salting = o.salting ?? "per-vm";
    if (salting !== "per-vm" && salting !== "off") throw invalidArgument(`salting must be per-vm or off, got ${JSON.stringify(salting)}`);
    this.salting = salting;
    this.scanPagesPerSec = o.shareScanPagesPerSec === undefined ? undefined : checkNumber("shareScanPagesPerSec", o.shareScanPagesPerSec, 0, 1e12);
    this.scanTimeS = checkNumber("shareScanTimeMin", o.shareScanTimeMin ?? 60, 1e-3, 1e6) * 60;
    this.scanGhz = checkNumber("shareScanGhz", o.shareScanGhz ?? 4, 0, 1e6);
    this.cpuFreeGhz = o.cpuFreeGhz === undefined ? undefined : checkNumber("cpuFreeGhz", o.cpuFreeGhz, 0, 1e6);
    this.ctlMaxPct = checkNumber("ctlMaxPct", o.ctlMaxPct ?? 65, 0, 100);
    this.idleTax = checkNumber("idleTax", o.idleTax ?? idleTaxDefault, 0, 0.99);
    this.memZipMaxPct = checkNumber("memZipMaxPct", o.memZipMaxPct ?? 10, 0, 100);
    this.balloonPagesPerSec = checkNumber("balloonMbPerSec", o.balloonMbPerSec ?? 128, 1e-3, 1e9) * pagesPerMb;
    this.reclaimPagesPerSec = checkNumber("reclaimMbPerSec", o.reclaimMbPerSec ?? 256, 1e-3, 1e9) * pagesPerMb;
    this.swapInLatencyMs = checkNumber("swapInLatencyMs", o.swapInLatencyMs ?? 2, 1e-6, 1e4);
    this.swapInPagesPerSec = checkNumber("swapInMbPerSec", o.swapInMbPerSec ?? 64, 1e-3, 1e9) * pagesPerMb;
    this.compressUs = checkNumber("compressUsPerPage", o.compressUsPerPage ?? 20, 0, 1e6);
    this.decompressUs = checkNumber("decompressUsPerPage", o.decompressUsPerPage ?? 10, 0, 1e6);
    this.allocatePagesPerSec = checkNumber("allocateMbPerSec", o.allocateMbPerSec ?? 2048, 1e-3, 1e9) * pagesPerMb;
    this.activeTouchPeriodS = checkNumber("activeTouchPeriodS", o.activeTouchPeriodS ?? 60, 1e-3, 1e6);
    const images = Object.entries(o.images ?? {});
    if (images.length > imagesMax) throw invalidArgument(`at most ${imagesMax} images, got ${images.length}`);
    for (const [id, mb] of images) {
      checkName("image id", id);
      this.images.set(id, Math.round(checkNumber(`images.${id}`, mb, 1, memoryMbMax) * pagesPerMb));
    }
    this.minFreeMb = minFreeMb(this.memoryMb, minFreePct);
    this.thresholdsMb = memoryLevelThresholdsMb(this.minFreeMb, highPct);
    this.hostPages = this.memoryMb * pagesPerMb;
    this.freePages = this.hostPages;
  }

  /**
   * Defines an OS image: `sizeMb` of its pages in a guest's memory. Defining
   * it again with the same size does nothing.
   * @throws SimdcError INVALID_ARGUMENT on a bad id or size, or past the images limit;
   * FAILED_PRECONDITION when it exists with another size.
   */
  defineImage(id: string, sizeMb: number): void {
    checkName("image id", id);
    const pages = Math.round(checkNumber("sizeMb", sizeMb, 1, memoryMbMax) * pagesPerMb);
    const known = this.images.get(id);
    if (known !== undefined) {
      if (known !== pages) throw failedPrecondition(`image ${id} is defined with ${known / pagesPerMb} MB`);
      return;
    }
    if (this.images.size >= imagesMax) throw invalidArgument(`at most ${imagesMax} images`);
    this.images.set(id, pages);
  }

  /**
   * Powers a VM on. Its memory is touched over the next steps, as fast as
   * allocateMbPerSec and the host's state allow.
   * @throws SimdcError INVALID_ARGUMENT on a bad id or spec (negative sizes,
   * reservation above memory, unknown image, classes over 100 %);
   * ALREADY_EXISTS when the id is taken; RESOURCE_EXHAUSTED when its
   * reservation and overhead do not fit the host's unreserved memory or the
   * host holds the most VMs it may.
   */
  addVm(id: string, spec: VmMemorySpec): void {
    checkName("vm id", id);
    if (this.vms.has(id)) throw alreadyExists(`vm ${id} is on this host`);
    const memoryMb = checkNumber("memoryMb", spec.memoryMb, 1, memoryMbMax);
    const reservationMb = checkNumber("reservationMb", spec.reservationMb ?? 0, 0, memoryMb);
    const shares = resolveShares(spec.shares, memoryMb);
    const zeroFraction = checkNumber("zeroFraction", spec.zeroFraction ?? 0.1, 0, 1);
    const vcpus = checkNumber("vcpus", spec.vcpus ?? 1, 1, 768);
    if (!Number.isInteger(vcpus)) throw invalidArgument(`vcpus must be an integer, got ${vcpus}`);
    const touchedMb = checkNumber("touchedMb", spec.touchedMb ?? memoryMb, 0, memoryMb);
    const salt = spec.salt === undefined ? undefined : checkNumber("salt", spec.salt, 0, 0xffff_ffff);
    let imagePagesInVm = 0;
    let imageContentPages = 0;
    if (spec.imageId !== undefined) {
      const known = this.images.get(spec.imageId);
      if (known === undefined) throw invalidArgument(`unknown image ${JSON.stringify(spec.imageId)}`);
      imageContentPages = known;
      imagePagesInVm = spec.imageMb === undefined ? known : checkNumber("imageMb", spec.imageMb, 0, known / pagesPerMb) * pagesPerMb;
    } else if (spec.imageMb !== undefined) {
      throw invalidArgument("imageMb needs an imageId");
    }
    const memoryPages = memoryMb * pagesPerMb;
    if (imagePagesInVm / memoryPages + zeroFraction > 1 + 1e-9) throw invalidArgument(`image (${imagePagesInVm / pagesPerMb} MB) and zero pages (${zeroFraction}) exceed the VM's memory`);
    for (const [name, c] of Object.entries(spec.compressibility ?? {})) {
      if (!["zero", "image", "private"].includes(name) || !c) throw invalidArgument(`compressibility of unknown class ${name}`);
      checkNumber(`compressibility.${name}.quarter`, c.quarter, 0, 1);
      checkNumber(`compressibility.${name}.half`, c.half, 0, 1 - c.quarter);
    }
    if (this.vms.size >= vmsMax) throw resourceExhausted(`host holds ${vmsMax} VMs already`);
    const overhead = memoryOverheadMb(memoryMb, vcpus);
    this.admit(reservationMb + overhead, 0);

    const cacheKb = (this.memZipMaxPct / 100) * memoryMb * 1024;
    const vm = new VmPages(
      id,
      memoryPages,
      reservationMb * pagesPerMb,
      shares,
      overhead * pagesPerMb,
      spec.imageId,
      imagePagesInVm,
      spec.largePages ?? true,
      this.saltOf(id, salt),
      spec.balloonDriver ?? true,
      drawCompressibility(this.rng.derive(`vm/${id}`), spec.compressibility),
      cacheKb,
      touchedMb * pagesPerMb,
    );
    vm.mix[ZERO] = zeroFraction;
    vm.mix[IMAGE] = imagePagesInVm / memoryPages;
    vm.mix[PRIVATE] = Math.max(0, 1 - zeroFraction - vm.mix[IMAGE]!);
    this.vms.set(id, vm);
    this.list.push(vm);
    this.overheadPagesTotal += vm.overheadPages;
    this.joinGroups(vm, imageContentPages);
    this.growScratch();
    this.recompute();
  }

  /**
   * Powers a VM off: its memory, balloon, cache and swap are released.
   * @throws SimdcError NOT_FOUND.
   */
  removeVm(id: string): void {
    const vm = this.vmOf(id);
    this.sharing.leave(vm.zeroGroupKey, vm);
    if (vm.imageGroupKey) this.sharing.leave(vm.imageGroupKey, vm);
    this.vms.delete(id);
    this.list = this.list.filter((v) => v !== vm);
    this.overheadPagesTotal -= vm.overheadPages;
    this.recompute();
  }

  /**
   * Changes a running VM's reservation, shares, touched memory or salt. A
   * new salt takes its pages out of the sharing table; TPS hashes them again.
   * @throws SimdcError NOT_FOUND; INVALID_ARGUMENT; RESOURCE_EXHAUSTED when a
   * larger reservation does not fit.
   */
  updateVm(id: string, update: VmMemoryUpdate): void {
    const vm = this.vmOf(id);
    const memoryMb = vm.memoryPages / pagesPerMb;
    const reservationMb = update.reservationMb === undefined ? undefined : checkNumber("reservationMb", update.reservationMb, 0, memoryMb);
    const shares = update.shares === undefined ? undefined : resolveShares(update.shares, memoryMb);
    const touchedMb = update.touchedMb === undefined ? undefined : checkNumber("touchedMb", update.touchedMb, 0, memoryMb);
    const salt = update.salt === undefined ? undefined : checkNumber("salt", update.salt, 0, 0xffff_ffff);
    if (reservationMb !== undefined) this.admit(reservationMb, vm.reservationPages / pagesPerMb);
    if (reservationMb !== undefined) vm.reservationPages = reservationMb * pagesPerMb;
    if (shares !== undefined) vm.shares = shares;
    if (touchedMb !== undefined) vm.touchedTarget = touchedMb * pagesPerMb;
    if (salt !== undefined) {
      const newSalt = this.saltOf(id, salt);
      if (newSalt !== vm.salt) {
        this.sharing.leave(vm.zeroGroupKey, vm);
        if (vm.imageGroupKey) this.sharing.leave(vm.imageGroupKey, vm);
        for (const c of sharableClasses) {
          const s = vm.at(SCANNED, c);
          vm.add(SCANNED, c, -s);
          this.backSmall(vm, c, s);
        }
        vm.salt = newSalt;
        this.joinGroups(vm, vm.imageId === undefined ? 0 : this.images.get(vm.imageId)!);
      }
    }
    this.recompute();
  }

  /**
   * What the guest does from now on (the workload model's numbers).
   * @throws SimdcError NOT_FOUND; INVALID_ARGUMENT when a fraction is outside 0..1.
   */
  setGuestActivity(id: string, activity: GuestMemoryActivity): void {
    const vm = this.vmOf(id);
    const active = checkNumber("activeFraction", activity.activeFraction, 0, 1);
    const used = checkNumber("usedFraction", activity.usedFraction, 0, 1);
    const dirty = checkNumber("dirtyFractionPerSec", activity.dirtyFractionPerSec, 0, 1);
    const before = vm.activeShare();
    vm.activeFraction = active;
    vm.usedFraction = used;
    vm.dirtyFractionPerSec = dirty;
    // Reclaimed pages were picked at random, so the active share of what is out follows the guest's active share.
    const after = vm.activeShare();
    const swapped = vm.inState(SWAPPED);
    const cached = vm.cache.totalPages();
    vm.swappedActive = before > 0 ? Math.min(swapped, (vm.swappedActive * after) / before) : swapped * after;
    vm.compressedActive = before > 0 ? Math.min(cached, (vm.compressedActive * after) / before) : cached * after;
  }

  /**
   * Memory taken by something outside the VMs (a fault injection): it is
   * taken at once, and free memory may go below zero until reclamation
   * catches up.
   * @throws SimdcError INVALID_ARGUMENT unless 0 ≤ mb ≤ host memory.
   */
  setPressureMb(mb: number): void {
    this.pressurePages = checkNumber("pressureMb", mb, 0, this.memoryMb) * pagesPerMb;
    this.recompute();
  }

  /**
   * The host's free CPU, which caps the TPS scan rate (Mem.ShareScanGHz).
   * @throws SimdcError INVALID_ARGUMENT when negative.
   */
  setFreeCpuGhz(ghz: number): void {
    this.cpuFreeGhz = checkNumber("cpuFreeGhz", ghz, 0, 1e6);
  }

  /**
   * Advances simulated time by `dtMs`. In order: the state from the free
   * memory the last step left (with hysteresis); large pages broken from
   * clear down; each guest's faults on swapped and compressed pages, its
   * writes breaking copy-on-write, its touched memory growing (blocked in
   * low) or shrinking; a TPS pass (not in low); then the state's
   * reclamation: the balloon in soft, compression and swap in hard and low,
   * and in high, ballooned, compressed and swapped pages coming back while
   * free memory stays above clear's threshold and band.
   * @returns what happened (empty most steps; the same frozen empty array then).
   * @throws SimdcError INVALID_ARGUMENT unless 0 < dtMs ≤ memoryManagerLimits.stepMsMax.
   */
  step(dtMs: number): readonly MemoryEvent[] {
    checkNumber("dtMs", dtMs, 0, stepMsMax);
    if (dtMs === 0) throw invalidArgument("dtMs must be above 0");
    const dtS = dtMs / 1000;
    const atMs = this.nowMs;
    let events = noEvents;
    const free = this.recompute();
    const before = this.level;
    const level = nextMemoryLevel(before, free / pagesPerMb, this.thresholdsMb, this.hysteresisPct);
    this.level = level;
    if (level !== before) {
      const list: MemoryEvent[] = [];
      const from = memoryLevelStates[before]!;
      const to = memoryLevelStates[level]!;
      if (from !== to) list.push({ kind: "memory-state", from, to, atMs, freeMb: free / pagesPerMb });
      if (before >= 1 !== level >= 1) list.push({ kind: "large-pages", breaking: level >= 1, atMs, freeMb: free / pagesPerMb });
      if (list.length > 0) events = list;
    }
    this.lastStepMs = dtMs;
    this.compressionCpuMs = 0;
    this.swapOutPages = 0;
    this.swapInPages = 0;
    if (level >= 2) this.breakLargePages();
    for (const vm of this.list) this.guestStep(vm, dtMs, level);
    this.lastScanPagesPerSec = 0;
    if (level < 5) this.scan(dtS, level);
    const freeNow = this.recompute();
    if (level === 3) this.inflateBalloons(freeNow, dtS);
    else if (level >= 4) this.compressAndSwap(freeNow, dtS, atMs);
    else if (level <= 1) this.giveBack(freeNow, dtS, level);
    this.recompute();
    this.nowMs += dtMs;
    return events;
  }

  /**
   * Counters of one VM as of the last step (or change).
   * @throws SimdcError NOT_FOUND.
   */
  /**
   * The share of the last step the VM waited for swap-ins (0..1): what the
   * CPU scheduler needs every step, without vmCounters' object.
   * @throws SimdcError NOT_FOUND.
   */
  swapWaitFraction(id: string): number {
    return this.vmOf(id).swapWaitFraction;
  }

  vmCounters(id: string): VmMemoryCounters {
    const vm = this.vmOf(id);
    const mb = (pages: number) => pages / pagesPerMb;
    const granted = vm.grantedPages();
    let shared = 0;
    let saved = 0;
    for (let c = 0; c < classCount; c++) {
      shared += vm.sharedPages[c]!;
      saved += vm.savedPages[c]!;
    }
    const balloon = vm.inState(BALLOON);
    const touched = vm.touchedPages();
    const guestFree = (1 - vm.usedFraction) * vm.memoryPages;
    return {
      id,
      memoryMb: mb(vm.memoryPages),
      reservationMb: mb(vm.reservationPages),
      shares: vm.shares,
      touchedMb: mb(touched),
      grantedMb: mb(granted),
      consumedMb: mb(granted - saved) + vm.cache.usedKb() / 1024,
      activeMb: mb(Math.min(vm.activeFraction * vm.memoryPages, touched)),
      sharedMb: mb(shared),
      sharedSavedMb: mb(saved),
      balloonMb: mb(balloon),
      guestSwappedMb: mb(Math.max(0, balloon - guestFree)),
      compressedMb: mb(vm.cache.totalPages()),
      compressionCacheMb: vm.cache.usedKb() / 1024,
      swappedMb: mb(vm.inState(SWAPPED)),
      overheadMb: mb(vm.overheadPages),
      swapWaitFraction: vm.swapWaitFraction,
      decompressMs: vm.decompressMs,
      stallFraction: Math.min(1, vm.swapWaitFraction + vm.decompressMs / Math.max(1e-9, this.lastStepMs)),
      allocationBlocked: vm.allocationBlocked,
    };
  }

  /** Counters of the host as of the last step (or change). */
  hostCounters(): HostMemoryCounters {
    let granted = 0;
    let balloon = 0;
    let compressed = 0;
    let cacheKb = 0;
    let swapped = 0;
    let configured = 0;
    for (const vm of this.list) {
      granted += vm.grantedPages();
      balloon += vm.inState(BALLOON);
      compressed += vm.cache.totalPages();
      cacheKb += vm.cache.usedKb();
      swapped += vm.inState(SWAPPED);
      configured += vm.memoryPages;
    }
    const t = this.sharing.totals;
    return {
      state: memoryLevelStates[this.level]!,
      largePagesBreaking: this.level >= 1,
      memoryMb: this.memoryMb,
      freeMb: this.freePages / pagesPerMb,
      minFreeMb: this.minFreeMb,
      pressureMb: this.pressurePages / pagesPerMb,
      overcommitRatio: configured / this.hostPages,
      grantedMb: granted / pagesPerMb,
      consumedMb: (granted - t.savedPages) / pagesPerMb + cacheKb / 1024,
      overheadMb: this.overheadPagesTotal / pagesPerMb,
      sharingSavingsMb: t.savedPages / pagesPerMb,
      interVmSharingSavingsMb: t.interVmSavedPages / pagesPerMb,
      balloonMb: balloon / pagesPerMb,
      compressedMb: compressed / pagesPerMb,
      compressionCacheMb: cacheKb / 1024,
      swappedMb: swapped / pagesPerMb,
      shareScanPagesPerSec: this.lastScanPagesPerSec,
      compressionCpuMs: this.compressionCpuMs,
      swapOutMb: this.swapOutPages / pagesPerMb,
      swapInMb: this.swapInPages / pagesPerMb,
      nowMs: this.nowMs,
    };
  }

  /**
   * A VM's compression cache, oldest pages first: when each batch was
   * compressed and how many of its pages remain.
   * @throws SimdcError NOT_FOUND.
   */
  compressionCacheBatches(id: string): { compressedAtMs: number; pages: number }[] {
    return this.vmOf(id).cache.batches();
  }

  /** The ids of the VMs on the host, in the order they were added. */
  vmIds(): string[] {
    return this.list.map((vm) => vm.id);
  }

  private vmOf(id: string): VmPages {
    const vm = this.vms.get(id);
    if (!vm) throw notFound(`vm ${id} is not on this host`);
    return vm;
  }

  private saltOf(id: string, salt: number | undefined): string {
    if (this.salting === "off") return "0";
    // Without sched.mem.pshare.salt vSphere salts with vc.uuid: a value of the VM's own.
    return salt === undefined ? `vm:${id}` : String(salt);
  }

  private joinGroups(vm: VmPages, imageContentPages: number): void {
    vm.zeroGroupKey = sharingKey("zero", vm.salt);
    this.sharing.join(vm.zeroGroupKey, ZERO, 1, vm);
    vm.imageGroupKey = vm.imageId === undefined ? "" : sharingKey(`image:${vm.imageId}`, vm.salt);
    if (vm.imageGroupKey) this.sharing.join(vm.imageGroupKey, IMAGE, imageContentPages, vm);
  }

  /**
   * Admission control: reservations and overheads must fit in the host's
   * memory less minFree. `addMb` joins, `dropMb` leaves.
   * @throws SimdcError RESOURCE_EXHAUSTED.
   */
  private admit(addMb: number, dropMb: number): void {
    let reserved = this.overheadPagesTotal / pagesPerMb;
    for (const vm of this.list) reserved += vm.reservationPages / pagesPerMb;
    const capacity = this.memoryMb - this.minFreeMb;
    if (reserved - dropMb + addMb > capacity + 1e-9) {
      throw resourceExhausted(`reservation does not fit: ${Math.round(reserved - dropMb)} MB of ${Math.round(capacity)} MB reserved, ${Math.round(addMb)} MB more asked`);
    }
  }

  private growScratch(): void {
    const n = this.list.length;
    if (this.sShares.length >= n) return;
    const size = Math.max(16, 2 * n);
    this.sShares = new Float64Array(size);
    this.sPages = new Float64Array(size);
    this.sActive = new Float64Array(size);
    this.sAvail = new Float64Array(size);
    this.sGain = new Float64Array(size);
    this.sOut = new Float64Array(size);
  }

  /** Recomputes sharing and free memory; returns free pages (negative when overdrawn). */
  private recompute(): number {
    const t = this.sharing.recompute();
    let used = this.pressurePages + this.overheadPagesTotal + t.machinePages;
    for (const vm of this.list) used += vm.unsharedPages() + vm.cache.usedKb() / 4;
    this.freePages = this.hostPages - used;
    return this.freePages;
  }

  /** Backs `n` pages of class `cls` again: large pages while the host has memory to spare, else small ones the scanner has yet to see. */
  private back(vm: VmPages, cls: number, n: number, level: MemoryLevel): void {
    if (n <= 0) return;
    if (level === 0 && vm.largePages) vm.add(LARGE, cls, n);
    else this.backSmall(vm, cls, n);
  }

  /** Small pages land evenly over the VM's memory: ahead of the TPS cursor or behind it. */
  private backSmall(vm: VmPages, cls: number, n: number): void {
    if (n <= 0) return;
    vm.add(AHEAD, cls, n * (1 - vm.scanProgress));
    vm.add(BEHIND, cls, n * vm.scanProgress);
  }

  /** Clear and below: every large page is broken into small ones for TPS to collapse. */
  private breakLargePages(): void {
    for (const vm of this.list) {
      for (let c = 0; c < classCount; c++) {
        const l = vm.at(LARGE, c);
        if (l <= 0) continue;
        vm.add(LARGE, c, -l);
        this.backSmall(vm, c, l);
      }
    }
  }

  /** Moves `n` pages out of `state` (spread over classes by their counts) into `perClass`. */
  private takeFromState(vm: VmPages, state: number, n: number): void {
    const total = vm.inState(state);
    this.perClass.fill(0);
    if (total <= 0 || n <= 0) return;
    const r = Math.min(1, n / total);
    for (let c = 0; c < classCount; c++) {
      const x = vm.at(state, c) * r;
      vm.add(state, c, -x);
      this.perClass[c] = x;
    }
  }

  private backPerClass(vm: VmPages, level: MemoryLevel): void {
    for (let c = 0; c < classCount; c++) this.back(vm, c, this.perClass[c]!, level);
  }

  /** The guest's part of a step: faults on what is out, copy-on-write breaks, touched memory. */
  private guestStep(vm: VmPages, dtMs: number, level: MemoryLevel): void {
    const dtS = dtMs / 1000;
    // Active pages are touched once per touch period, so a share dt/period of the active pages that are out is touched this step.
    const touchShare = Math.min(1, dtS / this.activeTouchPeriodS);
    // Each touch of a swapped page is a synchronous read the vCPU waits for; one VM waits for one at a time.
    const swapped = vm.inState(SWAPPED);
    const faults = Math.min(vm.swappedActive * touchShare, dtMs / this.swapInLatencyMs, swapped);
    vm.swapWaitFraction = faults > 0 ? (faults * this.swapInLatencyMs) / dtMs : 0;
    if (faults > 0) {
      this.takeFromState(vm, SWAPPED, faults);
      this.backPerClass(vm, level);
      vm.swappedActive = Math.max(0, vm.swappedActive - faults);
      this.swapInPages += faults;
    }
    const unzip = Math.min(vm.compressedActive * touchShare, vm.cache.totalPages());
    vm.decompressMs = 0;
    if (unzip > 0) {
      this.perClass.fill(0);
      const got = vm.cache.takeUniform(unzip, this.perClass);
      this.backPerClass(vm, level);
      vm.compressedActive = Math.max(0, vm.compressedActive - got);
      vm.decompressMs = (got * this.decompressUs) / 1000;
      this.compressionCpuMs += vm.decompressMs;
    }
    // Writes land evenly over touched memory; one on a shared page breaks copy-on-write and gets a private copy.
    const touched = vm.touchedPages();
    const writes = vm.dirtyFractionPerSec * vm.memoryPages * dtS;
    if (writes > 0 && touched > 0) {
      for (const c of sharableClasses) {
        const s = vm.at(SCANNED, c);
        const broken = Math.min(s, (writes * s) / touched);
        if (broken <= 0) continue;
        vm.add(SCANNED, c, -broken);
        this.backSmall(vm, c, broken);
      }
    }
    const delta = vm.touchedTarget - touched;
    vm.allocationBlocked = false;
    if (delta > 1e-9) {
      if (level === 5) {
        vm.allocationBlocked = true;
      } else {
        const grow = Math.min(delta, this.allocatePagesPerSec * dtS);
        for (let c = 0; c < classCount; c++) this.back(vm, c, grow * vm.mix[c]!, level);
      }
    } else if (delta < -1e-9) {
      this.shrink(vm, -delta);
    }
  }

  /** The guest hands back `n` touched pages (free page reporting): taken evenly from everything but the balloon. */
  private shrink(vm: VmPages, n: number): void {
    const cached = vm.cache.totalPages();
    const total = vm.grantedPages() + vm.inState(SWAPPED) + cached;
    if (total <= 0) return;
    const r = Math.min(1, n / total);
    for (const state of shrinkStates) {
      for (let c = 0; c < classCount; c++) vm.add(state, c, -vm.at(state, c) * r);
    }
    this.perClass.fill(0);
    vm.cache.takeUniform(cached * r, this.perClass);
    vm.swappedActive *= 1 - r;
    vm.compressedActive *= 1 - r;
  }

  /**
   * A TPS pass step: every VM's cursor advances by the same share of its
   * memory; zero and image pages it passes are hashed into the table, and in
   * the high state's breaking zone the large pages it passes are broken and
   * hashed at once ("collapse them at the next TPS pass").
   */
  private scan(dtS: number, level: MemoryLevel): void {
    let residentTotal = 0;
    for (const vm of this.list) residentTotal += vm.grantedPages();
    if (residentTotal <= 0) return;
    let pagesPerSec = this.scanPagesPerSec ?? residentTotal / this.scanTimeS;
    // Mem.ShareScanGHz: at most 4 MB/s per GHz of it, per GHz of free CPU.
    if (this.cpuFreeGhz !== undefined) pagesPerSec = Math.min(pagesPerSec, this.cpuFreeGhz * this.scanGhz * 4 * pagesPerMb);
    this.lastScanPagesPerSec = pagesPerSec;
    const share = (pagesPerSec * dtS) / residentTotal;
    if (share <= 0) return;
    for (const vm of this.list) this.scanVm(vm, share, level === 1);
  }

  private scanVm(vm: VmPages, share: number, breakLarge: boolean): void {
    let left = share;
    while (left > 0) {
      const remaining = 1 - vm.scanProgress;
      if (left < remaining) {
        this.scanSlice(vm, left / remaining, breakLarge);
        vm.scanProgress += left;
        return;
      }
      // The pass ends: everything ahead is seen, and what was behind is ahead of the next pass.
      this.scanSlice(vm, 1, breakLarge);
      for (let c = 0; c < classCount; c++) {
        vm.add(AHEAD, c, vm.at(BEHIND, c));
        vm.add(BEHIND, c, -vm.at(BEHIND, c));
      }
      vm.scanProgress = 0;
      left -= remaining;
      // A second full pass in one step would find nothing new past one more.
      if (left > 1) left = 1 + (left % 1);
    }
  }

  /** The cursor passes `f` of what is ahead of it. */
  private scanSlice(vm: VmPages, f: number, breakLarge: boolean): void {
    for (let c = 0; c < classCount; c++) {
      const seen = vm.at(AHEAD, c) * f;
      const broken = breakLarge ? vm.at(LARGE, c) * f : 0;
      vm.add(AHEAD, c, -seen);
      vm.add(LARGE, c, -broken);
      // Private pages are unique: hashing them shares nothing, so they stay on pages of their own, behind the cursor.
      vm.add(c === PRIVATE ? BEHIND : SCANNED, c, seen + broken);
    }
  }

  /** Fills the scratch arrays for a share-based split; `avail` and `gain` are the caller's. */
  private fillShares(): void {
    for (let i = 0; i < this.list.length; i++) {
      const vm = this.list[i]!;
      this.sShares[i] = vm.shares;
      this.sPages[i] = vm.grantedPages();
      this.sActive[i] = vm.activeFraction;
    }
  }

  /**
   * Soft state: balloon targets from the pressure, lowest ρ first, so free
   * memory gets back past soft's threshold and band. A VM gives at most its
   * granted memory above its reservation, up to Mem.CtlMaxPercent of its
   * memory in all, at the driver's rate; the guest gives its free pages
   * first and pages out its own memory past them.
   */
  private inflateBalloons(free: number, dtS: number): void {
    const goal = this.thresholdsMb[2]! * (1 + this.hysteresisPct / 100) * pagesPerMb;
    const need = goal - free;
    if (need <= 0 || this.ctlMaxPct === 0) return;
    this.fillShares();
    const n = this.list.length;
    for (let i = 0; i < n; i++) {
      const vm = this.list[i]!;
      const granted = this.sPages[i]!;
      const cap = (this.ctlMaxPct / 100) * vm.memoryPages - vm.inState(BALLOON);
      this.sAvail[i] = vm.balloonDriver ? Math.max(0, Math.min(granted - Math.min(vm.reservationPages, granted), cap, this.balloonPagesPerSec * dtS)) : 0;
    }
    reclaimByShares(need, n, this.sShares, this.sPages, this.sActive, this.sAvail, this.idleTax, this.sOut);
    for (let i = 0; i < n; i++) {
      const take = this.sOut[i]!;
      if (take > 0) this.moveResident(this.list[i]!, take, BALLOON);
    }
  }

  /** Moves `n` resident pages, evenly over their classes and states, to `dest`. */
  private moveResident(vm: VmPages, n: number, dest: number): void {
    const total = vm.grantedPages();
    if (total <= 0) return;
    const r = Math.min(1, n / total);
    for (const state of residentStates) {
      for (let c = 0; c < classCount; c++) {
        const x = vm.at(state, c) * r;
        vm.add(state, c, -x);
        vm.add(dest, c, x);
      }
    }
  }

  /** Swap candidates of a VM: resident pages not sharing a machine page (freeing a shared one frees nothing). */
  private candidatePool(vm: VmPages, cls: number): number {
    return vm.at(LARGE, cls) + vm.at(AHEAD, cls) + vm.at(BEHIND, cls) + Math.max(0, vm.at(SCANNED, cls) - vm.sharedPages[cls]!);
  }

  /**
   * Hard and low states: swap candidates, lowest ρ first, until free memory
   * gets back past hard's threshold and band. Each candidate is compressed:
   * one that fits 2 KB goes to the VM's cache (a quarter-slot past 75 %), the
   * rest to swap, and a full cache sends its least recently used pages to
   * swap. Reservations are never reclaimed.
   */
  private compressAndSwap(free: number, dtS: number, atMs: number): void {
    const goal = this.thresholdsMb[3]! * (1 + this.hysteresisPct / 100) * pagesPerMb;
    const need = goal - free;
    if (need <= 0) return;
    this.fillShares();
    const n = this.list.length;
    let availSum = 0;
    let gainSum = 0;
    for (let i = 0; i < n; i++) {
      const vm = this.list[i]!;
      const granted = this.sPages[i]!;
      let pool = 0;
      let gain = 0;
      for (let c = 0; c < classCount; c++) {
        const p = this.candidatePool(vm, c);
        pool += p;
        const q = vm.compressibility[c]!;
        const h = vm.compressibility[classCount + c]!;
        // A page in a quarter-slot frees 3 KB of its 4, in a half-slot 2, swapped all 4.
        gain += p * (q * (1 - quarterSlotKb / 4) + h * (1 - halfSlotKb / 4) + (1 - q - h));
      }
      const avail = Math.max(0, Math.min(pool, granted - Math.min(vm.reservationPages, granted)));
      this.sAvail[i] = avail;
      this.sGain[i] = pool > 0 ? gain / pool : 1;
      availSum += avail;
      gainSum += avail * this.sGain[i]!;
    }
    if (availSum <= 0) return;
    const meanGain = gainSum / availSum;
    const candidates = Math.min(this.reclaimPagesPerSec * dtS, need / Math.max(0.05, meanGain));
    reclaimByShares(candidates, n, this.sShares, this.sPages, this.sActive, this.sAvail, this.idleTax, this.sOut);
    for (let i = 0; i < n; i++) {
      const take = this.sOut[i]!;
      if (take > 0) this.compressOrSwap(this.list[i]!, take, atMs);
    }
  }

  private compressOrSwap(vm: VmPages, n: number, atMs: number): void {
    const activeShare = vm.activeShare();
    let pool = 0;
    for (let c = 0; c < classCount; c++) pool += this.candidatePool(vm, c);
    if (pool <= 0) return;
    const r = Math.min(1, n / pool);
    let swapped = 0;
    let zipped = 0;
    for (let c = 0; c < classCount; c++) {
      let taken = 0;
      for (const state of unsharedStates) {
        const x = vm.at(state, c) * r;
        vm.add(state, c, -x);
        taken += x;
      }
      const unsharedScanned = Math.max(0, vm.at(SCANNED, c) - vm.sharedPages[c]!) * r;
      vm.add(SCANNED, c, -unsharedScanned);
      taken += unsharedScanned;
      const q = taken * vm.compressibility[c]!;
      const h = taken * vm.compressibility[classCount + c]!;
      this.quarter[c] = q;
      this.half[c] = h;
      zipped += q + h;
      const over = Math.max(0, taken - q - h);
      vm.add(SWAPPED, c, over);
      swapped += over;
    }
    // Candidates are picked at random, so the active share of each part is the guest's.
    const cachedBefore = vm.cache.totalPages();
    const cacheActiveShare = cachedBefore + zipped > 0 ? (vm.compressedActive + zipped * activeShare) / (cachedBefore + zipped) : 0;
    this.evicted.fill(0);
    vm.cache.insert(atMs, this.quarter, this.half, this.evicted);
    let evicted = 0;
    for (let c = 0; c < classCount; c++) {
      vm.add(SWAPPED, c, this.evicted[c]!);
      evicted += this.evicted[c]!;
    }
    vm.compressedActive = Math.max(0, vm.compressedActive + zipped * activeShare - evicted * cacheActiveShare);
    vm.swappedActive += swapped * activeShare + evicted * cacheActiveShare;
    this.compressionCpuMs += (n * this.compressUs) / 1000;
    this.swapOutPages += swapped + evicted;
  }

  /**
   * High state: what was reclaimed comes back while free memory stays above
   * clear's threshold and band: swapped pages first (they hurt most when
   * touched), then compressed ones, then the balloons deflate.
   */
  private giveBack(free: number, dtS: number, level: MemoryLevel): void {
    let headroom = free - this.thresholdsMb[1]! * (1 + this.hysteresisPct / 100) * pagesPerMb;
    if (headroom <= 0) return;
    let swapped = 0;
    let cached = 0;
    let balloon = 0;
    const balloonStep = this.balloonPagesPerSec * dtS;
    for (const vm of this.list) {
      swapped += vm.inState(SWAPPED);
      cached += vm.cache.totalPages();
      balloon += Math.min(vm.inState(BALLOON), balloonStep);
    }
    if (swapped > 0) {
      const amount = Math.min(headroom, this.swapInPagesPerSec * dtS, swapped);
      const r = amount / swapped;
      for (const vm of this.list) {
        const n = vm.inState(SWAPPED) * r;
        if (n <= 0) continue;
        this.takeFromState(vm, SWAPPED, n);
        this.backPerClass(vm, level);
        vm.swappedActive *= 1 - r;
      }
      this.swapInPages += amount;
      headroom -= amount;
    }
    if (cached > 0 && headroom > 0) {
      // Each page back costs a page but frees its slot; counting the whole page keeps free memory above the floor.
      const amount = Math.min(headroom, cached);
      const r = amount / cached;
      for (const vm of this.list) {
        const inCache = vm.cache.totalPages();
        if (inCache <= 0) continue;
        this.perClass.fill(0);
        const activeShare = vm.compressedActive / inCache;
        const got = vm.cache.takeUniform(inCache * r, this.perClass);
        this.backPerClass(vm, level);
        vm.compressedActive = Math.max(0, vm.compressedActive - got * activeShare);
        this.compressionCpuMs += (got * this.decompressUs) / 1000;
      }
      headroom -= amount;
    }
    if (balloon > 0 && headroom > 0) {
      const r = Math.min(1, headroom / balloon);
      for (const vm of this.list) {
        const n = Math.min(vm.inState(BALLOON), balloonStep) * r;
        if (n <= 0) continue;
        this.takeFromState(vm, BALLOON, n);
        this.backPerClass(vm, level);
      }
    }
  }
}
