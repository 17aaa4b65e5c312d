// The parts an experiment is made of, registered by the capability that owns
// them: timeline steps (actions and faults), probes, assertions (SLOs) and
// checkers. The scenario schema is built from what is registered, so the SDN,
// hypervisor and storage work add their parts without touching the schema,
// the parser or the runner's loop.

import type { RunHistory } from "./history-model.js";

/** A JSON Schema object (draft 2020-12 subset that Ajv checks). */
export type JsonSchema = Record<string, unknown>;

export interface StepPart {
  kind: string;
  summary: string;
  /** Whether it injects a fault (shaded in reports, counted in "faults active"). */
  fault: boolean;
  /** The step's own fields (besides at, do and id), and which are required. */
  properties: Record<string, JsonSchema>;
  required?: string[];
  /** Fields that name something of the topology, checked before the run starts. */
  refs?: Record<string, "process" | "host" | "vm" | "identity">;
  /** Where it can be carried out (both when absent): a container's network exists only in Docker. */
  modes?: RunMode[];
}

/** Where an experiment's datacenter runs: local processes, or containers. */
export type RunMode = "local" | "docker";

export interface ProbePart {
  kind: string;
  summary: string;
  properties?: Record<string, JsonSchema>;
}

export interface Verdict {
  ok: boolean;
  /** One line: what held, or the first thing that broke it (naming the events). */
  detail: string;
  /** Figures it measured (latencies in ms, counts), aggregated across repeats. */
  metrics?: Record<string, number>;
}

export interface AssertionPart {
  kind: string;
  summary: string;
  properties: Record<string, JsonSchema>;
  required?: string[];
  evaluate(history: RunHistory, params: Record<string, unknown>): Verdict;
}

export interface CheckerPart {
  name: string;
  summary: string;
  check(history: RunHistory): Verdict;
}

export class Parts {
  readonly steps = new Map<string, StepPart>();
  readonly probes = new Map<string, ProbePart>();
  readonly assertions = new Map<string, AssertionPart>();
  readonly checkers = new Map<string, CheckerPart>();

  step(part: StepPart): this {
    this.add(this.steps, part.kind, part);
    return this;
  }

  probe(part: ProbePart): this {
    this.add(this.probes, part.kind, part);
    return this;
  }

  assertion(part: AssertionPart): this {
    this.add(this.assertions, part.kind, part);
    return this;
  }

  checker(part: CheckerPart): this {
    this.add(this.checkers, part.name, part);
    return this;
  }

  private add<T>(map: Map<string, T>, key: string, part: T): void {
    // Two capabilities claiming one name is a programming error, found at start.
    if (map.has(key)) throw new Error(`experiment part ${key} is registered twice`);
    map.set(key, part);
  }
}
