// From a checked scenario and a seed to the run's schedule: each step's time
// (random ones drawn from the seed, so the same seed gives the same
// schedule), in time order, with what it names checked against the topology
// and the timeline checked for sense (no resume of a process never paused,
// no step after the end). Pure: the runner carries the plan out.

import { Rng } from "@simdc/common";
import type { Parts, RefKind, RunMode } from "./parts.js";
import { durationMs, errorAt, type Scenario, type ScenarioSource, type Step, type Topology } from "./scenario.js";

export interface PlannedStep {
  /** The step's id (given, or "<do>-<n>" by position). */
  id: string;
  do: string;
  /** Offset from the timeline's start, ms of simulated time. */
  atMs: number;
  params: Step;
  fault: boolean;
  line: number;
}

export interface Plan {
  seed: number;
  steps: PlannedStep[];
  durationMs: number;
  livenessMs: number;
  /** The processes the topology makes, and each agent's hosts. */
  processes: string[];
  agents: Record<string, string[]>;
  hosts: string[];
  vms: string[];
  /** Each VM group (the scenario's vms, and the VMs a step creates) and its VMs. */
  groups: Record<string, string[]>;
}

/** The process names `simdc up` gives this topology (as its supervisor's plan does). */
export function topologyNames(t: Topology, mode: RunMode = "local"): Pick<Plan, "processes" | "agents" | "hosts"> {
  // simdc up runs one NATS server; the compose deployment a cluster of three.
  const processes = mode === "docker" ? ["nats-1", "nats-2", "nats-3"] : ["nats"];
  for (let c = 1; c <= t.controllers; c++) processes.push(`controller-${c}`);
  for (let s = 1; s <= t.san; s++) processes.push(`san-${s}`);
  const agents: Record<string, string[]> = {};
  const hosts: string[] = [];
  for (let a = 1; a <= Math.ceil(t.hosts / t.hostsPerAgent); a++) {
    const ids: string[] = [];
    for (let h = (a - 1) * t.hostsPerAgent + 1; h <= Math.min(t.hosts, a * t.hostsPerAgent); h++) ids.push(`host-${h}`);
    agents[`agent-${a}`] = ids;
    hosts.push(...ids);
    processes.push(`agent-${a}`);
  }
  return { processes, agents, hosts };
}

/** Rough memory a topology needs: a process is ~80 MiB, a simulated host ~0.3 MiB. */
export function estimatedMemoryMib(t: Topology): number {
  const processes = 1 + t.controllers + t.san + Math.ceil(t.hosts / t.hostsPerAgent);
  return processes * 80 + t.hosts * 0.3;
}

/**
 * @param machineMemoryMib what this machine has; a topology needing more than
 * 80% of it is refused before anything starts.
 * @throws SimdcError INVALID_ARGUMENT naming the line.
 */
