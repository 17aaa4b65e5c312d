// Runs one experiment: a fresh datacenter (the real `simdc up` in a
// throw-away data directory, or a compose project), the scenario's VMs, then its
// timeline on the simulated clock while every event and probe sample is
// recorded to the history file as it happens; then the final state, the
// teardown (logs kept beside the history), the verdicts and the summary.
// Ctrl-C ends the timeline, still records the final state if it can, tears
// everything down and writes what was recorded.

import { createWriteStream, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { controllerService, hostService, networkService, storageService, type Bus } from "@simdc/bus";
import { SimdcError, wallClock, wallNowMs, type Clock, type Timer } from "@simdc/common";
import {
  durationMs,
  judge,
  replaced,
  reportHtml,
  RunHistory,
  summaryMarkdown,
  vmNames,
  type HistoryEntry,
  type Parts,
  type Plan,
  type RunResult,
  type Scenario,
  type StepEntry,
} from "@simdc/experiment";
import { readEvents, vmStateName } from "@simdc/history";
import { simdc } from "@simdc/proto";
import { connectCli } from "../context.js";
import { enumName } from "../output.js";
import { listAllHosts, listAllVms } from "../paging.js";
import { readyTimeoutMs, startDocker, startLocal } from "./deployments.js";
import { createVms, executors, type StepContext } from "./steps.js";
import { finalFlows, sampleFlows, samplePing, untilPinging, VmPlaces } from "./sdn-probes.js";
import { HypervisorSampler, type ProbeReading } from "./hypervisor-probes.js";
import { measureReachability } from "../network/reachability.js";
import { parseRule } from "../commands/security-group.js";

/** How long the final reachability matrix waits for each echo. */
const finalEchoTimeoutMs = 1_000;

import v1 = simdc.v1;

const networkModes: Record<string, v1.NetworkMode> = {
  bridge: v1.NetworkMode.NETWORK_MODE_BRIDGE,
  "host-only": v1.NetworkMode.NETWORK_MODE_HOST_ONLY,
  nat: v1.NetworkMode.NETWORK_MODE_NAT,
};

/** The charting library the HTML report inlines. */
const chartLibraryPath = createRequire(import.meta.url).resolve("echarts/dist/echarts.min.js");

export interface ExperimentOptions {
  scenario: Scenario;
  plan: Plan;
  parts: Parts;
  /** Where the history, summary and logs go. */
  outDir: string;
  /** The command that repeats this run. */
  command: string;
  say: (line: string) => void;
  signal: AbortSignal;
  /** Whether the datacenter must serve test-only faults. */
  testFaults: boolean;
  /** Local processes (simdc up) or a compose project. */
  mode: "local" | "docker";
}

export interface ExperimentRun {
  history: RunHistory;
  result: RunResult;
  files: { history: string; summary: string; report: string; logs: string };
  interrupted: boolean;
}


/** Samples what a probe sees now. */
async function sample(bus: Bus, probe: Scenario["probes"][number], plan: Plan, places: VmPlaces): Promise<Record<string, number>> {
  switch (probe.probe) {
    case "ping":
      return samplePing(bus, places, probe["from"] as string, probe["to"] as string, durationMs(probe.every));
    case "flows":
      return sampleFlows(bus, plan);
    case "sync": {
      const sync = await bus.call(hostService.GetSyncStatus, {});
      return { desired: sync.desiredGeneration, written: sync.writtenGeneration, realized: sync.realizedGeneration, lagging: sync.laggingCount };
    }
    case "hosts": {
      const hosts = await listAllHosts(bus);
      const connected = hosts.filter((h) => h.state === v1.HostState.HOST_STATE_CONNECTED).length;
      return { connected, disconnected: hosts.length - connected };
    }
    case "vms": {
      const counts: Record<string, number> = {};
      for (const vm of await listAllVms(bus)) {
        const state = vmStateName(vm.status?.state ?? 0);
        counts[state] = (counts[state] ?? 0) + 1;
      }
      return counts;
    }
    case "faults": {
      // What every process's rules did so far, summed by rule.
      const totals: Record<string, number> = { held: 0 };
      for (const report of await bus.faultReports()) {
        totals["held"]! += report.held;
        for (const c of report.rules) {
          for (const what of ["dropped", "delayed", "duplicated"] as const) totals[`${c.ruleId}.${what}`] = (totals[`${c.ruleId}.${what}`] ?? 0) + (c[what] ?? 0);
        }
      }
      return totals;
    }
    case "api": {
      const started = wallNowMs();
      await bus.call(controllerService.GetControllerStatus, {}, { timeoutMs: 2_000 });
      return { latencyMs: wallNowMs() - started };
    }
    default:
      throw new SimdcError("INVALID_ARGUMENT", `no probe ${probe.probe}`);
  }
}

async function finalState(bus: Bus, clock: Clock, plan: Plan): Promise<HistoryEntry> {
  const timeMs = clock.nowMs();
  try {
    const [vms, hosts, flows] = await Promise.all([listAllVms(bus), listAllHosts(bus), finalFlows(bus, plan)]);
    // Measured after the rest: its pings take a while. A pair that differs is tried twice more before it counts.
    const reachability = await measureReachability(bus, finalEchoTimeoutMs, 2);
    return {
      type: "final",
      timeMs,
      flows,
      reachability,
      vms: vms.map((vm) => ({
        id: vm.id ?? "",
        hostId: vm.hostId ?? "",
        state: vmStateName(vm.status?.state ?? 0),
        power: enumName(v1.PowerState, vm.powerState ?? 0, "POWER_STATE_"),
        incarnation: vm.incarnation ?? "",
      })),
      hosts: hosts.map((h) => ({ id: h.id ?? "", state: enumName(v1.HostState, h.state ?? 0, "HOST_STATE_") })),
    };
  } catch (err) {
    return { type: "final", timeMs, vms: [], hosts: [], error: err instanceof SimdcError ? err.toString() : String(err) };
  }
}

export async function runExperiment(o: ExperimentOptions): Promise<ExperimentRun> {
  const { scenario, plan } = o;
  mkdirSync(o.outDir, { recursive: true });
  const files = { history: join(o.outDir, "history.jsonl"), summary: join(o.outDir, "summary.md"), report: join(o.outDir, "report.html"), logs: join(o.outDir, "logs") };
  const historyFile = createWriteStream(files.history);
  const entries: HistoryEntry[] = [];
  const record = (entry: HistoryEntry): void => {
    entries.push(entry);
    historyFile.write(`${JSON.stringify(entry)}\n`);
  };
  o.say(`starting a datacenter: ${scenario.topology.hosts} hosts (${Object.keys(plan.agents).length} agents), ${scenario.topology.san} SAN nodes, ${scenario.topology.controllers} controller(s)`);
  const dc = o.mode === "docker" ? await startDocker(scenario, plan.seed, o.testFaults, o.signal, join(o.outDir, "compose")) : await startLocal(scenario, plan.seed, o.testFaults, o.signal);
  const stopRecording = new AbortController();
  const timers: Timer[] = [];
  let bus: Bus | null = null;
  let interrupted = false;
  try {
    const clock = dc.clock;
    const theBus = await connectCli(dc.global);
    bus = theBus;
    // The history from the datacenter's first event on, as it happens.
    const recording = readEvents(theBus, { from: "all", follow: true, signal: stopRecording.signal }, (event) => record({ type: "event", event }));

    const bootVolume = "boot";
    const stepContext: StepContext = {
      bus: theBus,
      clock,
      plan,
      deployment: dc,
      bootVolume,
      ack: record,
      // What the undo says is recorded by the undo itself (an acknowledgement); a throw here would have no one to tell.
      schedule: (delayMs, undo) => void timers.push(clock.after(delayMs, () => void undo().catch(() => undefined))),
    };
    for (const net of scenario.networks) {
      const flowSetup = net.flowSetup === "reactive" ? v1.FlowSetup.FLOW_SETUP_REACTIVE : v1.FlowSetup.FLOW_SETUP_PROACTIVE;
      const uplink = net.uplink === "dedicated" ? v1.Uplink.UPLINK_DEDICATED : v1.Uplink.UPLINK_CONVERGED;
      await theBus.call(networkService.CreateNetwork, { name: net.name, mode: networkModes[net.mode], subnets: [net.subnet], flowSetup, uplink, tenant: net.tenant ?? "" });
    }
    for (const group of scenario.securityGroups) await theBus.call(networkService.CreateSecurityGroup, { name: group.name, rules: group.rules.map(parseRule) });
    for (const router of scenario.routers) await theBus.call(networkService.CreateRouter, { name: router.name, networks: router.networks });
    for (const endpoint of scenario.endpoints) await theBus.call(networkService.CreateExternalEndpoint, { name: endpoint.name, hostId: endpoint.host ?? "" });
    const initial = scenario.vms.flatMap((g) => vmNames(g.name, g.count).map((name) => ({ name, g })));
    if (initial.length > 0 || scenario.timeline.some((s) => o.parts.steps.get(s.do)?.createsVms)) {
      await theBus.call(storageService.CreateVolume, { name: bootVolume, sizeMib: 64 });
    }
    if (initial.length > 0) {
      o.say(`creating ${initial.length} VMs`);
      for (const g of scenario.vms) await createVms(stepContext, vmNames(g.name, g.count), g, 16);
      const deadline = wallNowMs() + readyTimeoutMs;
      for (;;) {
        const vms = await listAllVms(theBus);
        if (vms.length >= initial.length && vms.every((v) => v.status?.state === v1.VmState.VM_STATE_RUNNING)) break;
        if (wallNowMs() > deadline) throw new SimdcError("DEADLINE_EXCEEDED", `the scenario's VMs were not all running after ${readyTimeoutMs} ms`);
        if (o.signal.aborted) throw new SimdcError("UNAVAILABLE", "interrupted while the VMs started");
        await wallClock.sleep(200);
      }
    }
    // The probed VMs are located now, while the controller answers; their pings then need only the hosts.
    const places = new VmPlaces();
    await places.find(theBus, new Set(scenario.probes.flatMap((p) => [p["from"], p["to"]]).filter((v): v is string => typeof v === "string")));
    for (const p of scenario.probes) {
      if (p.probe === "ping") await untilPinging(theBus, places, p["from"] as string, p["to"] as string, readyTimeoutMs, (ms) => wallClock.sleep(ms), wallNowMs);
    }

    const startMs = clock.nowMs();
    record({
      type: "run",
      scenario: scenario.name,
      seed: plan.seed,
      timeScale: scenario.topology.timeScale,
      command: o.command,
      startMs,
      durationMs: plan.durationMs,
      livenessMs: plan.livenessMs,
      agents: plan.agents,
      hosts: plan.hosts,
      groups: plan.groups,
    });
    o.say(`timeline: ${plan.steps.length} steps over ${(plan.durationMs / 1000).toFixed(1)} s (seed ${plan.seed})`);
    for (const probe of scenario.probes) {
      let busy = false;
      const everyMs = durationMs(probe.every);
      const label = probe.probe === "ping" ? `${probe["from"] as string}>${probe["to"] as string}` : undefined;
      // The hypervisor probe reads each host's closed windows (a reading per host, timed as the host closed it); the others one value set each time.
      const hypervisor = probe.probe === "hypervisor" ? new HypervisorSampler(theBus, plan, probe["hosts"] as string[] | undefined) : null;
      const readings = (): Promise<ProbeReading[]> => hypervisor?.sample() ?? sample(theBus, probe, plan, places).then((values) => [{ values, ...(label ? { label } : {}) }]);
      timers.push(
        clock.every(everyMs, () => {
          if (busy) return;
          busy = true;
          readings()
            .then((all) => all.forEach((r) => record({ type: "sample", probe: probe.probe, ...r, timeMs: r.timeMs ?? clock.nowMs() })))
            // A probe that gets no answer (the controller is the fault) is a sample too.
            .catch(() => record({ type: "sample", timeMs: clock.nowMs(), probe: probe.probe, ...(label ? { label } : {}), values: { errors: 1 } }))
            .finally(() => (busy = false));
        }),
      );
    }
    /** The faults in force: when each ends, and what it acts on (a later fault of a replaced kind on the same target ends it). */
    const active = new Map<string, { endsAtMs: number; do: string; target: string | undefined }>();
    const faultsActive = (): number => {
      const now = clock.nowMs();
      return [...active.values()].filter((a) => a.endsAtMs > now).length;
    };
    const execute = async (step: Plan["steps"][number]): Promise<void> => {
      const at = clock.nowMs();
      let entry: StepEntry;
      try {
        const outcome = await executors[step.do]!(stepContext, step);
        entry = {
          type: "step",
          // A fault acts once it has taken effect (the process is dead); a heal may act as soon as it begins (a resumed agent beats before the supervisor answers).
          timeMs: step.fault ? (outcome.effectiveAtMs ?? at) : at,
          id: step.id,
          do: step.do,
          fault: step.fault,
          ok: true,
          detail: outcome.detail,
          hosts: outcome.hosts,
          ...(outcome.target ? { target: outcome.target } : {}),
          ...(outcome.endsAtMs ? { endsAtMs: outcome.endsAtMs } : {}),
        };
      } catch (err) {
        entry = { type: "step", timeMs: at, id: step.id, do: step.do, fault: step.fault, ok: false, detail: err instanceof SimdcError ? err.toString() : String(err), hosts: [] };
      }
      record(entry);
      if (entry.ok && replaced.has(step.do)) for (const [id, a] of active) if (a.do === step.do && a.target === entry.target) active.delete(id);
      if (entry.ok && step.fault) active.set(step.id, { endsAtMs: entry.endsAtMs ?? Infinity, do: step.do, target: entry.target });
      if (entry.ok && (step.do === "resume" || step.do === "restart")) {
        for (const [id] of active) if (plan.steps.find((s) => s.id === id)?.params["process"] === step.params["process"]) active.delete(id);
      }
      if (entry.ok && step.do === "clear-bus") for (const [id] of active) if (!step.params["rule"] || step.params["rule"] === id) active.delete(id);
      o.say(`${`+${((at - startMs) / 1000).toFixed(2)} s`.padEnd(9)} ${step.id}: ${entry.ok ? entry.detail : `FAILED: ${entry.detail}`}  (faults active: ${faultsActive()})`);
    };
    // On a terminal, one line kept current: where the timeline is, the faults in force, the hosts cut off.
    const down = new Set<string>();
    let scanned = 0;
    const statusLine = process.stderr.isTTY
      ? wallClock.every(1_000, () => {
          for (; scanned < entries.length; scanned++) {
            const e = entries[scanned]!;
            if (e.type !== "event") continue;
            if (e.event.kind === "host-disconnected") down.add(e.event.objectId);
            else if (e.event.kind === "host-connected") down.delete(e.event.objectId);
          }
          const t = ((clock.nowMs() - startMs) / 1000).toFixed(1);
          process.stderr.write(`\r\x1b[Kexperiment: timeline +${t} s of ${(plan.durationMs / 1000).toFixed(1)} s; faults active ${faultsActive()}; hosts disconnected ${down.size}; ${entries.length} entries recorded`);
        })
      : null;
    if (statusLine) timers.push(statusLine);
    // Each step starts at its time, whether or not the ones before it are done (a create load goes on under the faults).
    const running: Promise<void>[] = [];
    for (const step of plan.steps) {
      const waitMs = startMs + step.atMs - clock.nowMs();
      if (waitMs > 0 && !(await clock.sleep(waitMs, o.signal))) break;
      if (o.signal.aborted) break;
      running.push(execute(step));
    }
    if (!o.signal.aborted) await clock.sleep(startMs + plan.durationMs - clock.nowMs(), o.signal);
    interrupted = o.signal.aborted;
    await Promise.all(running);
    for (const t of timers) t.cancel();
    record(await finalState(theBus, clock, plan));
    // Events published just before the end still reach the history.
    await wallClock.sleep(500);
    stopRecording.abort();
    await recording.catch(() => undefined);
  } finally {
    for (const t of timers) t.cancel();
    stopRecording.abort();
    await bus?.close().catch(() => undefined);
    await dc.stop(files.logs);
    await new Promise<void>((resolve) => historyFile.end(() => resolve()));
  }
  const history = new RunHistory(entries);
  const result = judge(history, scenario, o.parts);
  writeFileSync(files.summary, summaryMarkdown(history, result, { history: files.history }));
  writeFileSync(files.report, reportHtml(history, result, readFileSync(chartLibraryPath, "utf8")));
  writeFileSync(join(o.outDir, "result.json"), `${JSON.stringify({ scenario: scenario.name, ...result }, null, 2)}\n`);
  return { history, result, files, interrupted };
}
