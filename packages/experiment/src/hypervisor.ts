// The hypervisor's experiment parts: what a VM group's guests do and get
// (workload, CPU and memory shares, reservations and limits, the OS image,
// the page-sharing salt), faults on a host's memory and on a VM's CPU demand,
// a boot storm, a probe of every host's esxtop counters, and assertions
// computed from those samples and the memory-state events: ready and
// co-stop time, CPU ratios, lost work, memory states, the order reclamation
// starts in, page sharing, and everything given back once the pressure goes.
// It judges only the recorded history; the runner carries the steps out.

import { cpuSchedulerLimits, memoryStateThresholdsPct, parseWorkloadSpec, workloadKinds, workloadLimits, workloadParamsByKind, workloadPhaseKinds, type MemoryState } from "@simdc/hypervisor";
import type { RunHistory, SampleEntry } from "./history-model.js";
import type { JsonSchema, Parts, Verdict } from "./parts.js";
import { duration, durationMs, errorAt, name, type Scenario, type ScenarioSource } from "./scenario.js";

/** Bounds on what the hypervisor probe records, so a history stays a size a report can read. */
export const hypervisorProbeLimits = {
  /** Hosts one probe samples: those it names, else the topology's first. */
  hostsMax: 64,
  /** VMs one host's sample records (the first by id); the others are counted in vmsOmitted. */
  vmsPerHostMax: 64,
} as const;

/** VMs one boot storm creates, all requests in flight at once. */
export const bootStormVmsMax = 256;

/** A host's memory states, shallowest first: a sample records its state as the index here. */
export const memoryStates = Object.keys(memoryStateThresholdsPct) as MemoryState[];

/** A VM's counters in a hypervisor sample, as esxtop has them: CPU in percent summed over its vCPUs (100 is one core), memory in MiB. */
export const vmCounters = ["vcpus", "used", "ready", "costop", "mlmtd", "swpwt", "lost", "balloon", "swapped"] as const;
export type VmCounter = (typeof vmCounters)[number];

/** A host's counters in a hypervisor sample: memory in MiB, memoryState as its index in memoryStates, windowMs the simulated time the sample covers. */
export const hostCounters = ["utilization", "memoryState", "free", "minFree", "sharedSaved", "sharedSavedBetweenVms", "balloon", "compressed", "swapped", "pressure", "windowMs", "vms", "vmsOmitted"] as const;
export type HostCounter = (typeof hostCounters)[number];

/** Where a VM's counter sits in a hypervisor sample's values. */
export function vmValueKey(vmId: string, counter: VmCounter): string {
  return `vm.${vmId}.${counter}`;
}

export type SharesField = "low" | "normal" | "high" | number;

export interface WorkloadPhaseField {
  kind: (typeof workloadPhaseKinds)[number];
  /** How long the phase lasts (a duration). */
  for: string;
  params?: Record<string, number>;
}

/** A guest's workload as a scenario writes it: a kind, its parameters, and phases that run first. */
export interface WorkloadField {
  kind: (typeof workloadKinds)[number];
  params?: Record<string, number>;
  phases?: WorkloadPhaseField[];
}

/** The fields a VM group (or a step that creates VMs) takes from the hypervisor, passed through to `vm create`. */
export interface VmResourceFields {
  workload?: WorkloadField;
  cpu?: { shares?: SharesField; reservationMhz?: number; limitMhz?: number };
  memory?: { shares?: SharesField; reservationMib?: number };
  /** The OS image whose pages the group's guests hold (page sharing merges equal ones when salts allow). */
  image?: string;
  /** sched.mem.pshare.salt: under per-VM salting, VMs share pages only with VMs of an equal salt. */
  shareSalt?: string;
}

/** A workload as the model and the wire take it (durations in ms). */
export interface WorkloadWire {
  kind: string;
  params: Record<string, number>;
  phases: { kind: string; durationMs: number; params: Record<string, number> }[];
}