export function planRun(scenario: Scenario, source: ScenarioSource, parts: Parts, seed: number, machineMemoryMib: number, mode: RunMode = "local"): Plan {
  const names = topologyNames(scenario.topology, mode);
  const needMib = estimatedMemoryMib(scenario.topology);
  if (needMib > machineMemoryMib * 0.8) {
    throw errorAt(source, ["topology"], `this topology needs about ${Math.round(needMib)} MiB, more than 80% of this machine's ${Math.round(machineMemoryMib)} MiB`);
  }
  // simdc up refuses it, so the run would fail after its preparations.
  if (scenario.topology.hostsPerAgent > scenario.topology.hosts) {
    throw errorAt(source, ["topology"], `hostsPerAgent ${scenario.topology.hostsPerAgent} is more than the ${scenario.topology.hosts} hosts (set it to at most ${scenario.topology.hosts})`);
  }
  const total = durationMs(scenario.duration);
  const rng = new Rng(seed, `experiment/${scenario.name}`);
  const vms = new Set(scenario.vms.flatMap((g) => vmNames(g.name, g.count)));
  const vmGroupsOfRun = vmGroups(scenario, parts);
  // Assertions and probes may name any VM the run will have (they are judged on the whole run).
  const everyVm = new Set(Object.values(vmGroupsOfRun).flat());
  const networks = new Set(scenario.networks.map((n) => n.name));
  const groups = new Set(scenario.securityGroups.map((g) => g.name));
  for (const [i, g] of scenario.vms.entries()) {
    for (const [j, nic] of g.nics.entries()) {
      const [network = "", sg] = nic.split(",sg=");
      if (!networks.has(network)) throw errorAt(source, ["vms", i, "nics", j], `no network ${network} (the scenario's networks make them)`);
      for (const group of sg?.split("+") ?? []) if (!groups.has(group)) throw errorAt(source, ["vms", i, "nics", j], `no security group ${group} (the scenario's securityGroups make them)`);
    }
  }
  for (const [i, router] of scenario.routers.entries()) {
    for (const [j, network] of router.networks.entries()) if (!networks.has(network)) throw errorAt(source, ["routers", i, "networks", j], `no network ${network} (the scenario's networks make them)`);
  }
  for (const [i, endpoint] of scenario.endpoints.entries()) {
    if (endpoint.host && !names.hosts.includes(endpoint.host)) throw errorAt(source, ["endpoints", i, "host"], `no host ${endpoint.host} in the topology`);
  }
  const endpoints = new Set(scenario.endpoints.map((e) => e.name));
  for (const [i, probe] of scenario.probes.entries()) {
    for (const field of ["from", "to"]) {
      const guest = probe[field];
      if (typeof guest === "string" && !vms.has(guest) && !endpoints.has(guest)) throw errorAt(source, ["probes", i, field], `no VM or endpoint ${guest} among the scenario's vms and endpoints`);
    }
  }
  const identities = new Set([...names.processes, ...names.hosts, "controller", "host-agent", "san-storage", "supervisor", "cli"]);
  for (let c = 1; c <= scenario.topology.controllers; c++) identities.add(`controller-${c}`);
  /** Why `value` names nothing of its kind here, or null when it does. */
  const unknown = (kind: RefKind, value: string): string | null => {
    switch (kind) {
      case "process":
        return names.processes.includes(value) ? null : `no process ${value}; this topology has ${names.processes.join(", ")}`;
      case "host":
        return names.hosts.includes(value) ? null : `no host ${value} in this topology`;
      case "identity":
        return identities.has(value) ? null : `no identity ${value} in this topology`;
      case "vm":
        return everyVm.has(value) ? null : `no VM ${value} among the scenario's vms and the VMs its steps create`;
      case "vms":
        return everyVm.has(value) || Object.hasOwn(vmGroupsOfRun, value) ? null : `no VM or VM group ${value} among the scenario's vms and the VMs its steps create`;
    }
  };
  const checkRefs = (refs: Record<string, RefKind> | undefined, item: Record<string, unknown>, path: (string | number)[], skip: RefKind[] = []): void => {
    for (const [field, kind] of Object.entries(refs ?? {})) {
      if (skip.includes(kind)) continue;
      const value = item[field];
      const values: [string, (string | number)[]][] = typeof value === "string" ? [[value, [...path, field]]] : Array.isArray(value) ? value.map((v, j) => [String(v), [...path, field, j]]) : [];
      for (const [v, at] of values) {
        const why = unknown(kind, v);
        if (why) throw errorAt(source, at, why);
      }
    }
  };
  for (const [i, probe] of scenario.probes.entries()) checkRefs(parts.probes.get(probe.probe)?.refs, probe, ["probes", i]);
  for (const [i, assertion] of scenario.assertions.entries()) checkRefs(parts.assertions.get(assertion.assert)?.refs, assertion, ["assertions", i]);
  for (const check of parts.scenarioChecks.values()) check.check(scenario, source);
  const counts = new Map<string, number>();
  const steps = scenario.timeline.map((step, index): PlannedStep => {
    const path = ["timeline", index];
    const part = parts.steps.get(step.do)!;
    if (part.modes && !part.modes.includes(mode)) throw errorAt(source, [...path, "do"], `${step.do} works only with ${part.modes.map((m) => (m === "docker" ? "--docker" : "local processes")).join(" or ")}`);
    const n = (counts.get(step.do) ?? 0) + 1;
    counts.set(step.do, n);
    // Every step draws, fixed or not, so adding a fixed step does not move the random ones after it.
    const draw = rng.next();
    let atMs: number;
    if (typeof step.at === "string") atMs = durationMs(step.at);
    else {
      const [lo, hi] = step.at.between.map(durationMs) as [number, number];
      if (hi < lo) throw errorAt(source, [...path, "at"], `between ${step.at.between[0]} and ${step.at.between[1]}: the second must not be earlier`);
      atMs = Math.round(lo + draw * (hi - lo));
    }
    if (atMs > total) throw errorAt(source, [...path, "at"], `${step.do} at ${(atMs / 1000).toFixed(2)} s is after the end of the run (duration ${scenario.duration})`);
    // A step's VM must exist at the step's time: the timeline's check says so, with the time.
    checkRefs(part.refs, step, path, ["vm"]);
    return { id: step.id ?? `${step.do}-${n}`, do: step.do, atMs, params: step, fault: part.fault, line: scenario.lines.timeline[index] ?? 1 };
  });
  const ids = new Set<string>();
  for (const [i, s] of steps.entries()) {
    if (ids.has(s.id)) throw errorAt(source, ["timeline", i, "id"], `step id ${s.id} is used twice`);
    ids.add(s.id);
  }
  const ordered = steps.map((s, i) => ({ s, i })).sort((a, b) => a.s.atMs - b.s.atMs || a.i - b.i);
  checkTimeline(ordered, source, vms, parts);
  return {
    seed,
    steps: ordered.map((o) => o.s),
    durationMs: total,
    livenessMs: durationMs(scenario.liveness),
    ...names,
    vms: [...everyVm],
    groups: vmGroupsOfRun,
  };
}

