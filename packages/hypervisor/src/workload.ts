// Guest workloads: what a VM asks of its host, step by step, from a typed
// spec (idle, web, batch, database, vdi, with a boot storm or any kind as a
// timed phase) and a seeded Rng. It owns only the guest's wishes (CPU demand
// per vCPU, memory touched, in use and dirtied, the work it wanted); what the
// host gives back is the scheduler's business. Pure: no clock, no I/O.

import { checkName, invalidArgument, type Rng } from "@simdc/common";

/** The steady behaviours a VM can have. */
export type WorkloadKind = "idle" | "web" | "batch" | "database" | "vdi";

/** A phase may be any kind, or a boot (high CPU, memory filling up, many writes). */
export type WorkloadPhaseKind = WorkloadKind | "boot";

/**
 * A workload's knobs. CPU figures are fractions of one core per vCPU; memory
 * figures are fractions of the guest's configured memory. Which apply depends
 * on the kind (see `workloadParamsByKind`); defaults in `workloadDefaults`.
 */
export interface WorkloadParams {
  /** Mean demand per vCPU over time (0..1). */
  cpuMean?: number;
  /** Bursty kinds: demand per vCPU during a burst (cpuMean..1). */
  peakCpu?: number;
  /** Bursty kinds: the share of time spent in bursts (0..1). */
  burstFraction?: number;
  /** Bursty kinds: the mean length of a burst. */
  burstMeanMs?: number;
  /** Step-to-step noise on each vCPU's demand, as a fraction of it (0..1). */
  jitter?: number;
  /** Memory the guest touches (the memory model's active set), at mean load. */
  activeFraction?: number;
  /** Memory the guest holds in use; the rest is guest-free. For a boot, where it ends. */
  usedFraction?: number;
  /** Memory dirtied per second at mean load, for live migration's pre-copy. */
  dirtyFractionPerSec?: number;
  /** vdi: the golden image the desktop was cloned from (VMs of one image share pages). */
  image?: string;
}

export interface WorkloadPhase {
  kind: WorkloadPhaseKind;
  durationMs: number;
  params?: WorkloadParams;
}

/** A VM's workload: phases run in order from power-on, then `kind` for good. */
export interface WorkloadSpec {
  kind: WorkloadKind;
  params?: WorkloadParams;
  phases?: WorkloadPhase[];
}

/** What the guest wanted over one step. Updated in place by `Workload.step`. */
export interface WorkloadSample {
  /** The phase in effect at the end of the step. */
  phase: WorkloadPhaseKind;
  /** Demand per vCPU, averaged over the step (0..1 of a core): the scheduler's setDemand. */
  cpuDemand: Float64Array;
  /** Σ demand × step: the work wanted, in ms of one core. */
  workWantedMs: number;
  /** Averaged over the step. */
  activeFraction: number;
  /** At the end of the step. */
  usedFraction: number;
  /** Averaged over the step. */
  dirtyFractionPerSec: number;
}

export const workloadKinds: readonly WorkloadKind[] = ["idle", "web", "batch", "database", "vdi"];
export const workloadPhaseKinds: readonly WorkloadPhaseKind[] = [...workloadKinds, "boot"];

type Resolved = Required<Omit<WorkloadParams, "image">> & { image: string | undefined };

const common = ["cpuMean", "jitter", "activeFraction", "usedFraction", "dirtyFractionPerSec"] as const;
const bursty = [...common, "peakCpu", "burstFraction", "burstMeanMs"] as const;

/** The parameters each kind takes; any other is an error. */
export const workloadParamsByKind: Readonly<Record<WorkloadPhaseKind, readonly (keyof WorkloadParams)[]>> = {
  idle: common,
  web: bursty,
  batch: common,
  database: common,
  vdi: [...bursty, "image"],
  boot: common,
};

/**
 * Defaults per kind. Tunable, not measured (REFERENCES has no workload
 * figures): an idle guest ticks at 2%; a web server idles between bursts of
 * requests that take 90% of a core a fifth of the time; a batch job is
 * CPU-bound; a database is half busy, holds most of its memory as buffer cache,
 * touches much of it and writes a lot; a desktop idles with short busy spells;
 * a boot runs hot and fills memory.
 */