/** The workload a group's guests run; with bootMs, a boot phase of that long comes first (a boot storm). An absent workload is idle. */
export function groupWorkload(fields: VmResourceFields, bootMs?: number): WorkloadWire {
  const w = fields.workload;
  const phases = (w?.phases ?? []).map((p) => ({ kind: p.kind, durationMs: durationMs(p.for), params: p.params ?? {} }));
  if (bootMs !== undefined) phases.unshift({ kind: "boot", durationMs: bootMs, params: {} });
  return { kind: w?.kind ?? "idle", params: w?.params ?? {}, phases };
}

const shares: JsonSchema = {
  description: "low, normal, high, or a number of shares",
  oneOf: [{ enum: ["low", "normal", "high"] }, { type: "integer", minimum: 1, maximum: cpuSchedulerLimits.sharesMax }],
};

// Every numeric parameter of some kind; which apply to which kind, and their ranges, the model checks (checkGroup).
const numericParams = [...new Set(Object.values(workloadParamsByKind).flat())].filter((p) => p !== "image");
const workloadParams: JsonSchema = { type: "object", additionalProperties: false, properties: Object.fromEntries(numericParams.map((p) => [p, { type: "number" }])) };

const vmFields: Record<string, JsonSchema> = {
  workload: {
    type: "object",
    additionalProperties: false,
    required: ["kind"],
    properties: {
      kind: { enum: [...workloadKinds] },
      params: workloadParams,
      phases: {
        type: "array",
        maxItems: workloadLimits.phasesMax,
        items: { type: "object", additionalProperties: false, required: ["kind", "for"], properties: { kind: { enum: [...workloadPhaseKinds] }, for: duration, params: workloadParams } },
      },
    },
  },
  cpu: { type: "object", additionalProperties: false, properties: { shares, reservationMhz: { type: "integer", minimum: 0 }, limitMhz: { type: "integer", minimum: 1 } } },
  memory: { type: "object", additionalProperties: false, properties: { shares, reservationMib: { type: "integer", minimum: 0 } } },
  image: name,
  shareSalt: { type: "string", minLength: 1, maxLength: 64 },
};

const percent = { type: "number", minimum: 0 };
const window = { after: duration, before: duration };

/** How a VM counter is read from a sample; wait is ready plus co-stop: all the time its vCPUs wanted a pCPU and did not run. */
const readers: Record<string, (values: Record<string, number>, vm: string) => number | undefined> = {
  ...Object.fromEntries(vmCounters.map((c) => [c, (v: Record<string, number>, vm: string) => v[vmValueKey(vm, c)]])),
  wait: (v, vm) => {
    const ready = v[vmValueKey(vm, "ready")];
    const costop = v[vmValueKey(vm, "costop")];
    return ready === undefined || costop === undefined ? undefined : ready + costop;
  },
};
const ratioCounters = ["used", "ready", "costop", "wait", "mlmtd", "swpwt", "lost", "balloon", "swapped"];

/** The assertions on one VM counter in a range: which counter, per vCPU or summed, and what it means. */
const counterRanges = [
  { kind: "cpu-ready", counter: "ready", perVcpu: true, what: "%RDY per vCPU", means: "the time its vCPUs were ready to run and had no pCPU (%RDY per vCPU)" },
  { kind: "cpu-costop", counter: "costop", perVcpu: true, what: "%CSTP per vCPU", means: "the time its vCPUs were co-stopped, held back to keep level with their siblings (%CSTP per vCPU)" },
  { kind: "cpu-used", counter: "used", perVcpu: false, what: "%USED", means: "the CPU it was charged, 100 a core (%USED; a reservation of R MHz on cores of C MHz is 100 × R / C)" },
  { kind: "lost-work", counter: "lost", perVcpu: false, what: "lost work %", means: "the share of the work its guest wanted and did not get, 0-100" },
] as const;

