// The parts for what simdc has today: process faults, bus rules, VM changes
// and a test-only fault that breaks an invariant on purpose; probes of hosts,
// VMs and the API; SLO assertions on detection and recovery; and checkers
// that judge the whole history (Jepsen-style: from what happened, not from
// samples). Later capabilities register theirs the same way.

import type { DatacenterEvent } from "@simdc/history";
import type { RunHistory, StepEntry } from "./history-model.js";
import { Parts, type Verdict } from "./parts.js";
import { duration, durationMs, name } from "./scenario.js";
import { hypervisorParts } from "./hypervisor.js";
import { sdnParts } from "./sdn.js";

const processField = { type: "string" };

/** The p-th percentile (0-100) of `values` by nearest rank; NaN when empty. */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

function firstAfter(events: DatacenterEvent[], kind: string, objectId: string, fromMs: number): DatacenterEvent | undefined {
  return events.find((e) => e.kind === kind && e.objectId === objectId && e.timeMs >= fromMs);
}

/** For each fault step that touches hosts, how long until each was seen in `kind`; the first miss breaks it. */
function latencies(history: RunHistory, steps: StepEntry[], kind: string, withinMs: number, fromOf: (s: StepEntry) => number): Verdict {
  const measured: number[] = [];
  for (const step of steps) {
    const from = fromOf(step);
    for (const host of step.hosts) {
      const seen = firstAfter(history.events, kind, host, from);
      const limit = from + withinMs;
      if (!seen || seen.timeMs > limit) {
        const when = seen ? `only at ${history.at(seen.timeMs)}` : "never";
        return { ok: false, detail: `${host} was ${kind.replace("host-", "")} ${when}, not within ${withinMs} ms of ${step.id} (${step.do} at ${history.at(from)})` };
      }
      measured.push(seen.timeMs - from);
    }
  }
  if (measured.length === 0) return { ok: false, detail: "no step of this kind touched a host, so nothing was measured" };
  const max = Math.max(...measured);
  return { ok: true, detail: `${measured.length} measured, worst ${Math.round(max)} ms (limit ${withinMs} ms)`, metrics: { max: max, p50: percentile(measured, 50) } };
}

const losing = new Set(["kill", "pause", "disconnect", "bus"]);