/** The agent process that runs `hostId`. @throws Error when the plan has no such host (a programming error: refs are checked first). */
export function agentOfHost(plan: Pick<Plan, "agents">, hostId: string): string {
  const agent = Object.entries(plan.agents).find(([, hosts]) => hosts.includes(hostId))?.[0];
  if (agent === undefined) throw new Error(`no agent runs ${hostId}`);
  return agent;
}

export function vmNames(name: string, count: number): string[] {
  return count === 1 ? [name] : Array.from({ length: count }, (_, i) => `${name}-${i + 1}`);
}

/** The VM groups of a run: the scenario's vms, then those its steps create (a name used twice is one group). */
export function vmGroups(scenario: Scenario, parts: Parts): Record<string, string[]> {
  const groups: Record<string, string[]> = {};
  const add = (name: string, count: number): void => void (groups[name] = [...new Set([...(groups[name] ?? []), ...vmNames(name, count)])]);
  for (const g of scenario.vms) add(g.name, g.count);
  for (const step of scenario.timeline) if (parts.steps.get(step.do)?.createsVms) add(step["name"] as string, (step["count"] as number | undefined) ?? 1);
  return groups;
}

/** A process's life along the timeline: a resume needs a pause, a kill a running process, a VM must exist when named. */
function checkTimeline(ordered: { s: PlannedStep; i: number }[], source: ScenarioSource, vms: Set<string>, parts: Parts): void {
  const state = new Map<string, "running" | "paused" | "killed" | "cut off">();
  for (const { s, i } of ordered) {
    const process = typeof s.params["process"] === "string" ? (s.params["process"] as string) : undefined;
    const now = process ? (state.get(process) ?? "running") : "running";
    const refuse = (why: string): never => {
      throw errorAt(source, ["timeline", i], `${s.do} ${process} at ${(s.atMs / 1000).toFixed(2)} s: ${why}`);
    };
    switch (s.do) {
      case "kill":
        if (now === "killed") refuse("it was killed already and not restarted");
        state.set(process!, "killed");
        break;
      case "pause":
        if (now !== "running") refuse(`it is ${now} then`);
        state.set(process!, "paused");
        break;
      case "resume":
        if (now !== "paused") refuse(`it is ${now} then, not paused`);
        state.set(process!, "running");
        break;
      case "restart":
        state.set(process!, "running");
        break;
      case "disconnect":
        if (now !== "running") refuse(`it is ${now} then`);
        state.set(process!, "cut off");
        break;
      case "connect":
        if (now !== "cut off") refuse(`it is ${now} then, not disconnected`);
        state.set(process!, "running");
        break;
      default: {
        if (parts.steps.get(s.do)?.createsVms) {
          for (const vm of vmNames(s.params["name"] as string, (s.params["count"] as number | undefined) ?? 1)) vms.add(vm);
          break;
        }
        const vm = s.params["vm"];
        if (typeof vm === "string" && !vms.has(vm)) throw errorAt(source, ["timeline", i, "vm"], `no VM ${vm} exists at ${(s.atMs / 1000).toFixed(2)} s (the scenario's vms and earlier steps that create VMs make them)`);
      }
    }
  }
}