export const workloadDefaults: Readonly<Record<WorkloadPhaseKind, Readonly<Resolved>>> = {
  idle: { cpuMean: 0.02, peakCpu: 0, burstFraction: 0, burstMeanMs: 1000, jitter: 0.5, activeFraction: 0.05, usedFraction: 0.3, dirtyFractionPerSec: 0.0005, image: undefined },
  web: { cpuMean: 0.25, peakCpu: 0.9, burstFraction: 0.2, burstMeanMs: 2000, jitter: 0.1, activeFraction: 0.2, usedFraction: 0.5, dirtyFractionPerSec: 0.005, image: undefined },
  batch: { cpuMean: 1, peakCpu: 0, burstFraction: 0, burstMeanMs: 1000, jitter: 0, activeFraction: 0.4, usedFraction: 0.6, dirtyFractionPerSec: 0.01, image: undefined },
  database: { cpuMean: 0.5, peakCpu: 0, burstFraction: 0, burstMeanMs: 1000, jitter: 0.3, activeFraction: 0.6, usedFraction: 0.9, dirtyFractionPerSec: 0.03, image: undefined },
  vdi: { cpuMean: 0.1, peakCpu: 0.6, burstFraction: 0.1, burstMeanMs: 1000, jitter: 0.2, activeFraction: 0.15, usedFraction: 0.5, dirtyFractionPerSec: 0.002, image: "vdi-golden" },
  boot: { cpuMean: 0.9, peakCpu: 0, burstFraction: 0, burstMeanMs: 1000, jitter: 0.05, activeFraction: 0.8, usedFraction: 0.5, dirtyFractionPerSec: 0.05, image: undefined },
};

/** Bounds on specs. */
export const workloadLimits = {
  phasesMax: 64,
  /** A phase lasts at most about 11.6 simulated days. */
  phaseMsMax: 1e9,
  burstMeanMsMin: 1,
  burstMeanMsMax: 3_600_000,
  vcpusMax: 768,
  stepMsMax: 3_600_000,
} as const;

/** Where a boot's memory in use starts, as a share of where it ends. */
const bootUsedStart = 0.1;

/**
 * Checks a spec from anywhere (a scenario file, the bus) and returns it typed.
 * @throws SimdcError INVALID_ARGUMENT naming the field: an unknown kind, an
 * unknown parameter or one the kind does not take, a value out of range, a
 * bursty mean that cannot be reached, too many phases, a bad duration.
 */
export function parseWorkloadSpec(input: unknown): WorkloadSpec {
  const spec = asObject("workload", input);
  for (const key of Object.keys(spec)) {
    if (key !== "kind" && key !== "params" && key !== "phases") throw invalidArgument(`workload.${key} is not a field (kind, params, phases)`);
  }
  const kind = checkKind("workload.kind", spec.kind, workloadKinds);
  const out: WorkloadSpec = { kind };
  if (spec.params !== undefined) out.params = checkParams("workload.params", kind, spec.params);
  else resolve(kind, undefined, "workload.params");
  if (spec.phases !== undefined) {
    if (!Array.isArray(spec.phases)) throw invalidArgument("workload.phases must be a list");
    if (spec.phases.length > workloadLimits.phasesMax) {
      throw invalidArgument(`workload.phases has ${spec.phases.length} phases, more than ${workloadLimits.phasesMax}`);
    }
    out.phases = spec.phases.map((raw, j) => {
      const field = `workload.phases[${j}]`;
      const p = asObject(field, raw);
      for (const key of Object.keys(p)) {
        if (key !== "kind" && key !== "durationMs" && key !== "params") throw invalidArgument(`${field}.${key} is not a field (kind, durationMs, params)`);
      }
      const phaseKind = checkKind(`${field}.kind`, p.kind, workloadPhaseKinds);
      const durationMs = p.durationMs;
      if (!(typeof durationMs === "number" && durationMs > 0 && durationMs <= workloadLimits.phaseMsMax)) {
        throw invalidArgument(`${field}.durationMs must be a number above 0 and at most ${workloadLimits.phaseMsMax}, got ${String(durationMs)}`);
      }
      const phase: WorkloadPhase = { kind: phaseKind, durationMs };
      if (p.params !== undefined) phase.params = checkParams(`${field}.params`, phaseKind, p.params);
      return phase;
    });
  }
  return out;
}

/** Pages of 4 KiB the guest dirties per second, for a VM of `memoryMb`. */
export function dirtyPagesPerSec(sample: Pick<WorkloadSample, "dirtyFractionPerSec">, memoryMb: number): number {
  return sample.dirtyFractionPerSec * memoryMb * 256;
}

/** One segment of the workload's timeline: a phase, or the steady kind after the last. */
interface Segment {
  kind: WorkloadPhaseKind;
  endMs: number;
  durationMs: number;
  p: Resolved;
  /** Bursty: demand between bursts, so that the long-run mean is cpuMean. */
  baseCpu: number;
  calmMeanMs: number;
}

/**
 * A seeded generator of one VM's workload. Each `step(dtMs)` advances its
 * simulated time and returns what the guest wanted over that step; the same
 * spec, vCPU count and seed give the same stream whatever the step sizes'
 * history elsewhere. Bursts are a two-state Markov process with exponential
 * durations, integrated exactly over the step; phases switch at their exact
 * times, and a step that spans a switch averages both sides.
 */