export function builtinParts(): Parts {
  const parts = new Parts();
  for (const kind of ["kill", "pause", "resume", "restart"]) {
    parts.step({
      kind,
      summary: `${kind} a process of the datacenter (nats, controller, san-N, agent-N), through the supervisor`,
      fault: kind === "kill" || kind === "pause",
      properties: { process: processField },
      required: ["process"],
      refs: { process: "process" },
    });
  }
  for (const kind of ["disconnect", "connect"]) {
    parts.step({
      kind,
      summary: `${kind} a container from the compose network (Docker mode only)`,
      fault: kind === "disconnect",
      properties: { process: processField },
      required: ["process"],
      refs: { process: "process" },
      modes: ["docker"],
    });
  }
  parts.step({
    kind: "bus",
    summary: "a bus fault rule (drop, delay, duplicate, partition) on subjects and between identities, optionally for a while",
    fault: true,
    properties: {
      action: { enum: ["drop", "delay", "duplicate", "partition"] },
      subject: { type: "string" },
      from: { type: "string" },
      to: { type: "string" },
      percent: { type: "integer", minimum: 1, maximum: 100 },
      delayMs: { type: "integer", minimum: 0, maximum: 60_000 },
      jitterMs: { type: "integer", minimum: 0, maximum: 60_000 },
      copies: { type: "integer", minimum: 1, maximum: 10 },
      for: duration,
    },
    required: ["action"],
    refs: { from: "identity", to: "identity" },
  });
  parts.step({ kind: "clear-bus", summary: "remove one bus rule (rule: id) or all", fault: false, properties: { rule: name } });
  parts.step({
    kind: "create-vms",
    summary: "create VMs (name-1..name-N when count > 1), concurrency at a time; each answer is recorded",
    fault: false,
    properties: {
      name,
      count: { type: "integer", minimum: 1, maximum: 100_000 },
      concurrency: { type: "integer", minimum: 1, maximum: 256 },
      vcpus: { type: "integer", minimum: 1, maximum: 256 },
      memoryMib: { type: "integer", minimum: 1 },
      nics: { type: "array", items: name, maxItems: 8 },
    },
    required: ["name"],
    createsVms: true,
  });
  for (const kind of ["delete-vm", "start-vm", "stop-vm"]) {
    parts.step({ kind, summary: `${kind.replace("-vm", "")} one VM`, fault: false, properties: { vm: name }, required: ["vm"], refs: { vm: "vm" } });
  }
  parts.step({
    kind: "duplicate-vm",
    summary: "TEST ONLY: write a running VM into a second host's document behind the controller's back, so it runs twice (the checkers must catch it)",
    fault: true,
    properties: { vm: name, onto: name },
    required: ["vm", "onto"],
    refs: { vm: "vm", onto: "host" },
  });

  parts.probe({ kind: "hosts", summary: "hosts connected and disconnected, as the controller has them" });
  parts.probe({ kind: "vms", summary: "VMs by state, as the controller has them" });
  parts.probe({ kind: "api", summary: "round trip of GetControllerStatus in ms (errors counted)" });
  parts.probe({ kind: "faults", summary: "what the bus rules dropped, delayed and duplicated so far, summed over processes, and how many messages they hold" });

  parts.assertion({
    kind: "detected-within",
    summary: "every host a fault step cuts off (kill, pause, bus rule on a host) is seen disconnected within this time of the step",
    properties: { within: duration },
    required: ["within"],
    evaluate: (h, p) => latencies(h, h.steps.filter((s) => s.ok && losing.has(s.do) && s.hosts.length > 0), "host-disconnected", durationMs(p["within"] as string), (s) => s.timeMs),
  });
  parts.assertion({
    kind: "recovered-within",
    summary: "every host a fault cut off is seen connected again within this time of the fault's end (restart, resume, connect, or the rule's duration)",
    properties: { within: duration },
    required: ["within"],
    evaluate: (h, p) => {
      const ends = h.steps.filter((s) => s.ok && s.hosts.length > 0 && (s.do === "restart" || s.do === "resume" || s.do === "connect" || (s.do === "bus" && s.endsAtMs !== undefined)));
      return latencies(h, ends, "host-connected", durationMs(p["within"] as string), (s) => s.endsAtMs ?? s.timeMs);
    },
  });
  parts.assertion({
    kind: "disconnects",
    summary: "how many times hosts were declared disconnected in the run (flapping), between min and max",
    properties: { min: { type: "integer", minimum: 0 }, max: { type: "integer", minimum: 0 } },
    evaluate: (h, p) => {
      const count = h.events.filter((e) => e.kind === "host-disconnected" && e.timeMs >= h.run.startMs).length;
      const min = (p["min"] as number | undefined) ?? 0;
      const max = (p["max"] as number | undefined) ?? Infinity;
      const ok = count >= min && count <= max;
      return { ok, detail: `${count} host disconnections (allowed ${min} to ${max === Infinity ? "any" : max})`, metrics: { count } };
    },
  });
  parts.assertion({
    kind: "creates",
    summary: "of the VM creates the timeline made, at least min-acknowledged were acknowledged; their latency is measured",
    properties: { minAcknowledged: { type: "integer", minimum: 0 }, p99Within: duration },
    evaluate: (h, p) => {
      const creates = h.acks.filter((a) => a.op === "create-vm");
      const acked = creates.filter((a) => a.ok);
      const p99 = percentile(acked.map((a) => a.latencyMs), 99);
      const min = (p["minAcknowledged"] as number | undefined) ?? 0;
      const limit = p["p99Within"] ? durationMs(p["p99Within"] as string) : Infinity;
      const metrics = { acknowledged: acked.length, refused: creates.length - acked.length, p50: percentile(acked.map((a) => a.latencyMs), 50), p99 };
      if (acked.length < min) return { ok: false, detail: `${acked.length} of ${creates.length} creates acknowledged, fewer than ${min}`, metrics };
      if (p99 > limit) return { ok: false, detail: `create p99 ${Math.round(p99)} ms is over ${limit} ms`, metrics };
      return { ok: true, detail: `${acked.length} of ${creates.length} creates acknowledged, p99 ${Math.round(p99)} ms`, metrics };
    },
  });

  parts.checker({ name: "vm-on-one-host", summary: "no VM ran on two hosts at once", check: vmOnOneHost });
  parts.checker({ name: "acknowledged-kept", summary: "every acknowledged create and delete is reflected at the end", check: acknowledgedKept });
  parts.checker({ name: "vms-running", summary: "every VM that should run is running once the liveness window after the last fault has passed", check: vmsRunning });
  parts.checker({ name: "hosts-connected", summary: "every host is connected once the liveness window after the last fault has passed", check: hostsConnected });
  sdnParts(parts);
  hypervisorParts(parts);
  return parts;
}

/**
 * Claims of "running" per VM and host, from the hosts' own reports; a host's
 * claims end when it reports another state or when its agent process exits
 * (a dead process runs nothing). A second host claiming a VM another still
 * claims is a VM running twice.
 */
