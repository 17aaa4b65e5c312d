// What each kind of timeline step does to a running datacenter, as the
// operator would with the CLI: process faults through the supervisor, bus
// rules in KV, VM changes through the API (each answer recorded, acknowledged
// or not), a host's memory pressure through its agent. A capability that
// registers a step kind adds its executor here.

import { addFaultRule, clearFaultRules, computeService, hostAgentService, hostScope, hostService, readFaultRules, type Bus } from "@simdc/bus";
import { SimdcError, wallNowMs, type Clock } from "@simdc/common";
import { agentOfHost, durationMs, vmNames, type AckEntry, type Plan, type PlannedStep, type VmResourceFields } from "@simdc/experiment";
import { simdc } from "@simdc/proto";
import { describeRule, publishFaultEvent, ruleActions } from "../commands/ops.js";
import type { Deployment, ProcessAction } from "./deployments.js";
import { parseNic } from "../commands/resources.js";
import { vmResourcesWire } from "./hypervisor-probes.js";

import v1 = simdc.v1;

export interface StepContext {
  bus: Bus;
  clock: Clock;
  plan: Plan;
  deployment: Deployment;
  /** The boot volume every VM of the run boots from. */
  bootVolume: string;
  ack: (entry: AckEntry) => void;
  /** Runs `undo` after `delayMs` of simulated time (a fault's end that only the runner can bring), unless the run ends first. */
  schedule: (delayMs: number, undo: () => Promise<unknown>) => void;
}

export interface StepOutcome {
  detail: string;
  /** What it acts on: the process, the rule id ("all"), the VM. */
  target?: string;
  /** When it took effect, if later than when it began (a container is dead once docker kill returns). */
  effectiveAtMs?: number;
  /** The hosts it acts on. */
  hosts: string[];
  endsAtMs?: number;
}

type Executor = (ctx: StepContext, step: PlannedStep) => Promise<StepOutcome>;

/** The hosts an identity stands for: a host itself, an agent's hosts, nothing for the others. */
function hostsOf(plan: Plan, identity: string | undefined): string[] {
  if (!identity) return [];
  if (plan.hosts.includes(identity)) return [identity];
  return plan.agents[identity] ?? [];
}

async function processFault(ctx: StepContext, step: PlannedStep): Promise<StepOutcome> {
  const name = step.params["process"] as string;
  const detail = await ctx.deployment.signal(name, step.do as ProcessAction, `experiment:${step.id}`, ctx.bus);
  return { detail, hosts: hostsOf(ctx.plan, name), target: name, effectiveAtMs: ctx.clock.nowMs() };
}

async function busRule(ctx: StepContext, step: PlannedStep): Promise<StepOutcome> {
  const p = step.params;
  const forMs = typeof p["for"] === "string" ? durationMs(p["for"]) : 0;
  const now = ctx.clock.nowMs();
  const rule: v1.FaultRule.$Properties = {
    id: step.id,
    action: ruleActions[p["action"] as string]!,
    subject: (p["subject"] as string | undefined) ?? "",
    source: (p["from"] as string | undefined) ?? "",
    destination: (p["to"] as string | undefined) ?? "",
    percent: (p["percent"] as number | undefined) ?? 100,
    delayMs: (p["delayMs"] as number | undefined) ?? 0,
    jitterMs: (p["jitterMs"] as number | undefined) ?? 0,
    copies: (p["copies"] as number | undefined) ?? 1,
    ...(forMs ? { endsAtMs: now + forMs } : {}),
  };
  await addFaultRule(ctx.bus, rule);
  const detail = `${describeRule(rule)}${forMs ? ` for ${forMs} ms` : ""}`;
  publishFaultEvent(ctx.bus, step.id, "added", `fault rule ${step.id} added: ${detail}`, `experiment:${step.id}`, now);
  const hosts = [...hostsOf(ctx.plan, rule.source ?? ""), ...hostsOf(ctx.plan, rule.destination ?? "")];
  return { detail, hosts, target: step.id, ...(forMs ? { endsAtMs: now + forMs } : {}) };
}