export class Workload {
  readonly spec: WorkloadSpec;
  readonly vcpus: number;
  /** The golden image of a vdi desktop, for page sharing between its clones. */
  readonly image: string | undefined;
  /** The last step's figures; the same object every step. */
  readonly sample: WorkloadSample;

  private readonly segments: Segment[];
  private seg = 0;
  private now = 0;
  private bursting = false;
  private nextSwitchMs = 0;

  /**
   * @param spec checked with parseWorkloadSpec.
   * @param vcpus the VM's vCPU count (1..768).
   * @param rng this VM's own stream (derive it from the host's by VM id).
   * @throws SimdcError INVALID_ARGUMENT for a bad spec or vCPU count.
   */
  constructor(
    spec: WorkloadSpec,
    vcpus: number,
    private readonly rng: Rng,
  ) {
    this.spec = parseWorkloadSpec(spec);
    if (!(Number.isInteger(vcpus) && vcpus >= 1 && vcpus <= workloadLimits.vcpusMax)) {
      throw invalidArgument(`workload vcpus must be an integer from 1 to ${workloadLimits.vcpusMax}, got ${vcpus}`);
    }
    this.vcpus = vcpus;
    let end = 0;
    this.segments = [];
    for (const phase of this.spec.phases ?? []) {
      end += phase.durationMs;
      this.segments.push(segment(phase.kind, resolve(phase.kind, phase.params, "phase"), end, phase.durationMs));
    }
    this.segments.push(segment(this.spec.kind, resolve(this.spec.kind, this.spec.params, "workload"), Infinity, Infinity));
    this.image = this.spec.kind === "vdi" ? this.segments[this.segments.length - 1]!.p.image : undefined;
    this.sample = {
      phase: this.segments[0]!.kind,
      cpuDemand: new Float64Array(vcpus),
      workWantedMs: 0,
      activeFraction: 0,
      usedFraction: this.usedAt(this.segments[0]!, 0),
      dirtyFractionPerSec: 0,
    };
    this.enter(0);
  }

  /** Simulated ms since the workload started. */
  get nowMs(): number {
    return this.now;
  }

  /**
   * Advances by `dtMs` and returns the step's sample (the same object each
   * time, overwritten by the next step).
   * @throws SimdcError INVALID_ARGUMENT unless 0 < dtMs ≤ workloadLimits.stepMsMax.
   */
  step(dtMs: number): WorkloadSample {
    if (!(typeof dtMs === "number" && dtMs > 0 && dtMs <= workloadLimits.stepMsMax)) {
      throw invalidArgument(`workload step must be more than 0 and at most ${workloadLimits.stepMsMax} ms, got ${dtMs}`);
    }
    const stepEnd = this.now + dtMs;
    // Time-weighted sums over the step: CPU level, jitter weight, memory activity.
    let cpuMs = 0;
    let jitterMs = 0;
    let activeMs = 0;
    let dirtyMs = 0;
    while (this.now < stepEnd) {
      const s = this.segments[this.seg]!;
      const until = Math.min(stepEnd, s.endMs);
      while (this.now < until) {
        const to = s.baseCpu >= 0 && this.nextSwitchMs < until ? this.nextSwitchMs : until;
        const span = to - this.now;
        const level = s.baseCpu >= 0 ? (this.bursting ? s.p.peakCpu : s.baseCpu) : s.p.cpuMean;
        // Memory activity follows load: at mean CPU it is the configured figure.
        const load = s.p.cpuMean > 0 ? level / s.p.cpuMean : 1;
        cpuMs += level * span;
        jitterMs += s.p.jitter * span;
        activeMs += Math.min(1, s.p.activeFraction * load) * span;
        dirtyMs += Math.min(1, s.p.dirtyFractionPerSec * load) * span;
        this.now = to;
        if (s.baseCpu >= 0 && this.now >= this.nextSwitchMs) this.toggle(s);
      }
      if (this.now >= s.endMs && this.seg < this.segments.length - 1) this.enter(this.seg + 1);
    }
    const level = cpuMs / dtMs;
    const jitter = jitterMs / dtMs;
    const sample = this.sample;
    let wanted = 0;
    for (let i = 0; i < this.vcpus; i++) {
      // Noise with mean zero, so each vCPU's demand keeps the level's mean unless clamped at a bound.
      let d = level * (1 + jitter * (2 * this.rng.next() - 1));
      if (d < 0) d = 0;
      else if (d > 1) d = 1;
      sample.cpuDemand[i] = d;
      wanted += d * dtMs;
    }
    const s = this.segments[this.seg]!;
    sample.phase = s.kind;
    sample.workWantedMs = wanted;
    sample.activeFraction = activeMs / dtMs;
    sample.dirtyFractionPerSec = dirtyMs / dtMs;
    sample.usedFraction = this.usedAt(s, this.now);
    return sample;
  }

