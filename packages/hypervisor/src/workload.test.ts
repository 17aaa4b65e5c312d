// Proves the workload generators against their own parameters, computed here
// from the spec rather than read back: each kind's demand statistics (mean,
// burstiness, the share of time in bursts), the memory figures, phases that
// switch at their exact simulated time, one stream per seed, specs refused with
// a clear error, and the cost of contention as work wanted against work got.

import { Rng, SimdcError } from "@simdc/common";
import { describe, expect, it } from "vitest";
import { CpuScheduler, dirtyPagesPerSec, parseWorkloadSpec, Workload, workloadDefaults, type WorkloadSpec } from "./mod.js";

/** Per-step mean demand over the VM's vCPUs, for `ms` in steps of `stepMs`. */
function series(spec: WorkloadSpec, ms: number, seed = 1, vcpus = 2, stepMs = 100): number[] {
  const w = new Workload(spec, vcpus, new Rng(seed, "workload-test"));
  const out: number[] = [];
  for (let t = 0; t < ms; t += stepMs) {
    const s = w.step(stepMs);
    out.push(s.cpuDemand.reduce((a, b) => a + b, 0) / vcpus);
  }
  return out;
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const cv = (xs: number[]) => {
  const m = mean(xs);
  return Math.sqrt(mean(xs.map((x) => (x - m) ** 2))) / m;
};
const hour = 3_600_000;

describe("workload", () => {
  it("workload: each kind's demand statistics match its parameters", () => {
    // batch: CPU-bound, exactly a core per vCPU.
    expect(new Set(series({ kind: "batch" }, 600_000))).toEqual(new Set([1]));
    // idle: small, noisy around its mean.
    const idle = series({ kind: "idle" }, hour);
    expect(mean(idle)).toBeCloseTo(workloadDefaults.idle.cpuMean, 3);
    expect(Math.max(...idle)).toBeLessThan(0.05);
    // database: steady around its mean; uniform noise of ±30% has a CV of 0.3/√3.
    const db = series({ kind: "database" }, hour);
    expect(mean(db)).toBeCloseTo(0.5, 2);
    expect(cv(db)).toBeCloseTo(0.3 / Math.sqrt(3) / Math.sqrt(2), 1);
    // web: bursty. Over 4 hours the mean is the configured one, the time at
    // the peak is the burst fraction, and the spread is far wider than a database's.
    for (const [spec, m, peak, fraction] of [
      [{ kind: "web" }, 0.25, 0.9, 0.2],
      [{ kind: "web", params: { cpuMean: 0.4, peakCpu: 1, burstFraction: 0.3, burstMeanMs: 500, jitter: 0 } }, 0.4, 1, 0.3],
      [{ kind: "vdi" }, 0.1, 0.6, 0.1],
    ] as [WorkloadSpec, number, number, number][]) {
      const xs = series(spec, 4 * hour);
      expect(mean(xs) / m, JSON.stringify(spec)).toBeGreaterThan(0.95);
      expect(mean(xs) / m, JSON.stringify(spec)).toBeLessThan(1.05);
      const base = (m - fraction * peak) / (1 - fraction);
      const atPeak = xs.filter((x) => x > (base + peak) / 2).length / xs.length;
      expect(Math.abs(atPeak - fraction), JSON.stringify(spec)).toBeLessThan(0.03);
      expect(cv(xs)).toBeGreaterThan(3 * cv(db));
    }
  });

  it("workload: memory figures follow the spec; a database holds and dirties more than a web server", () => {
    const memory = (spec: WorkloadSpec) => {
      const w = new Workload(spec, 4, new Rng(3, "mem"));
      let active = 0;
      let dirty = 0;
      let used = 0;
      const steps = 36_000;
      for (let t = 0; t < steps; t++) {
        const s = w.step(100);
        active += s.activeFraction;
        dirty += s.dirtyFractionPerSec;
        used = s.usedFraction;
      }
      return { active: active / steps, dirty: dirty / steps, used };
    };
    const db = memory({ kind: "database" });
    expect(db.used).toBe(0.9);
    expect(db.active).toBeCloseTo(0.6, 6);
    expect(db.dirty).toBeCloseTo(0.03, 6);
    // A web server's memory activity follows its bursts; its mean is the configured one.
    const web = memory({ kind: "web" });
    expect(web.active / 0.2).toBeGreaterThan(0.95);
    expect(web.active / 0.2).toBeLessThan(1.05);
    expect(db.dirty).toBeGreaterThan(5 * web.dirty);
    expect(db.used).toBeGreaterThan(web.used);
    // 3% of 4 GiB a second, in 4 KiB pages.
    expect(dirtyPagesPerSec({ dirtyFractionPerSec: 0.03 }, 4096)).toBeCloseTo(0.03 * 4096 * 256, 9);
    const vdi = new Workload({ kind: "vdi", params: { image: "win10-golden" } }, 2, new Rng(1, "vdi"));
    expect(vdi.image).toBe("win10-golden");
  });

  it("workload: phases switch at the right simulated time, and a step across a switch averages both sides", () => {
    const spec: WorkloadSpec = {
      kind: "batch",
      phases: [
        { kind: "idle", durationMs: 30_000, params: { jitter: 0 } },
        { kind: "boot", durationMs: 60_000, params: { jitter: 0 } },
      ],
    };
    const w = new Workload(spec, 2, new Rng(5, "phases"));
    const seen: [number, string, number, number][] = [];
    for (let t = 100; t <= 100_000; t += 100) {
      const s = w.step(100);
      seen.push([t, s.phase, s.cpuDemand[0]!, s.usedFraction]);
    }
    const at = (t: number) => seen[t / 100 - 1]!;
    expect(at(29_900).slice(1, 3)).toEqual(["idle", 0.02]);
    // The step ending at 30 s is the last of the idle phase; the boot is in effect at its end.
    expect(at(30_000).slice(1, 3)).toEqual(["boot", 0.02]);
    expect(at(30_100).slice(1, 3)).toEqual(["boot", 0.9]);
    // A boot fills memory linearly, from a tenth of its figure to all of it.
    expect(at(60_000)[3]).toBeCloseTo(0.5 * (0.1 + 0.9 * 0.5), 9);
    expect(at(89_900)[1]).toBe("boot");
    expect(at(90_000)[1]).toBe("batch");
    expect(at(90_100)[2]).toBe(1);
    // A step straddling the 30 s switch: 400 ms idle, 600 ms booting.
    const straddle = new Workload(spec, 1, new Rng(5, "phases"));
    straddle.step(29_600);
    expect(straddle.step(1000).cpuDemand[0]).toBeCloseTo((400 * 0.02 + 600 * 0.9) / 1000, 12);
  });

  it("workload: the same seed gives the same stream, another seed another", () => {
    const spec: WorkloadSpec = { kind: "web", phases: [{ kind: "boot", durationMs: 5_000 }] };
    const a = series(spec, 600_000, 11);
    expect(series(spec, 600_000, 11)).toEqual(a);
    expect(series(spec, 600_000, 12)).not.toEqual(a);
  });

  it("workload: bad specs get an INVALID_ARGUMENT naming the field", () => {
    const cases: [unknown, RegExp][] = [
      [{ kind: "crypto-miner" }, /workload\.kind: unknown kind "crypto-miner"/],
      [null, /workload must be an object/],
      [{ kind: "web", load: 3 }, /workload\.load is not a field/],
      [{ kind: "web", params: { cpuMean: 2 } }, /workload\.params\.cpuMean must be a number from 0 to 1, got 2/],
      [{ kind: "web", params: { cpuMean: -0.1 } }, /cpuMean must be a number/],
      [{ kind: "web", params: { speed: 1 } }, /workload\.params\.speed is not a workload parameter/],
      [{ kind: "batch", params: { peakCpu: 1 } }, /workload\.params\.peakCpu does not apply to kind batch/],
      [{ kind: "web", params: { image: "golden" } }, /image does not apply to kind web/],
      [{ kind: "vdi", params: { image: "Golden Image" } }, /image "Golden Image" is not a valid name/],
      [{ kind: "web", params: { cpuMean: 0.1, peakCpu: 0.9, burstFraction: 0.2 } }, /cpuMean 0.1 is below burstFraction × peakCpu/],
      [{ kind: "web", params: { cpuMean: 0.5, peakCpu: 0.4 } }, /peakCpu 0.4 is below cpuMean 0.5/],
      [{ kind: "web", params: { burstFraction: 1 } }, /burstFraction must be below 1/],
      [{ kind: "web", params: { burstMeanMs: 0 } }, /burstMeanMs must be a number from 1/],
      [{ kind: "web", phases: {} }, /workload\.phases must be a list/],
      [{ kind: "web", phases: Array.from({ length: 65 }, () => ({ kind: "idle", durationMs: 1 })) }, /65 phases, more than 64/],
      [{ kind: "web", phases: [{ kind: "boot", durationMs: 0 }] }, /workload\.phases\[0\]\.durationMs must be a number above 0/],
      [{ kind: "web", phases: [{ kind: "storm", durationMs: 10 }] }, /workload\.phases\[0\]\.kind: unknown kind "storm"/],
      [{ kind: "web", phases: [{ kind: "boot", durationMs: 10, params: { peakCpu: 1 } }] }, /phases\[0\]\.params\.peakCpu does not apply to kind boot/],
    ];
    for (const [spec, message] of cases) {
      let caught: unknown;
      try {
        parseWorkloadSpec(spec);
      } catch (err) {
        caught = err;
      }
      expect(caught, JSON.stringify(spec)).toBeInstanceOf(SimdcError);
      expect((caught as SimdcError).code).toBe("INVALID_ARGUMENT");
      expect((caught as Error).message).toMatch(message);
    }
    expect(() => new Workload({ kind: "idle" }, 0, new Rng(1))).toThrow(/vcpus must be an integer/);
    expect(() => new Workload({ kind: "idle" }, 1, new Rng(1)).step(0)).toThrow(/workload step must be more than 0/);
  });

  it("workload: each VM reports the work it wanted and the work it got, so contention shows as lost performance", () => {
    // 8 batch VMs and 8 web servers on 4 cores: batch wants 8 cores alone.
    const sched = new CpuScheduler({ cores: 4 });
    const rng = new Rng(9, "host-1");
    const vms = Array.from({ length: 16 }, (_, j) => {
      const id = `vm-${j}`;
      sched.addVm(id, { vcpus: 1 });
      return { id, workload: new Workload({ kind: j < 8 ? "batch" : "web" }, 1, rng.derive(id)), wanted: 0 };
    });
    for (let t = 0; t < 600_000; t += 100) {
      for (const vm of vms) {
        const s = vm.workload.step(100);
        vm.wanted += s.workWantedMs;
        sched.setDemand(vm.id, s.cpuDemand);
      }
      sched.step(100);
    }
    let got = 0;
    let wanted = 0;
    for (const vm of vms) {
      const total = sched.vmCounters(vm.id).total;
      // The scheduler counts the same work wanted as the workload reported.
      expect(total.workWantedMs).toBeCloseTo(vm.wanted, 6);
      got += total.workGotMs;
      wanted += total.workWantedMs;
    }
    // Saturated: all 4 cores' work was done, and the rest of what was wanted was lost.
    expect(got).toBeCloseTo(4 * 600_000, -2);
    expect(1 - got / wanted).toBeCloseTo(1 - (4 * 600_000) / wanted, 6);
    expect(1 - got / wanted).toBeGreaterThan(0.5);
    // Alone on the host, a web server loses nothing.
    const alone = new CpuScheduler({ cores: 4 });
    alone.addVm("vm-w", { vcpus: 1 });
    const w = new Workload({ kind: "web" }, 1, new Rng(9, "alone"));
    for (let t = 0; t < 60_000; t += 100) {
      alone.setDemand("vm-w", w.step(100).cpuDemand);
      alone.step(100);
    }
    const t = alone.vmCounters("vm-w").total;
    expect(t.workGotMs / t.workWantedMs).toBeGreaterThan(0.999);
  });
});