/** A link fault between two hosts' vswitches: bus rules on the underlay subjects only, each way. */
async function linkFault(ctx: StepContext, step: PlannedStep): Promise<StepOutcome> {
  const p = step.params;
  const [a, b] = [p["a"] as string, p["b"] as string];
  const state = p["state"] as "down" | "lossy" | "slow";
  const forMs = typeof p["for"] === "string" ? durationMs(p["for"]) : 0;
  const now = ctx.clock.nowMs();
  const subject = `${ctx.bus.subjects.prefix}.dp.>`;
  const base = { subject, percent: 100, delayMs: 0, jitterMs: 0, copies: 1, ...(forMs ? { endsAtMs: now + forMs } : {}) };
  const rules: v1.FaultRule.$Properties[] =
    state === "down"
      ? [{ ...base, id: step.id, action: ruleActions["partition"]!, source: a, destination: b }]
      : [
          [a, b, step.id],
          [b, a, `${step.id}-back`],
        ].map(([source, destination, id]) => ({
          ...base,
          id,
          source,
          destination,
          action: ruleActions[state === "lossy" ? "drop" : "delay"]!,
          ...(state === "lossy" ? { percent: (p["percent"] as number | undefined) ?? 10 } : { delayMs: (p["delayMs"] as number | undefined) ?? 50 }),
        }));
  for (const rule of rules) await addFaultRule(ctx.bus, rule);
  const detail = `link ${a} <-> ${b} ${state}${state === "lossy" ? ` (${rules[0]!.percent}% dropped each way)` : state === "slow" ? ` (+${rules[0]!.delayMs} ms each way)` : ""}${forMs ? ` for ${forMs} ms` : ""}`;
  publishFaultEvent(ctx.bus, step.id, "added", `fault rule ${step.id} added: ${detail}`, `experiment:${step.id}`, now);
  return { detail, hosts: [], target: step.id, ...(forMs ? { endsAtMs: now + forMs } : {}) };
}

async function clearBus(ctx: StepContext, step: PlannedStep): Promise<StepOutcome> {
  const id = step.params["rule"] as string | undefined;
  const before = await readFaultRules(ctx.bus);
  const cleared = before.rules.filter((r) => id === undefined || r.id === id);
  await clearFaultRules(ctx.bus, id);
  publishFaultEvent(ctx.bus, id ?? "all", "cleared", `fault rules cleared: ${id ?? "all"}`, `experiment:${step.id}`);
  const hosts = cleared.flatMap((r) => [...hostsOf(ctx.plan, r.source ?? ""), ...hostsOf(ctx.plan, r.destination ?? "")]);
  return { detail: `cleared ${cleared.map((r) => r.id).join(", ") || "nothing"}`, hosts: [...new Set(hosts)], target: id ?? "all" };
}

/** Runs `call`, recording its answer as an acknowledgement (or its refusal). */
async function acked(ctx: StepContext, op: string, id: string, call: () => Promise<unknown>): Promise<boolean> {
  const started = wallNowMs();
  const timeMs = ctx.clock.nowMs();
  try {
    await call();
    ctx.ack({ type: "ack", timeMs, op, id, ok: true, latencyMs: wallNowMs() - started });
    return true;
  } catch (err) {
    const error = err instanceof SimdcError ? err.toString() : String(err);
    ctx.ack({ type: "ack", timeMs, op, id, ok: false, latencyMs: wallNowMs() - started, error });
    return false;
  }
}

/** A VM group's size, NICs and hypervisor fields, as a group or a step that creates VMs has them. */
export type GroupSpec = { vcpus: number; memoryMib: number; nics?: string[] } & VmResourceFields;

/**
 * Creates VMs, `concurrency` requests in flight, each with a request id so a
 * retry would act once; with bootMs, each boots that long before its workload.
 */
export async function createVms(ctx: StepContext, names: string[], spec: GroupSpec, concurrency: number, bootMs?: number): Promise<number> {
  let next = 0;
  let ok = 0;
  const vmSpec = { vcpus: spec.vcpus, memoryMib: spec.memoryMib, bootVolume: ctx.bootVolume, nics: (spec.nics ?? []).map(parseNic), ...vmResourcesWire(spec, bootMs) };
  const worker = async (): Promise<void> => {
    while (next < names.length) {
      const id = names[next++]!;
      const created = await acked(ctx, "create-vm", id, () => ctx.bus.call(computeService.CreateVm, { name: id, spec: vmSpec, mutation: { requestId: `create-${id}` } }, { timeoutMs: 10_000 }));
      if (created) ok += 1;
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, names.length) }, worker));
  return ok;
}

/** The group a step that creates VMs describes, with a VM group's defaults. */
function groupOfStep(p: PlannedStep["params"]): GroupSpec {
  return { ...(p as VmResourceFields), vcpus: (p["vcpus"] as number | undefined) ?? 1, memoryMib: (p["memoryMib"] as number | undefined) ?? 512, nics: (p["nics"] as string[] | undefined) ?? [] };
}

async function createVmsStep(ctx: StepContext, step: PlannedStep): Promise<StepOutcome> {
  const p = step.params;
  const names = vmNames(p["name"] as string, (p["count"] as number | undefined) ?? 1);
  const ok = await createVms(ctx, names, groupOfStep(p), (p["concurrency"] as number | undefined) ?? 16);
  return { detail: `${ok} of ${names.length} creates acknowledged`, hosts: [] };
}