  private enter(index: number): void {
    this.seg = index;
    const s = this.segments[index]!;
    if (s.baseCpu >= 0) {
      // Every bursty segment starts between bursts.
      this.bursting = false;
      this.nextSwitchMs = this.now + exponential(this.rng, s.calmMeanMs);
    }
  }

  private toggle(s: Segment): void {
    this.bursting = !this.bursting;
    this.nextSwitchMs = this.now + exponential(this.rng, this.bursting ? s.p.burstMeanMs : s.calmMeanMs);
  }

  // A boot fills memory linearly over its phase; any other kind holds its figure.
  private usedAt(s: Segment, nowMs: number): number {
    if (s.kind !== "boot") return s.p.usedFraction;
    const startMs = s.endMs - s.durationMs;
    const done = Math.min(1, Math.max(0, (nowMs - startMs) / s.durationMs));
    return s.p.usedFraction * (bootUsedStart + (1 - bootUsedStart) * done);
  }
}

function segment(kind: WorkloadPhaseKind, p: Resolved, endMs: number, durationMs: number): Segment {
  const isBursty = kind === "web" || kind === "vdi";
  const f = p.burstFraction;
  // mean = f × peak + (1 − f) × base, so base follows from the other three.
  const baseCpu = isBursty ? (p.cpuMean - f * p.peakCpu) / (1 - f) : -1;
  const calmMeanMs = isBursty && f > 0 ? (p.burstMeanMs * (1 - f)) / f : Infinity;
  return { kind, endMs, durationMs, p, baseCpu, calmMeanMs };
}

function exponential(rng: Rng, meanMs: number): number {
  if (meanMs === Infinity) return Infinity;
  return -meanMs * Math.log(1 - rng.next());
}

function asObject(field: string, value: unknown): Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw invalidArgument(`${field} must be an object`);
  return value as Record<string, unknown>;
}

function checkKind<T extends string>(field: string, value: unknown, kinds: readonly T[]): T {
  if (typeof value !== "string" || !(kinds as readonly string[]).includes(value)) {
    throw invalidArgument(`${field}: unknown kind ${JSON.stringify(value)} (${kinds.join(", ")})`);
  }
  return value as T;
}

const ranges: Record<Exclude<keyof WorkloadParams, "image">, [number, number]> = {
  cpuMean: [0, 1],
  peakCpu: [0, 1],
  burstFraction: [0, 1],
  burstMeanMs: [workloadLimits.burstMeanMsMin, workloadLimits.burstMeanMsMax],
  jitter: [0, 1],
  activeFraction: [0, 1],
  usedFraction: [0, 1],
  dirtyFractionPerSec: [0, 1],
};

function checkParams(field: string, kind: WorkloadPhaseKind, raw: unknown): WorkloadParams {
  const params = asObject(field, raw);
  const allowed = workloadParamsByKind[kind];
  const out: WorkloadParams = {};
  for (const [key, value] of Object.entries(params)) {
    if (!Object.hasOwn(ranges, key) && key !== "image") {
      throw invalidArgument(`${field}.${key} is not a workload parameter (${Object.keys(ranges).join(", ")}, image)`);
    }
    if (!(allowed as readonly string[]).includes(key)) throw invalidArgument(`${field}.${key} does not apply to kind ${kind}`);
    if (key === "image") {
      if (typeof value !== "string") throw invalidArgument(`${field}.image must be a name`);
      out.image = checkName(`${field}.image`, value);
      continue;
    }
    const [min, max] = ranges[key as keyof typeof ranges];
    if (!(typeof value === "number" && value >= min && value <= max)) {
      throw invalidArgument(`${field}.${key} must be a number from ${min} to ${max}, got ${String(value)}`);
    }
    out[key as keyof typeof ranges] = value;
  }
  resolve(kind, out, field);
  return out;
}

// Merges params over the kind's defaults and checks what only the whole can tell.
function resolve(kind: WorkloadPhaseKind, params: WorkloadParams | undefined, field: string): Resolved {
  const p: Resolved = { ...workloadDefaults[kind], ...params };
  if (kind === "web" || kind === "vdi") {
    // Some time must be left between bursts, or the mean could not be cpuMean.
    if (p.burstFraction >= 1) throw invalidArgument(`${field}: burstFraction must be below 1 (kind ${kind})`);
    if (p.peakCpu < p.cpuMean) throw invalidArgument(`${field}: peakCpu ${p.peakCpu} is below cpuMean ${p.cpuMean} (kind ${kind})`);
    if (p.cpuMean < p.burstFraction * p.peakCpu) {
      throw invalidArgument(
        `${field}: cpuMean ${p.cpuMean} is below burstFraction × peakCpu (${p.burstFraction * p.peakCpu}) for kind ${kind}; lower peakCpu or burstFraction`,
      );
    }
  }
  return p;
}
