// The parts an experiment is made of, registered by the capability that owns
// them: timeline steps (actions and faults), probes, assertions (SLOs),
// checkers, the fields its VM groups take and the checks of a whole scenario
// that a schema cannot say. The scenario schema is built from what is
// registered, so the SDN, hypervisor and storage work add their parts without
// touching the schema, the parser or the runner's loop.

import type { RunHistory } from "./history-model.js";
import type { Scenario, ScenarioSource } from "./scenario.js";

/** A JSON Schema object (draft 2020-12 subset that Ajv checks). */
export type JsonSchema = Record<string, unknown>;

/**
 * What a field names, checked against the topology before the run starts: a
 * process, a host, a VM (a step's `vm` must exist at the step's time), a bus
 * identity, or a VM or VM group (the scenario's vms and the VMs its steps create).
 */
export type RefKind = "process" | "host" | "vm" | "identity" | "vms";

export interface StepPart {
  kind: string;
  summary: string;
  /** Whether it injects a fault (shaded in reports, counted in "faults active"). */
  fault: boolean;
  /** The step's own fields (besides at, do and id), and which are required. */
  properties: Record<string, JsonSchema>;
  required?: string[];
  /** Fields that name something of the topology, checked before the run starts. */
  refs?: Record<string, RefKind>;
  /** Where it can be carried out (both when absent): a container's network exists only in Docker. */
  modes?: RunMode[];
  /**
   * It creates VMs (`name`, or name-1..name-N with `count`): they exist from
   * its time on, form a VM group of that name, and it takes the VM group
   * fields the capabilities add (`Parts.vmFields`).
   */
  createsVms?: boolean;
}

/** Where an experiment's datacenter runs: local processes, or containers. */
export type RunMode = "local" | "docker";

export interface ProbePart {
  kind: string;
  summary: string;
  properties?: Record<string, JsonSchema>;
  /** Fields that name something of the topology (a string, or a list of them). */
  refs?: Record<string, RefKind>;
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
  /** Fields that name something of the topology (a string, or a list of them). */
  refs?: Record<string, RefKind>;
  evaluate(history: RunHistory, params: Record<string, unknown>): Verdict;
}

export interface CheckerPart {
  name: string;
  summary: string;
  check(history: RunHistory): Verdict;
}

/**
 * A check of a whole scenario that its schema cannot say (a workload's
 * parameter that its kind does not take, a reservation larger than the VM),
 * run before anything starts.
 */
export interface ScenarioCheckPart {
  name: string;
  /** @throws SimdcError INVALID_ARGUMENT naming the line (errorAt). */
  check(scenario: Scenario, source: ScenarioSource): void;
}

export class Parts {
  readonly steps = new Map<string, StepPart>();
  readonly probes = new Map<string, ProbePart>();
  readonly assertions = new Map<string, AssertionPart>();
  readonly checkers = new Map<string, CheckerPart>();
  readonly scenarioChecks = new Map<string, ScenarioCheckPart>();
  /** Fields every VM group takes besides name, count, vcpus, memoryMib and nics (and so every step that creates VMs). */
  readonly vmFields: Record<string, JsonSchema> = {};

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

  scenarioCheck(part: ScenarioCheckPart): this {
    this.add(this.scenarioChecks, part.name, part);
    return this;
  }

  vmField(name: string, schema: JsonSchema): this {
    if (Object.hasOwn(this.vmFields, name)) throw new Error(`VM group field ${name} is registered twice`);
    this.vmFields[name] = schema;
    return this;
  }

  private add<T>(map: Map<string, T>, key: string, part: T): void {
    // Two capabilities claiming one name is a programming error, found at start.
    if (map.has(key)) throw new Error(`experiment part ${key} is registered twice`);
    map.set(key, part);
  }
}