function vmOnOneHost(h: RunHistory): Verdict {
  const claims = new Map<string, Map<string, DatacenterEvent>>();
  const hostsOfAgent = h.run.agents;
  let checked = 0;
  for (const e of h.events) {
    if (e.kind === "process-exited" && hostsOfAgent[e.objectId]) {
      for (const host of hostsOfAgent[e.objectId]!) for (const byHost of claims.values()) byHost.delete(host);
      continue;
    }
    if (e.kind === "vm-deleted") {
      claims.delete(e.objectId);
      continue;
    }
    if (e.kind !== "vm-state-changed" || !e.hostId) continue;
    const byHost = claims.get(e.objectId) ?? new Map<string, DatacenterEvent>();
    claims.set(e.objectId, byHost);
    if (e.state !== "running" && e.state !== "starting") {
      byHost.delete(e.hostId);
      continue;
    }
    checked += 1;
    for (const [other, since] of byHost) {
      if (other === e.hostId) continue;
      return {
        ok: false,
        detail: `vm ${e.objectId} is ${e.state} on ${e.hostId} at ${h.at(e.timeMs)} while ${other} still runs it (${since.state} since ${h.at(since.timeMs)}, and has not said otherwise)`,
      };
    }
    byHost.set(e.hostId, e);
  }
  return { ok: true, detail: `${checked} running reports, never two hosts for one VM` };
}

function acknowledgedKept(h: RunHistory): Verdict {
  if (!h.final || h.final.error) return { ok: false, detail: `the final state could not be read: ${h.final?.error ?? "no final entry"}` };
  const present = new Set(h.final.vms.map((v) => v.id));
  // The last acknowledged change of each VM decides whether it must exist.
  const last = new Map<string, string>();
  for (const a of h.acks) if (a.ok && (a.op === "create-vm" || a.op === "delete-vm")) last.set(a.id, a.op);
  for (const [id, op] of last) {
    if (op === "create-vm" && !present.has(id)) return { ok: false, detail: `vm ${id} was acknowledged created, and is gone at the end` };
    if (op === "delete-vm" && present.has(id)) return { ok: false, detail: `vm ${id} was acknowledged deleted, and is still there at the end` };
  }
  return { ok: true, detail: `${last.size} acknowledged changes, all reflected at the end` };
}

function deadline(h: RunHistory): number {
  return h.healedAtMs + h.run.livenessMs;
}

function vmsRunning(h: RunHistory): Verdict {
  if (!h.final || h.final.error) return { ok: false, detail: `the final state could not be read: ${h.final?.error ?? "no final entry"}` };
  const until = deadline(h);
  const endMs = h.final.timeMs;
  if (endMs < until) return { ok: false, detail: `the run ended at ${h.at(endMs)}, before the liveness window closed (${h.at(until)}); make the duration longer` };
  let count = 0;
  for (const vm of h.final.vms) {
    if (vm.power !== "on") continue;
    count += 1;
    const reports = h.events.filter((e) => e.kind === "vm-state-changed" && e.objectId === vm.id && e.incarnation === vm.incarnation);
    const lastReport = reports.at(-1);
    if (!lastReport || lastReport.state !== "running") {
      return { ok: false, detail: `vm ${vm.id} should run; its last report is ${lastReport ? `${lastReport.state} from ${lastReport.hostId} at ${h.at(lastReport.timeMs)}` : "none"}, and the controller has it ${vm.state}` };
    }
    if (vm.state !== "running") return { ok: false, detail: `vm ${vm.id} reported running at ${h.at(lastReport.timeMs)}, and the controller has it ${vm.state} at the end` };
    // A VM created after the faults healed has the liveness window from its creation.
    const created = h.acks.find((a) => a.ok && a.op === "create-vm" && a.id === vm.id);
    const vmUntil = Math.max(until, created ? created.timeMs + h.run.livenessMs : 0);
    if (lastReport.timeMs > vmUntil) return { ok: false, detail: `vm ${vm.id} ran again only at ${h.at(lastReport.timeMs)}, after the liveness window (${h.at(vmUntil)})` };
  }
  return { ok: true, detail: `${count} VMs that should run are running by ${h.at(until)}` };
}

function hostsConnected(h: RunHistory): Verdict {
  if (!h.final || h.final.error) return { ok: false, detail: `the final state could not be read: ${h.final?.error ?? "no final entry"}` };
  const until = deadline(h);
  for (const host of h.run.hosts) {
    const changes = h.events.filter((e) => (e.kind === "host-connected" || e.kind === "host-disconnected") && e.objectId === host);
    const lastChange = changes.at(-1);
    if (lastChange?.kind === "host-disconnected") return { ok: false, detail: `${host} was disconnected at ${h.at(lastChange.timeMs)} and never connected again` };
    if (lastChange && lastChange.timeMs > until) return { ok: false, detail: `${host} connected again only at ${h.at(lastChange.timeMs)}, after the liveness window (${h.at(until)})` };
    const final = h.final.hosts.find((x) => x.id === host);
    if (final?.state !== "connected") return { ok: false, detail: `${host} is ${final?.state ?? "unknown to the controller"} at the end` };
  }
  return { ok: true, detail: `${h.run.hosts.length} hosts connected by ${h.at(until)}` };
}
