// Scenario files: YAML checked against a JSON Schema made from the registered
// parts, then against the topology (a fault on a process that does not exist,
// a resume of a process never paused, a step after the end). Every error
// names the file, line and field, and nothing starts before the file is good.

import { Ajv, type ErrorObject, type ValidateFunction } from "ajv";
import { isMap, isScalar, LineCounter, parseDocument, type Document } from "yaml";
import { invalidArgument } from "@simdc/common";
import type { VmResourceFields } from "./hypervisor.js";
import type { JsonSchema, Parts } from "./parts.js";

/** A time in a scenario: "500ms", "2s", "1.5m", "1h". */
export const durationPattern = "^\\d+(\\.\\d+)?(ms|s|m|h)$";
const units: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 };

export function durationMs(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(text);
  if (!m) throw invalidArgument(`${JSON.stringify(text)} is not a duration like 500ms, 2s or 1m`);
  return Math.round(Number(m[1]) * units[m[2]!]!);
}

// A schema's description says in words what it takes: an editor shows it, and a refusal quotes it.
export const duration: JsonSchema = { type: "string", pattern: durationPattern, description: "a duration like 500ms, 2s or 1m" };
export const name: JsonSchema = { type: "string", pattern: "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", description: "a name of a-z, 0-9 and - (1-63 characters)" };

export interface Topology {
  hosts: number;
  hostsPerAgent: number;
  san: number;
  controllers: number;
  heartbeatIntervalMs: number;
  heartbeatMissesMax: number;
  timeScale: number;
  pcpus: number;
  memoryMib: number;
  /** What the hosts' vswitches do when the controller is lost. */
  failMode: "secure" | "standalone";
  /** How often a vswitch probes the controller, in ms. */
  inactivityProbeMs: number;
  /** Each host NIC's bandwidth (Mbit/s) and transmit queue (KiB). */
  nicMbps: number;
  nicQueueKib: number;
  /** Co-scheduling of multi-vCPU VMs: relaxed (ESX 3+) or strict (ESX 2). */
  coscheduling: "relaxed" | "strict";
  /** Page sharing between VMs: per-vm (vSphere's default: only VMs of equal salts share) or off (every VM shares). */
  shareSalting: "per-vm" | "off";
  /** Logical CPUs per core (2: hyperthreading), and each core's speed in MHz. */
  threadsPerCore: 1 | 2;
  coreMhz: number;
}

/** A group of VMs made alike; the hypervisor's fields (workload, cpu, memory, image, shareSalt) say what their guests do and get. */
export interface VmGroup extends VmResourceFields {
  name: string;
  count: number;
  vcpus: number;
  memoryMib: number;
  /** Its NICs, eth0 first: a network, and the security groups guarding the NIC (`lan,sg=web+ops`). */
  nics: string[];
}

/** A security group the run creates before its VMs: rules as `simdc sg create --rule` takes them. */
export interface SecurityGroupSpec {
  name: string;
  rules: string[];
}

/** An external endpoint (the outside world) the run creates, on a given host or where the controller puts it. */
export interface EndpointSpec {
  name: string;
  host?: string;
}

/** A logical router the run creates between networks of one tenant. */
export interface RouterSpec {
  name: string;
  networks: string[];
}

/** A logical network the run creates before its VMs. */
export interface NetworkSpec {
  name: string;
  mode: "bridge" | "host-only" | "nat";
  subnet: string;
  /** Every flow pushed ahead (the default), or set up by packet-ins. */
  flowSetup?: "proactive" | "reactive";
  /** Which host NIC carries its tunnels: the converged one (the default) or the dedicated one. */
  uplink?: "converged" | "dedicated";
  tenant?: string;
}

/** A step's time: fixed, or drawn from the run's seed between two bounds. */
export type StepTime = string | { between: [string, string] };

export interface Step {
  at: StepTime;
  do: string;
  id?: string;
  [field: string]: unknown;
}

export interface Scenario {
  name: string;
  description: string;
  seed?: number;
  topology: Topology;
  networks: NetworkSpec[];
  securityGroups: SecurityGroupSpec[];
  endpoints: EndpointSpec[];
  routers: RouterSpec[];
  vms: VmGroup[];
  timeline: Step[];
  duration: string;
  liveness: string;
  probes: { probe: string; every: string; [field: string]: unknown }[];
  assertions: { assert: string; [field: string]: unknown }[];
  checkers: string[];
  /** Where each step, probe and assertion stands in the file (for errors found later). */
  lines: { timeline: number[] };
}

