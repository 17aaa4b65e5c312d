// What a run recorded, one JSON line per entry: the datacenter's events as
// they happened, the steps the runner took (with their outcome), the answers
// to its own changes (acknowledged or not), probe samples, and the final
// state. Checkers and assertions decide from this alone.

import type { DatacenterEvent } from "@simdc/history";

export interface RunInfo {
  type: "run";
  scenario: string;
  seed: number;
  timeScale: number;
  /** The command that repeats this run. */
  command: string;
  /** Simulated time the timeline started at (its "0s"). */
  startMs: number;
  durationMs: number;
  /** After the last fault ends, how long the datacenter has to be whole again. */
  livenessMs: number;
  /** Which hosts each agent process runs, to know what a process fault touches. */
  agents: Record<string, string[]>;
  hosts: string[];
  /** Each VM group's VMs (the scenario's vms, and the VMs its steps created), for assertions that name a group. */
  groups?: Record<string, string[]>;
}

export interface EventEntry {
  type: "event";
  event: DatacenterEvent;
}

export interface StepEntry {
  type: "step";
  timeMs: number;
  id: string;
  do: string;
  fault: boolean;
  ok: boolean;
  detail: string;
  /** The hosts the step acts on (a process's hosts, a rule's host), for detection latencies. */
  hosts: string[];
  /** What it acts on: the process, the rule id ("all" for every rule), the VM. */
  target?: string;
  /** For a fault with a duration: when it ends by itself. */
  endsAtMs?: number;
}

export interface AckEntry {
  type: "ack";
  timeMs: number;
  op: string;
  id: string;
  ok: boolean;
  latencyMs: number;
  error?: string;
}

export interface SampleEntry {
  type: "sample";
  timeMs: number;
  probe: string;
  /** Which probe of its kind ("web-1>web-2" for a ping), when a scenario has several. */
  label?: string;
  values: Record<string, number>;
}

export interface FinalEntry {
  type: "final";
  timeMs: number;
  vms: { id: string; hostId: string; state: string; power: string; incarnation: string }[];
  hosts: { id: string; state: string }[];
  /**
   * Each host's vswitch at the end: the flows installed in the controller's
   * tables and the flows of its document (both as ovs-ofctl writes them),
   * for the hosts that have a network section.
   */
  flows?: { hostId: string; installed: string[]; intended: string[]; error?: string }[];
  /** The reachability matrix at the end: each pair of guests and address, reached and allowed by the policy. */
  reachability?: { from: string; to: string; ip: string; reached: boolean; allowed: boolean; why: string }[];
  /** Why the final state could not be read, if it could not. */
  error?: string;
}

export type HistoryEntry = RunInfo | EventEntry | StepEntry | AckEntry | SampleEntry | FinalEntry;

export class RunHistory {
  readonly run: RunInfo;
  readonly events: DatacenterEvent[] = [];
  readonly steps: StepEntry[] = [];
  readonly acks: AckEntry[] = [];
  readonly samples: SampleEntry[] = [];
  readonly final: FinalEntry | undefined;

  constructor(readonly entries: HistoryEntry[]) {
    const run = entries.find((e): e is RunInfo => e.type === "run");
    if (!run) throw new Error("a history starts with its run entry");
    this.run = run;
    let final: FinalEntry | undefined;
    for (const e of entries) {
      if (e.type === "event") this.events.push(e.event);
      else if (e.type === "step") this.steps.push(e);
      else if (e.type === "ack") this.acks.push(e);
      else if (e.type === "sample") this.samples.push(e);
      else if (e.type === "final") final = e;
    }
    this.events.sort((a, b) => a.timeMs - b.timeMs);
    this.final = final;
  }

  /** When the last fault stopped acting: its own end, or the step that healed it; the start when there was none. */
  get healedAtMs(): number {
    let at = this.run.startMs;
    for (const s of this.steps) {
      if (!s.ok) continue;
      if (s.fault || healing.has(s.do)) at = Math.max(at, s.endsAtMs ?? s.timeMs);
    }
    return at;
  }

  /** Offset from the timeline's start, for people ("+4.21 s"). */
  at(timeMs: number): string {
    const offset = (timeMs - this.run.startMs) / 1000;
    return `${offset < 0 ? "-" : "+"}${Math.abs(offset).toFixed(2)} s`;
  }
}

export interface FaultWindow {
  id: string;
  do: string;
  label: string;
  fromMs: number;
  toMs: number;
}

/**
 * When each fault was in force: a kill or pause until the restart or resume
 * of its process, a bus rule until its own end or its clearing, a fault with
 * a duration until its end, one a later step of its kind replaces on the
 * same target (a host's memory pressure) until that step, anything else (a
 * test-only fault) for a moment; the run's end when nothing ended it.
 */
export function faultWindows(h: RunHistory): FaultWindow[] {
  const endOfRun = h.final?.timeMs ?? h.run.startMs + h.run.durationMs;
  const windows: FaultWindow[] = [];
  for (const s of h.steps) {
    if (!s.fault || !s.ok) continue;
    const later = h.steps.filter((x) => x.ok && x.timeMs >= s.timeMs && x !== s);
    let toMs = endOfRun;
    if (s.do === "kill" || s.do === "pause" || s.do === "disconnect") {
      const ends = later.find((x) => (x.do === "restart" || x.do === "resume" || x.do === "connect") && x.target === s.target);
      if (ends) toMs = ends.timeMs;
    } else if (s.do === "bus") {
      const cleared = later.find((x) => x.do === "clear-bus" && (x.target === "all" || x.target === s.id));
      toMs = Math.min(s.endsAtMs ?? endOfRun, cleared?.timeMs ?? endOfRun);
    } else if (s.endsAtMs !== undefined) toMs = Math.min(endOfRun, s.endsAtMs);
    else if (replaced.has(s.do)) toMs = later.find((x) => x.do === s.do && x.target === s.target)?.timeMs ?? endOfRun;
    else toMs = Math.min(endOfRun, s.timeMs + 1_000);
    windows.push({ id: s.id, do: s.do, label: `${s.id}: ${s.detail}`, fromMs: s.timeMs, toMs });
  }
  return windows;
}

/** Steps that end a fault rather than start one. */
export const healing = new Set(["resume", "restart", "connect", "clear-bus", "heal"]);

/** Faults that hold until a later step of their kind on the same target replaces them (a host's memory pressure, set again or to 0). */
export const replaced = new Set(["memory-pressure"]);
