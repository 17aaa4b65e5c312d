// Proves the memory manager against figures worked out here from the model's
// inputs and from REFERENCES (not snapshots of its output): which reclamation
// each free-memory state runs, sharing savings computed from page classes and
// salting, large pages, the idle tax's order, pages coming back, the order of
// mechanisms under rising pressure, the compression cache's rules,
// determinism and speed, and typed errors that change nothing.

import { SimdcError, Rng } from "@simdc/common";
import { describe, expect, it } from "vitest";
import { MemoryManager, vdiMemoryImage, vdiMemoryProfile, type MemoryManagerOptions, type VmMemorySpec } from "./mod.js";

const pageMb = 4 / 1024;

function host(options: Partial<MemoryManagerOptions> & { memoryMb: number }, seed = 7): MemoryManager {
  return new MemoryManager({ images: { [vdiMemoryImage.id]: vdiMemoryImage.sizeMb }, ...options }, new Rng(seed, "host-1"));
}

/** Steps until every VM has touched what it wants (allocations ramp at allocateMbPerSec). */
function boot(mm: MemoryManager, seconds = 10): void {
  for (let i = 0; i < seconds; i++) mm.step(1000);
}

/** Sets the outside pressure so that free memory is `share` of minFree before the next step. */
function holdFreeAt(mm: MemoryManager, share: number): void {
  const h = mm.hostCounters();
  mm.setPressureMb(Math.max(0, h.pressureMb + h.freeMb - share * h.minFreeMb));
}

/** Everything a caller can see, for "nothing changed" and "same numbers" checks. */
function observe(mm: MemoryManager): string {
  return JSON.stringify({ host: mm.hostCounters(), vms: mm.vmIds().map((id) => mm.vmCounters(id)) });
}

/** Private pages only: no sharing in the way of what a test looks at. */
const plain: VmMemorySpec = { memoryMb: 8192, zeroFraction: 0, largePages: false };