export function hypervisorParts(parts: Parts): void {
  for (const [field, schema] of Object.entries(vmFields)) parts.vmField(field, schema);
  parts.step({
    kind: "memory-pressure",
    summary: "memory taken on host by something outside its VMs (pressureMib; 0 gives it back), for a while when `for` is given, then given back: the host's free memory falls through its states and reclamation starts",
    fault: true,
    properties: { host: name, pressureMib: { type: "integer", minimum: 0 }, for: duration },
    required: ["host", "pressureMib"],
    refs: { host: "host" },
  });
  parts.step({
    kind: "runaway",
    summary: "VM vm's guest turns CPU-bound, a batch workload on all its vCPUs (SetVmResources, as `simdc vm resources --workload batch`); for a while when `for` is given, then its workload is the steady one it had (phases it ran are not run again)",
    fault: true,
    properties: { vm: name, for: duration },
    required: ["vm"],
    refs: { vm: "vm" },
  });
  parts.step({
    kind: "boot-storm",
    summary: `create VMs name-1..name-count all at once (at most ${bootStormVmsMax}), each first booting for \`boot\` (CPU-bound, filling its memory) and then running its workload; a load, shaded as a fault while they boot`,
    fault: true,
    properties: {
      name,
      count: { type: "integer", minimum: 2, maximum: bootStormVmsMax },
      vcpus: { type: "integer", minimum: 1, maximum: 256 },
      memoryMib: { type: "integer", minimum: 1 },
      boot: duration,
    },
    required: ["name", "count", "boot"],
    createsVms: true,
  });
  parts.probe({
    kind: "hypervisor",
    summary: `each host's hypervisor counters as esxtop shows them (GetHostStats), a sample per host and closed window (5 s simulated): utilization, memory state, free, balloon, compressed, swapped, memory saved by page sharing (in all, and between VMs), the pressure; and per VM (at most ${hypervisorProbeLimits.vmsPerHostMax} a host) vcpus, %USED, %RDY, %CSTP, %MLMTD, %SWPWT, lost work, balloon and swapped. With hosts, only those; else the topology's first ${hypervisorProbeLimits.hostsMax}`,
    properties: { hosts: { type: "array", items: name, minItems: 1, maxItems: hypervisorProbeLimits.hostsMax, uniqueItems: true } },
    refs: { hosts: "host" },
  });
  for (const r of counterRanges) {
    parts.assertion({
      kind: r.kind,
      summary: `${r.means}, of VM vm or on average over VM group vm's, over the hypervisor samples whose window lies between after and before (offsets into the run), is at least min and at most max`,
      properties: { vm: name, min: percent, max: percent, ...window },
      required: ["vm"],
      refs: { vm: "vms" },
      evaluate: (h, p) => counterRange(h, p, r),
    });
  }
  parts.assertion({
    kind: "cpu-ratio",
    summary: `VM (or VM group) a's counter over b's, each summed over its vCPUs as esxtop shows it and averaged over the samples between after and before, is at least min and at most max; counter is one of ${ratioCounters.join(", ")} (wait: ready plus co-stop), used by default`,
    properties: { a: name, b: name, counter: { enum: ratioCounters }, min: { type: "number", minimum: 0 }, max: { type: "number", minimum: 0 }, ...window },
    required: ["a", "b"],
    refs: { a: "vms", b: "vms" },
    evaluate: cpuRatio,
  });
  parts.assertion({
    kind: "memory-state",
    summary: "host's memory state (from its memory-state-changed events) reached `reached` or a deeper one (high, clear, soft, hard, low); with left, it came back above `left` after that (left: clear is back to high)",
    properties: { host: name, reached: { enum: memoryStates.slice(1) }, left: { enum: memoryStates.slice(1) } },
    required: ["host", "reached"],
    refs: { host: "host" },
    evaluate: memoryState,
  });
  parts.assertion({
    kind: "reclaim-order",
    summary: "on host, reclamation started in this order (default sharing, balloon, compression, swap), each seen in a hypervisor sample at startMib or more (default 1): a later one never starts before an earlier one, and every one starts (two in one sample count as in order)",
    properties: { host: name, order: { type: "array", items: { enum: reclaimKinds }, minItems: 2, uniqueItems: true }, startMib: { type: "number", minimum: 0 } },
    required: ["host"],
    refs: { host: "host" },
    evaluate: reclaimOrder,
  });
  parts.assertion({
    kind: "page-sharing",
    summary: "the most memory page sharing saved on host (with betweenVms, only what needs pages of two VMs: none between VMs of different salts) in the samples between after and before, in MiB, is at least min and at most max",
    properties: { host: name, betweenVms: { type: "boolean" }, min: { type: "number", minimum: 0 }, max: { type: "number", minimum: 0 }, ...window },
    required: ["host"],
    refs: { host: "host" },
    evaluate: pageSharing,
  });
  parts.assertion({
    kind: "reclaimed-back",
    summary: "once the memory pressure on host is gone, its balloon, compressed and swapped memory are all back to 0 within this time (counted from the last sample under pressure)",
    properties: { host: name, within: duration },
    required: ["host", "within"],
    refs: { host: "host" },
    evaluate: reclaimedBack,
  });
  parts.scenarioCheck({ name: "hypervisor", check: (scenario, source) => checkScenario(scenario, source, parts) });
}