/**
 * A boot storm: every VM of the group asked for at once, each booting before
 * its workload. A load rather than a fault, shaded while the boots last.
 */
async function bootStorm(ctx: StepContext, step: PlannedStep): Promise<StepOutcome> {
  const p = step.params;
  const names = vmNames(p["name"] as string, p["count"] as number);
  const bootMs = durationMs(p["boot"] as string);
  const ok = await createVms(ctx, names, groupOfStep(p), names.length, bootMs);
  if (ok === 0) throw new SimdcError("UNAVAILABLE", `none of the ${names.length} creates was acknowledged`);
  return { detail: `${ok} of ${names.length} VMs asked for at once, each booting ${bootMs / 1000} s`, hosts: [], target: p["name"] as string, endsAtMs: ctx.clock.nowMs() + bootMs };
}

/** Memory taken on a host outside its VMs (or given back with 0); with for, the runner gives it back. */
async function memoryPressure(ctx: StepContext, step: PlannedStep): Promise<StepOutcome> {
  const p = step.params;
  const hostId = p["host"] as string;
  const pressureMib = p["pressureMib"] as number;
  const scopeId = hostScope(agentOfHost(ctx.plan, hostId), hostId);
  const press = (mib: number): Promise<boolean> => acked(ctx, "memory-pressure", hostId, () => ctx.bus.call(hostAgentService.SetMemoryPressure, { pressureMib: mib }, { scopeId }));
  if (!(await press(pressureMib))) throw new SimdcError("UNAVAILABLE", `${hostId} did not take the memory pressure`);
  const now = ctx.clock.nowMs();
  // No hosts: the host stays connected, so what follows is its events (memory states), not a disconnection and a return.
  if (pressureMib === 0) return { detail: `${hostId}: its memory given back`, hosts: [], target: hostId, endsAtMs: now };
  const forMs = typeof p["for"] === "string" ? durationMs(p["for"]) : 0;
  if (forMs) ctx.schedule(forMs, () => press(0));
  return { detail: `${hostId}: ${pressureMib} MiB taken outside its VMs${forMs ? ` for ${forMs / 1000} s` : ""}`, hosts: [], target: hostId, ...(forMs ? { endsAtMs: now + forMs } : {}) };
}

/** A VM's guest turns CPU-bound on all its vCPUs; with for, the runner gives it back its steady workload. */
async function runaway(ctx: StepContext, step: PlannedStep): Promise<StepOutcome> {
  const vmId = step.params["vm"] as string;
  const before = (await ctx.bus.call(computeService.GetVm, { vmId })).vm?.spec?.workload ?? {};
  // The image and salt stay: only what the guest does changes, not which pages it holds.
  const keep = { image: before.image ?? "", shareSalt: before.shareSalt ?? "" };
  const set = (workload: v1.IWorkload, requestId: string): Promise<boolean> => acked(ctx, "set-vm-resources", vmId, () => ctx.bus.call(computeService.SetVmResources, { vmId, workload, mutation: { requestId } }));
  if (!(await set({ kind: "batch", params: {}, phases: [], ...keep }, `${step.id}-${vmId}`))) throw new SimdcError("UNAVAILABLE", `vm ${vmId}'s runaway workload was not acknowledged`);
  const forMs = typeof step.params["for"] === "string" ? durationMs(step.params["for"]) : 0;
  // Back to its steady kind: a new workload starts from its first phase, and its boot is long over.
  if (forMs) ctx.schedule(forMs, () => set({ kind: before.kind || "idle", params: before.params ?? {}, phases: [], ...keep }, `${step.id}-${vmId}-back`));
  return { detail: `vm ${vmId} runs CPU-bound on all its vCPUs${forMs ? ` for ${forMs / 1000} s, then ${before.kind || "idle"} again` : ""}`, hosts: [], target: vmId, ...(forMs ? { endsAtMs: ctx.clock.nowMs() + forMs } : {}) };
}

function vmChange(op: "delete-vm" | "start-vm" | "stop-vm"): Executor {
  return async (ctx, step) => {
    const id = step.params["vm"] as string;
    const mutation = { requestId: `${step.id}-${id}` };
    const call = (): Promise<unknown> =>
      op === "delete-vm"
        ? ctx.bus.call(computeService.DeleteVm, { vmId: id, mutation })
        : op === "start-vm"
          ? ctx.bus.call(computeService.StartVm, { vmId: id, mutation })
          : ctx.bus.call(computeService.StopVm, { vmId: id, mutation });
    const ok = await acked(ctx, op, id, call);
    if (!ok) throw new SimdcError("UNAVAILABLE", `${op} ${id} was not acknowledged`);
    return { detail: `${op.replace("-vm", "")} ${id}`, hosts: [], target: id };
  };
}