describe("memory manager", () => {
  it("memory: at 50 % of minFree a 100 GB host is soft and balloons, and nothing is compressed or swapped", () => {
    const mm = host({ memoryMb: 100 * 1024 });
    expect(Math.abs(mm.minFreeMb - 1619) / 1619).toBeLessThan(0.02);
    for (let i = 0; i < 8; i++) mm.addVm(`vm-${i}`, plain);
    boot(mm);
    expect(mm.hostCounters().state).toBe("high");
    holdFreeAt(mm, 0.5);
    mm.step(1000);
    const h = mm.hostCounters();
    expect(h.state).toBe("soft");
    expect(h.balloonMb).toBeGreaterThan(0);
    expect(h.compressedMb).toBe(0);
    expect(h.swappedMb).toBe(0);
  });

  it("memory: at 20 % of minFree the host is hard: compression and swap, no balloon", () => {
    const mm = host({ memoryMb: 100 * 1024 });
    for (let i = 0; i < 8; i++) mm.addVm(`vm-${i}`, plain);
    boot(mm);
    holdFreeAt(mm, 0.2);
    mm.step(1000);
    const h = mm.hostCounters();
    expect(h.state).toBe("hard");
    expect(h.compressedMb).toBeGreaterThan(0);
    expect(h.swappedMb).toBeGreaterThan(0);
    expect(h.balloonMb).toBe(0);
  });

  it("memory: under 16 % of minFree the host is low and VM allocations block until it recovers", () => {
    const mm = host({ memoryMb: 100 * 1024 });
    for (let i = 0; i < 8; i++) mm.addVm(`vm-${i}`, { ...plain, touchedMb: 4096 });
    boot(mm);
    mm.updateVm("vm-0", { touchedMb: 8192 });
    holdFreeAt(mm, 0.1);
    const events = mm.step(1000);
    expect(events).toContainEqual(expect.objectContaining({ kind: "memory-state", from: "high", to: "low" }));
    expect(mm.hostCounters().state).toBe("low");
    expect(mm.vmCounters("vm-0").allocationBlocked).toBe(true);
    expect(mm.vmCounters("vm-0").touchedMb).toBeCloseTo(4096, 6);
    expect(mm.hostCounters().swappedMb + mm.hostCounters().compressedMb).toBeGreaterThan(0);
    mm.setPressureMb(0);
    boot(mm, 5);
    expect(mm.vmCounters("vm-0").allocationBlocked).toBe(false);
    expect(mm.vmCounters("vm-0").touchedMb).toBeCloseTo(8192, 6);
  });

  it("memory: N VDI VMs from one image with salting off save the share their page classes predict, 10-40 %", () => {
    const n = 10;
    const mm = host({ memoryMb: 256 * 1024, salting: "off" });
    for (let i = 0; i < n; i++) mm.addVm(`vdi-${i}`, { ...vdiMemoryProfile, largePages: false });
    // Two full TPS passes (Mem.ShareScanTime = 60 min each) so pages touched during the first pass are hashed too.
    for (let t = 0; t < 2 * 3600 + 10; t++) mm.step(1000);
    // Worked from the profile: each image page is held once instead of n times, and every zero page of every VM lands on one machine page.
    const memoryMb = vdiMemoryProfile.memoryMb;
    const zeroMb = (vdiMemoryProfile.zeroFraction ?? 0) * memoryMb;
    const expectedMb = (n - 1) * vdiMemoryImage.sizeMb + (n * zeroMb - pageMb);
    const h = mm.hostCounters();
    expect(h.sharingSavingsMb).toBeCloseTo(expectedMb, 0);
    const share = h.sharingSavingsMb / (n * memoryMb);
    expect(share).toBeGreaterThan(0.1);
    expect(share).toBeLessThan(0.4);
    // All but one page's worth of zero pages, and all image pages, share across VMs.
    // Alone, each VM would collapse its own zero pages onto one page; across VMs the image pages and n − 1 more zero pages are saved.
    expect(h.interVmSharingSavingsMb).toBeCloseTo((n - 1) * vdiMemoryImage.sizeMb + (n - 1) * pageMb, 3);
    const vm = mm.vmCounters("vdi-3");
    expect(vm.sharedMb).toBeCloseTo(vdiMemoryImage.sizeMb + zeroMb, 0);
    // The savings are spread over the VMs that share, and what they consume adds up to the host's use.
    expect(vm.sharedSavedMb).toBeCloseTo(expectedMb / n, 0);
  });

  it("memory: under default salting only intra-VM sharing happens; equal salts share across VMs again", () => {
    const n = 10;
    const salted = host({ memoryMb: 256 * 1024 });
    const equal = host({ memoryMb: 256 * 1024 });
    for (let i = 0; i < n; i++) {
      salted.addVm(`vdi-${i}`, { ...vdiMemoryProfile, largePages: false });
      equal.addVm(`vdi-${i}`, { ...vdiMemoryProfile, largePages: false, salt: 42 });
    }
    for (let t = 0; t < 2 * 3600 + 10; t++) {
      salted.step(1000);
      equal.step(1000);
    }
    const zeroMb = (vdiMemoryProfile.zeroFraction ?? 0) * vdiMemoryProfile.memoryMb;
    const s = salted.hostCounters();
    expect(s.interVmSharingSavingsMb).toBe(0);
    // Each VM's zero pages collapse onto one page of its own; its image pages share with nobody.
    expect(s.sharingSavingsMb).toBeCloseTo(n * (zeroMb - pageMb), 0);
    expect(salted.vmCounters("vdi-0").sharedMb).toBeCloseTo(zeroMb, 0);
    const e = equal.hostCounters();
    expect(e.sharingSavingsMb).toBeCloseTo((n - 1) * vdiMemoryImage.sizeMb + n * zeroMb - pageMb, 0);
    expect(e.interVmSharingSavingsMb).toBeGreaterThan((n - 1) * vdiMemoryImage.sizeMb - 1);
  });

  it("memory: on an unpressured host large pages keep sharing savings at about 0 until pressure breaks them", () => {
    const n = 10;
    const mm = host({ memoryMb: 256 * 1024, salting: "off" });
    for (let i = 0; i < n; i++) mm.addVm(`vdi-${i}`, vdiMemoryProfile);
    for (let t = 0; t < 3600; t++) mm.step(1000);
    let h = mm.hostCounters();
    expect(h.largePagesBreaking).toBe(false);
    expect(h.sharingSavingsMb).toBeLessThan(0.001 * h.grantedMb);
    // Free memory at twice minFree: below the high threshold (400 %), above clear: large pages break as TPS passes.
    holdFreeAt(mm, 2);
    const events = mm.step(1000);
    expect(events).toContainEqual(expect.objectContaining({ kind: "large-pages", breaking: true }));
    // The outside pressure follows what sharing frees, so the host stays in that band.
    for (let t = 0; t < 3600; t++) {
      holdFreeAt(mm, 2);
      mm.step(1000);
    }
    h = mm.hostCounters();
    expect(h.state).toBe("high");
    const zeroMb = (vdiMemoryProfile.zeroFraction ?? 0) * vdiMemoryProfile.memoryMb;
    expect(h.sharingSavingsMb).toBeCloseTo((n - 1) * vdiMemoryImage.sizeMb + n * zeroMb - pageMb, 0);
    // Nothing but sharing ran.
    expect(h.balloonMb + h.compressedMb + h.swappedMb).toBe(0);
  });

  it("memory: with equal shares the idle VM loses pages first, until ρ evens out at the idle tax's ratio", () => {
    const mm = host({ memoryMb: 16 * 1024 });
    mm.addVm("idle", { ...plain, memoryMb: 4096 });
    mm.addVm("busy", { ...plain, memoryMb: 4096 });
    mm.setGuestActivity("idle", { activeFraction: 0.1, usedFraction: 0.5, dirtyFractionPerSec: 0 });
    mm.setGuestActivity("busy", { activeFraction: 0.8, usedFraction: 0.9, dirtyFractionPerSec: 0 });
    boot(mm);
    // ρ = S / (P (f + k (1 − f))), k = 1 / (1 − 0.75) = 4: equal S, so the VMs' pages end in the ratio of f + 4 (1 − f).
    const cost = (f: number) => f + 4 * (1 - f);
    const ratio = cost(0.8) / cost(0.1);
    let sawIdleAlone = false;
    for (let t = 0; t < 600; t++) {
      holdFreeAt(mm, 0.6);
      mm.step(1000);
      const idle = mm.vmCounters("idle");
      const busy = mm.vmCounters("busy");
      if (busy.balloonMb === 0) {
        if (idle.balloonMb > 0) sawIdleAlone = true;
        continue;
      }
      expect(sawIdleAlone).toBe(true);
      // The step that first takes from the busy VM levels both at one ρ.
      expect(idle.grantedMb / busy.grantedMb).toBeCloseTo(ratio, 2);
      expect(idle.balloonMb).toBeGreaterThan(busy.balloonMb);
      return;
    }
    throw new Error("the busy VM never lost pages");
  });

  it("memory: with no pressure nothing is reclaimed in an hour", () => {
    const mm = host({ memoryMb: 128 * 1024 });
    for (let i = 0; i < 20; i++) mm.addVm(`vdi-${i}`, vdiMemoryProfile);
    for (let i = 0; i < 20; i++) mm.setGuestActivity(`vdi-${i}`, { activeFraction: 0.3, usedFraction: 0.7, dirtyFractionPerSec: 0.001 });
    const states = new Set<string>();
    for (let t = 0; t < 3600; t++) {
      mm.step(1000);
      states.add(mm.hostCounters().state);
    }
    const h = mm.hostCounters();
    expect([...states]).toEqual(["high"]);
    expect(h.balloonMb + h.compressedMb + h.swappedMb).toBe(0);
    expect(h.grantedMb).toBeCloseTo(20 * vdiMemoryProfile.memoryMb, 3);
  });

  it("memory: rising pressure brings sharing, then ballooning, then compression, then swapping; swap shows as swap wait; all comes back when pressure goes", () => {
    const mm = host({ memoryMb: 64 * 1024 });
    for (let i = 0; i < 10; i++) {
      mm.addVm(`vdi-${i}`, vdiMemoryProfile);
      // Two VMs idle (they touch nothing, so they never wait on swap), the rest active.
      mm.setGuestActivity(`vdi-${i}`, { activeFraction: i < 2 ? 0 : 0.5, usedFraction: 0.6, dirtyFractionPerSec: 0.0005 });
    }
    boot(mm);
    const first: Record<string, number> = {};
    const mark = (name: string, t: number, happened: boolean) => {
      if (happened && first[name] === undefined) first[name] = t;
    };
    let pressureMb = 0;
    let decompressMs = 0;
    for (let t = 0; t < 2400; t++) {
      if (t % 10 === 0 && pressureMb < 58 * 1024) mm.setPressureMb((pressureMb += 400));
      mm.step(1000);
      const h = mm.hostCounters();
      mark("sharing", t, h.sharingSavingsMb > 1);
      mark("balloon", t, h.balloonMb > 0);
      mark("compression", t, h.compressedMb > 0);
      mark("swap", t, h.swappedMb > 0);
      mark("swapWait", t, mm.vmCounters("vdi-5").swapWaitFraction > 0);
      if (first.compression === t) expect(h.compressedMb).toBeGreaterThan(h.swappedMb);
      // Memory adds up every step: free = host − (consumed + overhead of every VM) − pressure.
      let vmsMb = 0;
      for (const id of mm.vmIds()) vmsMb += mm.vmCounters(id).consumedMb + mm.vmCounters(id).overheadMb;
      expect(h.freeMb).toBeCloseTo(h.memoryMb - vmsMb - h.pressureMb, 3);
      expect(mm.vmCounters("vdi-0").swapWaitFraction).toBe(0);
      decompressMs += mm.vmCounters("vdi-5").decompressMs;
    }
    expect(first.sharing).toBeLessThan(first.balloon!);
    expect(first.balloon).toBeLessThan(first.compression!);
    // Both come from the same swap candidates, split by the 2 KB rule, so they can start in the same step; compression is never later.
    expect(first.compression).toBeLessThanOrEqual(first.swap!);
    expect(first.swapWait).toBeGreaterThan(first.swap!);
    expect(decompressMs).toBeGreaterThan(0);
    // The idle VMs (lowest ρ) are left holding less than the active ones.
    expect(mm.vmCounters("vdi-0").grantedMb).toBeLessThan(mm.vmCounters("vdi-5").grantedMb);

    mm.setPressureMb(0);
    for (let t = 0; t < 900; t++) mm.step(1000);
    const h = mm.hostCounters();
    expect(h.state).toBe("high");
    expect(h.balloonMb).toBeLessThan(1e-6);
    expect(h.compressedMb).toBeLessThan(1e-6);
    expect(h.swappedMb).toBeLessThan(1e-6);
    expect(h.grantedMb).toBeCloseTo(10 * vdiMemoryProfile.memoryMb, 3);
  });

  it("memory: compression keeps only pages of 2 KB or less, in at most 10 % of the VM's memory, and evicts the least recently used to swap", () => {
    const mm = host({ memoryMb: 12 * 1024 });
    // A quarter of the candidates fit 1 KB, a third 2 KB, the rest (5/12) go to swap.
    mm.addVm("vm-1", { ...plain, compressibility: { private: { quarter: 1 / 4, half: 1 / 3 } } });
    mm.setGuestActivity("vm-1", { activeFraction: 0, usedFraction: 1, dirtyFractionPerSec: 0 });
    boot(mm);
    const capMb = 0.1 * plain.memoryMb;
    holdFreeAt(mm, 0.2);
    mm.step(1000);
    let vm = mm.vmCounters("vm-1");
    expect(mm.hostCounters().state).toBe("hard");
    const candidatesMb = vm.compressedMb + vm.swappedMb;
    expect(vm.compressedMb / candidatesMb).toBeCloseTo(1 / 4 + 1 / 3, 9);
    // Slots: 1 KB for a quarter page, 2 KB for a half one.
    expect(vm.compressionCacheMb).toBeCloseTo(((candidatesMb * 1024) / 4) * (1 / 4 + (1 / 3) * 2) / 1024, 9);
    const firstBatchMs = mm.compressionCacheBatches("vm-1")[0]!.compressedAtMs;
    let full = false;
    for (let t = 0; t < 600; t++) {
      holdFreeAt(mm, 0.2);
      mm.step(1000);
      vm = mm.vmCounters("vm-1");
      expect(vm.compressionCacheMb).toBeLessThanOrEqual(capMb + 1e-6);
      if (vm.compressionCacheMb > capMb - 1e-6) full = true;
    }
    expect(full).toBe(true);
    const batches = mm.compressionCacheBatches("vm-1");
    // The oldest pages went first: what is left was compressed later, oldest first, and the newest batch is whole.
    expect(batches[0]!.compressedAtMs).toBeGreaterThan(firstBatchMs);
    for (let i = 1; i < batches.length; i++) expect(batches[i]!.compressedAtMs).toBeGreaterThan(batches[i - 1]!.compressedAtMs);
    // Evicted pages are in swap: more than the 5/12 of candidates that never fitted.
    expect(vm.swappedMb / (vm.swappedMb + vm.compressedMb)).toBeGreaterThan(5 / 12 + 0.01);
  });

  it("memory: the same seed gives the same numbers, another seed splits compression differently", () => {
    const run = (seed: number) => {
      const mm = host({ memoryMb: 48 * 1024 }, seed);
      for (let i = 0; i < 8; i++) {
        mm.addVm(`vdi-${i}`, vdiMemoryProfile);
        mm.setGuestActivity(`vdi-${i}`, { activeFraction: 0.1 * i, usedFraction: 0.6, dirtyFractionPerSec: 0.001 });
      }
      boot(mm);
      for (let t = 0; t < 300; t++) {
        if (t % 5 === 0) holdFreeAt(mm, 0.25);
        mm.step(1000);
      }
      return observe(mm);
    };
    expect(run(1)).toBe(run(1));
    expect(run(1)).not.toBe(run(2));
  });

  it("memory: a simulated hour of a 20-VM host under changing pressure takes well under a second", () => {
    const mm = host({ memoryMb: 96 * 1024 });
    for (let i = 0; i < 20; i++) {
      mm.addVm(`vdi-${i}`, vdiMemoryProfile);
      mm.setGuestActivity(`vdi-${i}`, { activeFraction: 0.05 * i, usedFraction: 0.6, dirtyFractionPerSec: 0.001 });
    }
    const start = performance.now();
    for (let t = 0; t < 3600; t++) {
      if (t % 600 === 0) mm.setPressureMb(((t / 600) % 3) * 20 * 1024);
      mm.step(1000);
    }
    expect(performance.now() - start).toBeLessThan(1000);
  });

  it("memory: reserved memory is never reclaimed, and a reservation that does not fit is refused and changes nothing", () => {
    const mm = host({ memoryMb: 32 * 1024 });
    mm.addVm("gold", { ...plain, reservationMb: 8192 });
    mm.addVm("bronze", { ...plain, memoryMb: 24 * 1024, touchedMb: 8192 });
    boot(mm);
    for (let t = 0; t < 300; t++) {
      holdFreeAt(mm, 0.25);
      mm.step(1000);
    }
    const gold = mm.vmCounters("gold");
    expect(gold.grantedMb).toBeCloseTo(8192, 6);
    expect(gold.balloonMb + gold.compressedMb + gold.swappedMb).toBe(0);
    expect(mm.vmCounters("bronze").grantedMb).toBeLessThan(8192);
    // Unreserved: 32 GB − minFree (942 MB) − overheads − 8 GB reserved: 24 GB more does not fit.
    const before = observe(mm);
    expect(() => mm.addVm("big", { memoryMb: 24 * 1024, reservationMb: 24 * 1024 })).toThrow(expect.objectContaining({ code: "RESOURCE_EXHAUSTED" }));
    expect(() => mm.updateVm("bronze", { reservationMb: 24 * 1024 })).toThrow(expect.objectContaining({ code: "RESOURCE_EXHAUSTED" }));
    expect(() => mm.updateVm("bronze", { reservationMb: 8192 })).not.toThrow();
    mm.updateVm("bronze", { reservationMb: 0 });
    expect(observe(mm)).toBe(before);
  });

  it("memory: writes break copy-on-write sharing, and the scanner collapses the pages again", () => {
    const mm = host({ memoryMb: 128 * 1024, salting: "off" });
    for (let i = 0; i < 4; i++) mm.addVm(`vdi-${i}`, { ...vdiMemoryProfile, largePages: false });
    for (let t = 0; t < 2 * 3600 + 10; t++) mm.step(1000);
    const shared = mm.vmCounters("vdi-0").sharedMb;
    const consumed = mm.vmCounters("vdi-0").consumedMb;
    // 1 % of memory written a second for 10 s hits about 10 % of its shared pages.
    mm.setGuestActivity("vdi-0", { activeFraction: 0.2, usedFraction: 0.6, dirtyFractionPerSec: 0.01 });
    for (let t = 0; t < 10; t++) mm.step(1000);
    const broken = mm.vmCounters("vdi-0");
    expect(broken.sharedMb).toBeLessThan(shared * 0.92);
    expect(broken.sharedMb).toBeGreaterThan(shared * 0.88);
    expect(broken.consumedMb).toBeGreaterThan(consumed + 0.05 * shared);
    mm.setGuestActivity("vdi-0", { activeFraction: 0.2, usedFraction: 0.6, dirtyFractionPerSec: 0 });
    for (let t = 0; t < 2 * 3600; t++) mm.step(1000);
    expect(mm.vmCounters("vdi-0").sharedMb).toBeCloseTo(shared, 0);
  });

  it("memory: bad input is a typed error and changes nothing", () => {
    const mm = host({ memoryMb: 32 * 1024 });
    mm.addVm("vm-1", vdiMemoryProfile);
    boot(mm, 3);
    const before = observe(mm);
    const cases: [string, () => unknown, string][] = [
      ["negative memory", () => mm.addVm("vm-2", { memoryMb: -1 }), "INVALID_ARGUMENT"],
      ["reservation above memory", () => mm.addVm("vm-2", { memoryMb: 1024, reservationMb: 2048 }), "INVALID_ARGUMENT"],
      ["unknown image", () => mm.addVm("vm-2", { memoryMb: 1024, imageId: "beos" }), "INVALID_ARGUMENT"],
      ["image larger than defined", () => mm.addVm("vm-2", { memoryMb: 4096, imageId: vdiMemoryImage.id, imageMb: 4096 }), "INVALID_ARGUMENT"],
      ["image and zero pages over 100 %", () => mm.addVm("vm-2", { memoryMb: 1024, imageId: vdiMemoryImage.id, zeroFraction: 0.5 }), "INVALID_ARGUMENT"],
      ["bad shares preset", () => mm.addVm("vm-2", { memoryMb: 1024, shares: "huge" as never }), "INVALID_ARGUMENT"],
      ["zero shares", () => mm.addVm("vm-2", { memoryMb: 1024, shares: 0 }), "INVALID_ARGUMENT"],
      ["bad vm id", () => mm.addVm("VM 2", { memoryMb: 1024 }), "INVALID_ARGUMENT"],
      ["duplicate vm", () => mm.addVm("vm-1", { memoryMb: 1024 }), "ALREADY_EXISTS"],
      ["compressibility over 1", () => mm.addVm("vm-2", { memoryMb: 1024, compressibility: { private: { quarter: 0.7, half: 0.5 } } }), "INVALID_ARGUMENT"],
      ["reservation that does not fit", () => mm.addVm("vm-2", { memoryMb: 32 * 1024, reservationMb: 32 * 1024 }), "RESOURCE_EXHAUSTED"],
      ["unknown vm", () => mm.updateVm("vm-9", { touchedMb: 1 }), "NOT_FOUND"],
      ["touched above memory", () => mm.updateVm("vm-1", { touchedMb: 8192 }), "INVALID_ARGUMENT"],
      ["active fraction above 1", () => mm.setGuestActivity("vm-1", { activeFraction: 1.5, usedFraction: 0.5, dirtyFractionPerSec: 0 }), "INVALID_ARGUMENT"],
      ["negative dirty rate", () => mm.setGuestActivity("vm-1", { activeFraction: 0.5, usedFraction: 0.5, dirtyFractionPerSec: -0.1 }), "INVALID_ARGUMENT"],
      ["NaN used fraction", () => mm.setGuestActivity("vm-1", { activeFraction: 0.5, usedFraction: NaN, dirtyFractionPerSec: 0 }), "INVALID_ARGUMENT"],
      ["negative pressure", () => mm.setPressureMb(-5), "INVALID_ARGUMENT"],
      ["pressure above host memory", () => mm.setPressureMb(64 * 1024), "INVALID_ARGUMENT"],
      ["zero step", () => mm.step(0), "INVALID_ARGUMENT"],
      ["step longer than the limit", () => mm.step(3_600_000), "INVALID_ARGUMENT"],
      ["unknown vm removed", () => mm.removeVm("vm-9"), "NOT_FOUND"],
      ["image redefined with another size", () => mm.defineImage(vdiMemoryImage.id, 2048), "FAILED_PRECONDITION"],
      ["negative image size", () => mm.defineImage("img-2", -1), "INVALID_ARGUMENT"],
    ];
    for (const [name, call, code] of cases) {
      let thrown: unknown;
      try {
        call();
      } catch (err) {
        thrown = err;
      }
      expect(thrown, name).toBeInstanceOf(SimdcError);
      expect((thrown as SimdcError).code, name).toBe(code);
      expect(observe(mm), name).toBe(before);
    }
    const options: [string, Partial<MemoryManagerOptions>][] = [
      ["negative host memory", { memoryMb: -1 }],
      ["salting unknown", { salting: "sometimes" as never }],
      ["negative scan rate", { shareScanPagesPerSec: -1 }],
      ["idle tax of 1", { idleTax: 1 }],
      ["balloon limit over 100 %", { ctlMaxPct: 120 }],
      ["negative hysteresis", { hysteresisPct: -1 }],
      ["bad image id", { images: { "Bad Image": 10 } }],
    ];
    for (const [name, opts] of options) {
      expect(() => host({ memoryMb: 1024, ...opts }), name).toThrow(expect.objectContaining({ code: "INVALID_ARGUMENT" }));
    }
  });
});