/** A VM group's sizes, as a group or a step that creates VMs has them. */
type GroupFields = VmResourceFields & { vcpus?: number; memoryMib?: number };

/**
 * What the schema cannot say: workload parameters the kind does not take or
 * out of range, reservations the VM could never use, a pressure the host
 * does not have.
 * @throws SimdcError INVALID_ARGUMENT naming the line.
 */
function checkScenario(scenario: Scenario, source: ScenarioSource, parts: Parts): void {
  const coreMhz = scenario.topology.coreMhz;
  for (const [i, g] of scenario.vms.entries()) checkGroup(source, ["vms", i], g, coreMhz);
  for (const [i, step] of scenario.timeline.entries()) {
    const path = ["timeline", i];
    if (step.do === "memory-pressure") {
      const pressureMib = step["pressureMib"] as number;
      if (pressureMib > scenario.topology.memoryMib) throw refuse(source, [...path, "pressureMib"], `a pressure of ${pressureMib} MiB is more than a host's ${scenario.topology.memoryMib} MiB`);
      if (pressureMib === 0 && step["for"] !== undefined) throw refuse(source, [...path, "for"], "pressureMib 0 gives the memory back; for needs a pressure to take it back from");
    }
    if (step.do === "boot-storm" && durationMs(step["boot"] as string) === 0) throw refuse(source, [...path, "boot"], "a boot must last longer than 0");
    if (parts.steps.get(step.do)?.createsVms) checkGroup(source, path, step as GroupFields, coreMhz, step.do === "boot-storm" ? durationMs(step["boot"] as string) : undefined);
  }
}

/** "file:line: field: message" for the field at `path`. */
function refuse(source: ScenarioSource, path: (string | number)[], message: string): Error {
  return errorAt(source, path, `${path.join(".")}: ${message}`);
}

function checkGroup(source: ScenarioSource, path: (string | number)[], g: GroupFields, coreMhz: number, bootMs?: number): void {
  const vcpus = g.vcpus ?? 1;
  const memoryMib = g.memoryMib ?? 512;
  for (const [j, phase] of (g.workload?.phases ?? []).entries()) {
    if (durationMs(phase.for) === 0) throw refuse(source, [...path, "workload", "phases", j, "for"], "a phase must last longer than 0");
  }
  try {
    // The model's own check: which parameters each kind takes, their ranges, a bursty mean it can reach.
    parseWorkloadSpec(groupWorkload(g, bootMs));
  } catch (err) {
    // Its message names the field from "workload" on.
    throw errorAt(source, [...path, "workload"], `${path.join(".")}: ${(err as Error).message}`);
  }
  const cpu = g.cpu ?? {};
  if ((cpu.reservationMhz ?? 0) > vcpus * coreMhz) {
    throw refuse(source, [...path, "cpu", "reservationMhz"], `${cpu.reservationMhz} MHz is more than ${vcpus} vCPUs of ${coreMhz} MHz can use (${vcpus * coreMhz} MHz)`);
  }
  if (cpu.limitMhz !== undefined && cpu.limitMhz < (cpu.reservationMhz ?? 0)) throw refuse(source, [...path, "cpu", "limitMhz"], `${cpu.limitMhz} MHz is below the reservation, ${cpu.reservationMhz} MHz`);
  const reservationMib = g.memory?.reservationMib ?? 0;
  if (reservationMib > memoryMib) throw refuse(source, [...path, "memory", "reservationMib"], `${reservationMib} MiB is more than the VM's ${memoryMib} MiB`);
}