/** TEST ONLY: the VM's own host's view of it, started on a second host behind the controller's back. */
async function duplicateVm(ctx: StepContext, step: PlannedStep): Promise<StepOutcome> {
  const id = step.params["vm"] as string;
  const onto = step.params["onto"] as string;
  const { vm } = await ctx.bus.call(computeService.GetVm, { vmId: id });
  const from = vm?.hostId ?? "";
  if (!from) throw new SimdcError("FAILED_PRECONDITION", `vm ${id} is on no host`);
  if (from === onto) throw new SimdcError("FAILED_PRECONDITION", `vm ${id} is on ${onto} already; pick another host`);
  const state = await ctx.bus.call(hostAgentService.GetHostState, {}, { scopeId: hostScope(agentOfHost(ctx.plan, from), from) });
  const desired = state.vms.find((r) => r.desired?.vmId === id)?.desired;
  if (!desired) throw new SimdcError("FAILED_PRECONDITION", `${from} does not hold vm ${id}`);
  await ctx.bus.call(hostAgentService.StartStrayVm, { vm: desired }, { scopeId: hostScope(agentOfHost(ctx.plan, onto), onto) });
  return { detail: `vm ${id} of ${from} started on ${onto} too`, hosts: [], target: id };
}

/** A constant-rate UDP flow from one VM to another's first address, for a while (its host's agent paces it). */
async function trafficStep(ctx: StepContext, step: PlannedStep): Promise<StepOutcome> {
  const p = step.params;
  const from = p["from"] as string;
  const to = p["to"] as string;
  const { vm } = await ctx.bus.call(computeService.GetVm, { vmId: from });
  const { host } = await ctx.bus.call(hostService.GetHost, { hostId: vm?.hostId ?? "" });
  const target = (await ctx.bus.call(computeService.GetVm, { vmId: to })).vm?.spec?.nics?.[0]?.ip ?? "";
  const forMs = durationMs(p["for"] as string);
  const request = { vmId: from, targetIp: target, ratePps: p["ratePps"] as number, sizeBytes: (p["sizeBytes"] as number | undefined) ?? 1_000, durationMs: forMs };
  const reply = await ctx.bus.call(hostAgentService.StartTraffic, request, { scopeId: hostScope(host?.agentId ?? "", vm?.hostId ?? "") });
  return {
    detail: `flow ${reply.flowId}: ${from} (${reply.sourceIp}) -> ${to} (${target}), ${request.ratePps} packets/s of ${request.sizeBytes} bytes for ${forMs / 1000} s`,
    hosts: [],
    target: from,
    endsAtMs: ctx.clock.nowMs() + forMs,
  };
}

/** A host's physical NIC slowed or its queue shrunk for a while; its agent puts it back on its own clock. */
async function nicStep(ctx: StepContext, step: PlannedStep): Promise<StepOutcome> {
  const p = step.params;
  const hostId = p["host"] as string;
  const forMs = durationMs(p["for"] as string);
  const request = { nic: (p["nic"] as string | undefined) ?? "nic0", bandwidthMbps: (p["mbps"] as number | undefined) ?? 0, queueBytes: ((p["queueKib"] as number | undefined) ?? 0) * 1024, durationMs: forMs };
  if (!request.bandwidthMbps && !request.queueBytes) throw new SimdcError("INVALID_ARGUMENT", `step ${step.id}: give mbps or queueKib`);
  const { nic } = await ctx.bus.call(hostAgentService.SetNic, request, { scopeId: hostScope(agentOfHost(ctx.plan, hostId), hostId) });
  return { detail: `${hostId} ${nic?.name}: ${nic?.bandwidthMbps} Mbit/s, queue ${nic?.queueBytes} bytes for ${forMs / 1000} s`, hosts: [hostId], target: hostId, endsAtMs: ctx.clock.nowMs() + forMs };
}

export const executors: Record<string, Executor> = {
  nic: nicStep,
  traffic: trafficStep,
  link: linkFault,
  kill: processFault,
  pause: processFault,
  resume: processFault,
  restart: processFault,
  disconnect: processFault,
  connect: processFault,
  bus: busRule,
  "clear-bus": clearBus,
  "create-vms": createVmsStep,
  "delete-vm": vmChange("delete-vm"),
  "start-vm": vmChange("start-vm"),
  "stop-vm": vmChange("stop-vm"),
  "duplicate-vm": duplicateVm,
  "memory-pressure": memoryPressure,
  runaway,
  "boot-storm": bootStorm,
};