const topologySchema: JsonSchema = {
  type: "object",
  additionalProperties: false,
  properties: {
    hosts: { type: "integer", minimum: 1, maximum: 10_000 },
    hostsPerAgent: { type: "integer", minimum: 1, maximum: 1_000 },
    san: { type: "integer", minimum: 0, maximum: 64 },
    controllers: { type: "integer", minimum: 1, maximum: 3 },
    heartbeatIntervalMs: { type: "integer", minimum: 50, maximum: 60_000 },
    heartbeatMissesMax: { type: "integer", minimum: 1, maximum: 100 },
    timeScale: { type: "number", minimum: 0.01, maximum: 1000 },
    pcpus: { type: "integer", minimum: 1, maximum: 4096 },
    memoryMib: { type: "integer", minimum: 1 },
    failMode: { enum: ["secure", "standalone"] },
    inactivityProbeMs: { type: "integer", minimum: 100, maximum: 600_000 },
    nicMbps: { type: "integer", minimum: 1, maximum: 400_000 },
    nicQueueKib: { type: "integer", minimum: 1, maximum: 1_048_576 },
    coscheduling: { enum: ["relaxed", "strict"] },
    shareSalting: { enum: ["per-vm", "off"] },
    threadsPerCore: { enum: [1, 2] },
    coreMhz: { type: "integer", minimum: 1, maximum: 10_000 },
  },
};

/** A list of objects, each with a name and the given fields. */
function namedItems(properties: Record<string, JsonSchema>, required: string[] = []): JsonSchema {
  return { type: "array", items: { type: "object", additionalProperties: false, required: ["name", ...required], properties: { name, ...properties } } };
}

const networksSchema = namedItems(
  {
    mode: { enum: ["bridge", "host-only", "nat"] },
    flowSetup: { enum: ["proactive", "reactive"] },
    uplink: { enum: ["converged", "dedicated"] },
    subnet: { type: "string", pattern: "^\\d{1,3}(\\.\\d{1,3}){3}/\\d{1,2}$" },
    tenant: name,
  },
  ["mode", "subnet"],
);

const securityGroupsSchema = namedItems({
  rules: { type: "array", maxItems: 64, items: { type: "string", pattern: "^(any|icmp|tcp|udp)(:\\d{1,5}(-\\d{1,5})?)?(,from=\\d{1,3}(\\.\\d{1,3}){3}/\\d{1,2})?$" } },
});

const endpointsSchema = namedItems({ host: name });

const routersSchema = namedItems({ networks: { type: "array", items: name, minItems: 2, maxItems: 16 } }, ["networks"]);

/** VM groups: their size, NICs, and the fields the capabilities add (what their guests do and get). */
function vmsSchema(parts: Parts): JsonSchema {
  return namedItems({
    count: { type: "integer", minimum: 1, maximum: 100_000 },
    vcpus: { type: "integer", minimum: 1, maximum: 256 },
    memoryMib: { type: "integer", minimum: 1 },
    nics: { type: "array", items: { type: "string", pattern: "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(,sg=[a-z0-9-]+(\\+[a-z0-9-]+)*)?$" }, maxItems: 8 },
    ...parts.vmFields,
  });
}

const stepTime: JsonSchema = {
  description: "a duration like 2s, or {between: [1s, 3s]}",
  oneOf: [
    duration,
    {
      type: "object",
      additionalProperties: false,
      required: ["between"],
      properties: { between: { type: "array", items: duration, minItems: 2, maxItems: 2 } },
    },
  ],
};

/** One of several shapes told apart by a field (do, probe, assert), each with its own fields and nothing else. */
function tagged(tag: string, kinds: Map<string, { properties?: Record<string, JsonSchema>; required?: string[] }>, common: Record<string, JsonSchema>, commonRequired: string[]): JsonSchema {
  return {
    type: "object",
    required: [tag, ...commonRequired],
    properties: { [tag]: { enum: [...kinds.keys()] } },
    allOf: [...kinds].map(([kind, part]) => ({
      if: { properties: { [tag]: { const: kind } }, required: [tag] },
      then: {
        additionalProperties: false,
        required: part.required ?? [],
        properties: { ...common, [tag]: { const: kind }, ...(part.properties ?? {}) },
      },
    })),
  };
}