interface Window {
  fromMs: number;
  toMs: number;
}

function windowOf(h: RunHistory, p: Record<string, unknown>): Window {
  const offset = (field: string): number | undefined => (typeof p[field] === "string" ? durationMs(p[field] as string) : undefined);
  const after = offset("after");
  const before = offset("before");
  return { fromMs: h.run.startMs + (after ?? 0), toMs: before === undefined ? Infinity : h.run.startMs + before };
}

function windowText(h: RunHistory, w: Window): string {
  return `${h.at(w.fromMs)} to ${w.toMs === Infinity ? "the end" : h.at(w.toMs)}`;
}

/** The hypervisor samples (of `host`, or of every host) whose whole window lies in `w`, in time order. */
function samplesIn(h: RunHistory, w: Window, host?: string): SampleEntry[] {
  return h.samples.filter((s) => {
    if (s.probe !== "hypervisor" || (host !== undefined && s.label !== host)) return false;
    const windowMs = s.values["windowMs"];
    return windowMs !== undefined && s.timeMs - windowMs >= w.fromMs && s.timeMs <= w.toMs;
  });
}

/** A group's VMs, or the VM itself. */
function vmsOf(h: RunHistory, vmOrGroup: string): string[] {
  return h.run.groups?.[vmOrGroup] ?? [vmOrGroup];
}

interface Measured {
  mean: number;
  min: number;
  max: number;
  /** Values averaged: one per VM and sample. */
  count: number;
}

/** A counter of some VMs over the samples in a window: one value per VM and sample (per vCPU when asked). */
function measure(h: RunHistory, vms: string[], counter: string, perVcpu: boolean, w: Window): Measured {
  const read = readers[counter]!;
  const values: number[] = [];
  for (const s of samplesIn(h, w)) {
    for (const vm of vms) {
      const x = read(s.values, vm);
      if (x === undefined) continue;
      values.push(perVcpu ? x / Math.max(1, s.values[vmValueKey(vm, "vcpus")] ?? 1) : x);
    }
  }
  if (values.length === 0) return { mean: NaN, min: NaN, max: NaN, count: 0 };
  return { mean: values.reduce((a, b) => a + b, 0) / values.length, min: Math.min(...values), max: Math.max(...values), count: values.length };
}

const fmt = (x: number): string => (Math.round(x * 100) / 100).toString();

/** "allowed 10-any"; and whether value is in it. */
function range(p: Record<string, unknown>, value: number): { ok: boolean; text: string } {
  const min = (p["min"] as number | undefined) ?? 0;
  const max = (p["max"] as number | undefined) ?? Infinity;
  return { ok: value >= min && value <= max, text: `allowed ${min}-${max === Infinity ? "any" : max}` };
}

const noSamples = (what: string, h: RunHistory, w: Window): Verdict => ({ ok: false, detail: `no hypervisor samples of ${what} from ${windowText(h, w)}: add a hypervisor probe, or widen the window` });

function counterRange(h: RunHistory, p: Record<string, unknown>, r: (typeof counterRanges)[number]): Verdict {
  const target = p["vm"] as string;
  const vms = vmsOf(h, target);
  const w = windowOf(h, p);
  const what = vms.length > 1 || vms[0] !== target ? `${target} (${vms.length} VMs)` : target;
  const m = measure(h, vms, r.counter, r.perVcpu, w);
  if (m.count === 0) return noSamples(what, h, w);
  const { ok, text } = range(p, m.mean);
  return { ok, detail: `${what}: ${r.what} ${fmt(m.mean)} on average (${fmt(m.min)} to ${fmt(m.max)}) over ${m.count} samples from ${windowText(h, w)}, ${text}`, metrics: { mean: m.mean, min: m.min, max: m.max } };
}

function cpuRatio(h: RunHistory, p: Record<string, unknown>): Verdict {
  const counter = (p["counter"] as string | undefined) ?? "used";
  const w = windowOf(h, p);
  const [a, b] = [p["a"] as string, p["b"] as string];
  const ma = measure(h, vmsOf(h, a), counter, false, w);
  const mb = measure(h, vmsOf(h, b), counter, false, w);
  if (ma.count === 0) return noSamples(a, h, w);
  if (mb.count === 0) return noSamples(b, h, w);
  const ratio = mb.mean === 0 ? (ma.mean === 0 ? 1 : Infinity) : ma.mean / mb.mean;
  const { ok, text } = range(p, ratio);
  return {
    ok,
    detail: `${counter} of ${a} ${fmt(ma.mean)} over ${b}'s ${fmt(mb.mean)} is ${Number.isFinite(ratio) ? fmt(ratio) : "infinite"} (from ${windowText(h, w)}, ${ma.count} and ${mb.count} samples), ${text}`,
    metrics: { ratio, a: ma.mean, b: mb.mean },
  };
}

/** A host's memory-state changes, from its events ("memory high -> soft, 123 MiB free"). */
function stateChanges(h: RunHistory, host: string): { timeMs: number; from: number; to: number }[] {
  const out: { timeMs: number; from: number; to: number }[] = [];
  for (const e of h.events) {
    if (e.kind !== "memory-state-changed" || e.objectId !== host) continue;
    const m = /memory (\w+) -> (\w+)/.exec(e.message);
    const from = memoryStates.indexOf(m?.[1] as MemoryState);
    const to = memoryStates.indexOf(m?.[2] as MemoryState);
    if (from >= 0 && to >= 0) out.push({ timeMs: e.timeMs, from, to });
  }
  return out;
}

function memoryState(h: RunHistory, p: Record<string, unknown>): Verdict {
  const host = p["host"] as string;
  const reached = memoryStates.indexOf(p["reached"] as MemoryState);
  const changes = stateChanges(h, host);
  const deepest = changes.reduce((d, c) => Math.max(d, c.to), 0);
  const into = changes.find((c) => c.to >= reached);
  const path = changes.map((c) => `${memoryStates[c.to]} at ${h.at(c.timeMs)}`).join(", ");
  const seen = `${host} went ${path || "nowhere (it stayed high)"}`;
  if (!into) return { ok: false, detail: `${seen}: never ${memoryStates[reached]} or deeper (the deepest was ${memoryStates[deepest]})`, metrics: { deepest } };
  const metrics: Record<string, number> = { deepest, reachedAtMs: into.timeMs - h.run.startMs };
  const reachedText = `${memoryStates[reached]} or deeper from ${h.at(into.timeMs)}`;
  if (typeof p["left"] !== "string") return { ok: true, detail: `${seen}: ${reachedText}`, metrics };
  const left = memoryStates.indexOf(p["left"] as MemoryState);
  const out = changes.find((c) => c.timeMs >= into.timeMs && c.to < left);
  if (!out) return { ok: false, detail: `${seen}: ${reachedText}, and never back above ${memoryStates[left]} after that`, metrics };
  metrics["leftAtMs"] = out.timeMs - h.run.startMs;
  return { ok: true, detail: `${seen}: ${reachedText}, back above ${memoryStates[left]} at ${h.at(out.timeMs)}`, metrics };
}

const reclaimKinds = ["sharing", "balloon", "compression", "swap"];
const reclaimCounters: Record<string, HostCounter> = { sharing: "sharedSaved", balloon: "balloon", compression: "compressed", swap: "swapped" };