/** The JSON Schema of a scenario file, from the registered parts. */
export function scenarioSchema(parts: Parts): JsonSchema {
  const probes = new Map([...parts.probes].map(([k, p]) => [k, { properties: p.properties ?? {} }]));
  // A step that creates VMs takes what a VM group does.
  const steps = new Map([...parts.steps].map(([k, p]) => [k, p.createsVms ? { ...p, properties: { ...p.properties, ...parts.vmFields } } : p]));
  const vms = vmsSchema(parts);
  return {
    $schema: "http://json-schema.org/draft-07/schema#",
    title: "simdc experiment scenario",
    type: "object",
    additionalProperties: false,
    required: ["name", "timeline", "duration"],
    properties: {
      name,
      description: { type: "string" },
      seed: { type: "integer", minimum: 0, maximum: 4294967295 },
      topology: topologySchema,
      networks: networksSchema,
      securityGroups: securityGroupsSchema,
      endpoints: endpointsSchema,
      routers: routersSchema,
      vms,
      timeline: { type: "array", items: tagged("do", steps, { at: stepTime, id: name }, ["at"]) },
      duration,
      liveness: duration,
      probes: { type: "array", items: tagged("probe", probes, { every: duration }, ["every"]) },
      assertions: { type: "array", items: tagged("assert", parts.assertions, {}, []) },
      checkers: { type: "array", items: { enum: [...parts.checkers.keys()] } },
      short: {
        type: "object",
        additionalProperties: false,
        description: "What the short form (CI) changes: a smaller topology, fewer VMs, a shorter run",
        properties: { topology: topologySchema, vms, duration, liveness: duration },
      },
    },
  };
}

const defaults: Topology = {
  hosts: 4,
  hostsPerAgent: 2,
  san: 1,
  controllers: 1,
  heartbeatIntervalMs: 1_000,
  heartbeatMissesMax: 3,
  timeScale: 1,
  pcpus: 16,
  memoryMib: 65_536,
  failMode: "secure",
  inactivityProbeMs: 5_000,
  nicMbps: 10_000,
  nicQueueKib: 1_024,
  coscheduling: "relaxed",
  shareSalting: "per-vm",
  threadsPerCore: 1,
  coreMhz: 2_000,
};

/** The line a path of the parsed document stands on: its key's line for a field, its item's for a list item. */
function lineOf(doc: Document, lines: LineCounter, path: (string | number)[]): number {
  const last = path.at(-1);
  if (typeof last === "string") return keyLine(doc, lines, path.slice(0, -1), last);
  return nodeLine(doc, lines, path);
}

function nodeLine(doc: Document, lines: LineCounter, path: (string | number)[]): number {
  for (let depth = path.length; depth >= 0; depth--) {
    const node = doc.getIn(path.slice(0, depth), true) as { range?: [number, number, number] } | undefined;
    if (node && typeof node === "object" && node.range) return lines.linePos(node.range[0]).line;
  }
  return 1;
}

/** The line of a key in the map at `path` (for an unknown key). */
function keyLine(doc: Document, lines: LineCounter, path: (string | number)[], key: string): number {
  const map = path.length ? doc.getIn(path, true) : doc.contents;
  if (isMap(map)) {
    for (const pair of map.items) {
      if (isScalar(pair.key) && pair.key.value === key && pair.key.range) return lines.linePos(pair.key.range[0]).line;
    }
  }
  return nodeLine(doc, lines, path);
}

function pathOf(instancePath: string): (string | number)[] {
  return instancePath
    .split("/")
    .slice(1)
    .map((p) => p.replaceAll("~1", "/").replaceAll("~0", "~"))
    .map((p) => (/^\d+$/.test(p) ? Number(p) : p));
}

function describeError(e: ErrorObject): string {
  const field = e.instancePath ? e.instancePath.slice(1).replaceAll("/", ".") : "(top level)";
  const described = (e.parentSchema as { description?: string } | undefined)?.description;
  switch (e.keyword) {
    case "additionalProperties":
      return `${field === "(top level)" ? "" : `${field}: `}unknown key ${JSON.stringify((e.params as { additionalProperty: string }).additionalProperty)}`;
    case "enum":
      return `${field}: must be one of ${((e.params as { allowedValues: unknown[] }).allowedValues).map(String).join(", ")}`;
    case "required":
      return `${field === "(top level)" ? "" : `${field}: `}missing ${JSON.stringify((e.params as { missingProperty: string }).missingProperty)}`;
    case "pattern":
      return `${field}: must be ${described ?? `text matching ${(e.params as { pattern: string }).pattern}`}`;
    case "oneOf":
      return `${field}: must be ${described ?? "one of the shapes its schema allows"}`;
    default:
      return `${field}: ${e.message ?? e.keyword}`;
  }
}

export interface ScenarioSource {
  doc: Document;
  lines: LineCounter;
  file: string;
}

/** "file:12: message", for an error at a path of the scenario. */
export function errorAt(source: ScenarioSource, path: (string | number)[], message: string): Error {
  return invalidArgument(`${source.file}:${lineOf(source.doc, source.lines, path)}: ${message}`);
}

/** Each Parts' compiled schema, with the schema it was compiled from (compiling takes far longer than checking a file). */
const validators = new WeakMap<Parts, { schema: string; validate: ValidateFunction }>();

function validatorOf(parts: Parts): ValidateFunction {
  const schema = scenarioSchema(parts);
  const text = JSON.stringify(schema);
  const known = validators.get(parts);
  // A part registered since the last compile changes the schema, and so the validator.
  if (known?.schema === text) return known.validate;
  // verbose: an error carries its schema, whose description says what was wanted.
  const validate = new Ajv({ allErrors: true, strict: false, verbose: true }).compile(schema);
  validators.set(parts, { schema: text, validate });
  return validate;
}

/**
 * A checked scenario, its short form merged in when `short`.
 * @throws SimdcError INVALID_ARGUMENT naming the file, line and field.
 */
export function parseScenario(text: string, file: string, parts: Parts, options: { short?: boolean } = {}): { scenario: Scenario; source: ScenarioSource } {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const first = doc.errors[0]!;
    throw invalidArgument(`${file}:${first.linePos?.[0]?.line ?? 1}: ${first.message.split("\n")[0]}`);
  }
  const source = { doc, lines, file };
  const raw = doc.toJS() as unknown;
  const validate = validatorOf(parts);
  if (!validate(raw)) {
    // "if" errors only say a branch failed; the branch's own errors say how.
    // A failed oneOf says it for its branches together; theirs would only repeat it.
    const all = validate.errors ?? [];
    const oneOf = new Set(all.filter((e) => e.keyword === "oneOf").map((e) => e.instancePath));
    const errors = all.filter((e) => e.keyword !== "if" && (e.keyword === "oneOf" || !oneOf.has(e.instancePath)));
    const located = errors.map((e) => {
      const path = pathOf(e.instancePath);
      const line = e.keyword === "additionalProperties" ? keyLine(doc, lines, path, (e.params as { additionalProperty: string }).additionalProperty) : lineOf(doc, lines, path);
      return { line, text: describeError(e) };
    });
    // The most specific errors first (a bad field, not the whole item failing its branch).
    const unique = [...new Map(located.map((l) => [`${l.line}:${l.text}`, l])).values()].sort((a, b) => a.line - b.line);
    throw invalidArgument(unique.slice(0, 5).map((l) => `${file}:${l.line}: ${l.text}`).join("\n"));
  }
  const r = raw as Record<string, any>;
  const short = options.short ? (r["short"] ?? {}) : {};
  const scenario: Scenario = {
    name: r["name"],
    description: r["description"] ?? "",
    ...(r["seed"] !== undefined ? { seed: r["seed"] } : {}),
    topology: { ...defaults, ...(r["topology"] ?? {}), ...(short.topology ?? {}) },
    networks: r["networks"] ?? [],
    securityGroups: ((r["securityGroups"] ?? []) as Partial<SecurityGroupSpec>[]).map((g) => ({ name: g.name!, rules: g.rules ?? [] })),
    endpoints: r["endpoints"] ?? [],
    routers: r["routers"] ?? [],
    vms: ((short.vms ?? r["vms"] ?? []) as Partial<VmGroup>[]).map((g) => ({ ...g, name: g.name!, count: g.count ?? 1, vcpus: g.vcpus ?? 1, memoryMib: g.memoryMib ?? 512, nics: g.nics ?? [] })),
    timeline: r["timeline"],
    duration: short.duration ?? r["duration"],
    liveness: short.liveness ?? r["liveness"] ?? "10s",
    probes: r["probes"] ?? [],
    assertions: r["assertions"] ?? [],
    checkers: r["checkers"] ?? [...parts.checkers.keys()],
    lines: { timeline: (r["timeline"] as unknown[]).map((_, i) => lineOf(doc, lines, ["timeline", i])) },
  };
  return { scenario, source };
}