function reclaimOrder(h: RunHistory, p: Record<string, unknown>): Verdict {
  const host = p["host"] as string;
  const order = (p["order"] as string[] | undefined) ?? reclaimKinds;
  const startMib = (p["startMib"] as number | undefined) ?? 1;
  const samples = samplesIn(h, { fromMs: -Infinity, toMs: Infinity }, host);
  if (samples.length === 0) return noSamples(host, h, { fromMs: h.run.startMs, toMs: Infinity });
  const starts = order.map((kind) => ({ kind, at: samples.find((s) => (s.values[reclaimCounters[kind]!] ?? 0) >= startMib)?.timeMs }));
  const metrics = Object.fromEntries(starts.filter((s) => s.at !== undefined).map((s) => [`${s.kind}StartMs`, s.at! - h.run.startMs]));
  const seen = starts.map((s) => `${s.kind} ${s.at === undefined ? "never" : `by ${h.at(s.at)}`}`).join(", ");
  const missing = starts.find((s) => s.at === undefined);
  if (missing) return { ok: false, detail: `on ${host}: ${seen}; ${missing.kind} never reached ${startMib} MiB`, metrics };
  for (let i = 1; i < starts.length; i++) {
    const [before, now] = [starts[i - 1]!, starts[i]!];
    if (now.at! < before.at!) return { ok: false, detail: `on ${host}: ${seen}; ${now.kind} started before ${before.kind}`, metrics };
  }
  return { ok: true, detail: `on ${host}: ${seen}, in that order`, metrics };
}

function pageSharing(h: RunHistory, p: Record<string, unknown>): Verdict {
  const host = p["host"] as string;
  const w = windowOf(h, p);
  const key: HostCounter = p["betweenVms"] === true ? "sharedSavedBetweenVms" : "sharedSaved";
  const samples = samplesIn(h, w, host);
  if (samples.length === 0) return noSamples(host, h, w);
  const most = Math.max(...samples.map((s) => s.values[key] ?? 0));
  const { ok, text } = range(p, most);
  return { ok, detail: `page sharing saved at most ${fmt(most)} MiB on ${host}${key === "sharedSavedBetweenVms" ? " between VMs" : ""} over ${samples.length} samples from ${windowText(h, w)}, ${text}`, metrics: { savedMib: most } };
}

function reclaimedBack(h: RunHistory, p: Record<string, unknown>): Verdict {
  const host = p["host"] as string;
  const withinMs = durationMs(p["within"] as string);
  const samples = samplesIn(h, { fromMs: -Infinity, toMs: Infinity }, host);
  const held = (s: SampleEntry): number => (s.values["balloon"] ?? 0) + (s.values["compressed"] ?? 0) + (s.values["swapped"] ?? 0);
  const lastPressed = samples.findLast((s) => (s.values["pressure"] ?? 0) > 0);
  if (!lastPressed) return { ok: false, detail: `no sample of ${host} shows memory pressure: nothing to give back` };
  const reclaimed = Math.max(...samples.filter((s) => s.timeMs <= lastPressed.timeMs).map(held));
  // Back to 0: within what a sample's two decimals and floating point leave.
  const back = samples.find((s) => s.timeMs > lastPressed.timeMs && (s.values["pressure"] ?? 0) === 0 && held(s) <= 0.5);
  const metrics: Record<string, number> = { reclaimedMib: reclaimed, ...(back ? { backAfterMs: back.timeMs - lastPressed.timeMs } : {}) };
  if (reclaimed <= 0.5) return { ok: false, detail: `${host} reclaimed nothing under pressure (balloon, compressed and swapped stayed 0), so nothing came back`, metrics };
  if (!back) {
    const last = samples.at(-1)!;
    return { ok: false, detail: `${host} still holds ${fmt(last.values["balloon"] ?? 0)} MiB ballooned, ${fmt(last.values["compressed"] ?? 0)} compressed and ${fmt(last.values["swapped"] ?? 0)} swapped at ${h.at(last.timeMs)}, after the pressure went by ${h.at(lastPressed.timeMs)}`, metrics };
  }
  const afterMs = back.timeMs - lastPressed.timeMs;
  const detail = `${host}'s ${fmt(reclaimed)} MiB reclaimed (balloon, compressed, swapped) were back to 0 by ${h.at(back.timeMs)}, ${fmt(afterMs / 1000)} s after the last sample under pressure (allowed ${withinMs / 1000} s)`;
  return { ok: afterMs <= withinMs, detail, metrics };
}
