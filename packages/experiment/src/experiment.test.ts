// Proves scenario checking, seeded schedules and the checkers on plain data:
// every bad scenario is refused naming its line and field, the same seed
// gives the same schedule, and each checker passes a sound history and names
// the first events of a broken one. The hypervisor's parts likewise: VM
// groups and steps take workloads, allocations, images and salts (every bad
// one refused before anything starts), and each of its assertions computes
// its figure from recorded samples and events, passing a run that shows the
// behaviour and naming what broke in one that does not.

import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import type { DatacenterEvent } from "@simdc/history";
import { builtinParts, faultWindows, judge, parseScenario, planRun, reportData, RunHistory, scenarioSchema, swarmScenario, vmValueKey, type HistoryEntry, type Verdict } from "./mod.js";

const parts = builtinParts();
const memoryMib = 16_384;

const base = `name: agent-crash
description: kill an agent and bring it back
topology:
  hosts: 4
  hostsPerAgent: 2
vms:
  - name: web
    count: 2
timeline:
  - at: 2s
    do: kill
    process: agent-1
  - at: {between: [3s, 6s]}
    do: restart
    process: agent-1
  - at: 1s
    do: bus
    action: drop
    from: host-3
    to: controller
    for: 2s
duration: 10s
assertions:
  - assert: detected-within
    within: 4s
`;

function refusal(text: string, options: { short?: boolean } = {}): string {
  try {
    const { scenario, source } = parseScenario(text, "s.yaml", parts, options);
    planRun(scenario, source, parts, 7, memoryMib);
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error("the scenario was accepted");
}

describe("experiment scenarios", () => {
  it("scenario: a good file is read with defaults filled in, and the short form overrides the long one", () => {
    const { scenario } = parseScenario(`${base}short:\n  topology:\n    hosts: 2\n  duration: 8s\n`, "s.yaml", parts, { short: true });
    expect(scenario.topology).toMatchObject({ hosts: 2, hostsPerAgent: 2, san: 1, controllers: 1, heartbeatIntervalMs: 1000 });
    expect(scenario.duration).toBe("8s");
    expect(scenario.checkers).toEqual(["vm-on-one-host", "acknowledged-kept", "vms-running", "hosts-connected", "flows-match-intent", "reachability-matches-policy"]);
    expect(scenario.lines.timeline).toEqual([10, 13, 16]);
    expect(parseScenario(base, "s.yaml", parts).scenario.topology.hosts).toBe(4);
  });

  it("scenario: the schema shipped in scenarios/ (for editors) is the one the parts make", () => {
    const shipped = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "scenarios", "scenario.schema.json");
    expect(readFileSync(shipped, "utf8")).toBe(`${JSON.stringify(scenarioSchema(parts), null, 2)}\n`);
  });

  it("scenario: unknown keys, wrong types, bad durations and unknown kinds are refused naming the line and field", () => {
    expect(refusal(base.replace("  hostsPerAgent: 2", "  hostsPerAgent: 2\n  color: red"))).toBe('s.yaml:6: topology: unknown key "color"');
    expect(refusal(base.replace("hosts: 4", "hosts: four"))).toBe("s.yaml:4: topology.hosts: must be integer");
    expect(refusal(base.replace("at: 2s", "at: 2 seconds"))).toMatch(/^s\.yaml:10: timeline\.0\.at: must be a duration like 2s, or \{between: \[1s, 3s\]\}/);
    expect(refusal(base.replace("do: kill", "do: explode"))).toMatch(/^s\.yaml:11: timeline\.0\.do: must be one of kill, pause, resume, restart, disconnect, connect, bus, /);
    expect(refusal(base.replace("    process: agent-1\n  - at: {", "    process: agent-1\n    signal: 9\n  - at: {"))).toBe('s.yaml:13: timeline.0: unknown key "signal"');
    expect(refusal(base.replace("duration: 10s\n", ""))).toBe('s.yaml:1: missing "duration"');
    expect(refusal(base.replace("    within: 4s\n", ""))).toBe('s.yaml:24: assertions.0: missing "within"');
    expect(refusal("name: x\n  bad: [indent\n")).toMatch(/^s\.yaml:\d+: /);
  });

  it("scenario: a fault on something that does not exist, an impossible timeline and a topology too large are refused before anything starts", () => {
    expect(refusal(base.replace("process: agent-1\n  - at: {", "process: agent-7\n  - at: {"))).toBe(
      "s.yaml:12: no process agent-7; this topology has nats, controller-1, san-1, agent-1, agent-2",
    );
    expect(refusal(base.replace("from: host-3", "from: host-9"))).toBe("s.yaml:19: no identity host-9 in this topology");
    expect(refusal(base.replace("do: restart", "do: resume"))).toMatch(/^s\.yaml:13: resume agent-1 at [\d.]+ s: it is killed then, not paused$/);
    expect(refusal(base.replace("at: 2s", "at: 12s").replace("do: restart", "do: pause"))).toBe("s.yaml:10: kill at 12.00 s is after the end of the run (duration 10s)");
    expect(refusal(`${base}  - assert: creates\n`.replace("timeline:\n", "timeline:\n  - at: 0s\n    do: stop-vm\n    vm: db\n"))).toMatch(/^s\.yaml:12: no VM db exists at 0\.00 s/);
    expect(refusal(base.replace("vms:\n", "networks:\n  - name: blue\n    mode: nat\n    subnet: 10.0.0.0/24\nvms:\n").replace("count: 2\n", "count: 2\n    nics: [red]\n"))).toMatch(/^s\.yaml:\d+: no network red \(the scenario's networks make them\)$/);
    expect(refusal(`${base}probes:\n  - probe: ping\n    from: web-1\n    to: nobody\n    every: 1s\n`)).toMatch(/^s\.yaml:\d+: no VM or endpoint nobody among the scenario's vms and endpoints$/);
    expect(refusal(base.replace("hosts: 4", "hosts: 9000").replace("hostsPerAgent: 2", "hostsPerAgent: 1"))).toMatch(/^s\.yaml:3: this topology needs about \d+ MiB, more than 80% of this machine's 16384 MiB$/);
  });

  it("scenario: the same seed gives the same schedule, another seed another, and fixed steps stay put", () => {
    const { scenario, source } = parseScenario(base, "s.yaml", parts);
    const at = (seed: number): number[] => planRun(scenario, source, parts, seed, memoryMib).steps.map((s) => s.atMs);
    expect(at(7)).toEqual(at(7));
    const drawn = new Set([1, 2, 3, 4, 5, 6, 7, 8].map((seed) => at(seed)[2]));
    expect(drawn.size).toBeGreaterThan(4);
    for (const seed of [1, 2, 3]) {
      const [bus, kill, restart] = at(seed);
      expect([bus, kill]).toEqual([1_000, 2_000]);
      expect(restart).toBeGreaterThanOrEqual(3_000);
      expect(restart).toBeLessThanOrEqual(6_000);
    }
    expect(planRun(scenario, source, parts, 7, memoryMib).steps.map((s) => s.id)).toEqual(["bus-1", "kill-1", "restart-1"]);
  });
});

const run = {
  type: "run" as const,
  scenario: "t",
  seed: 1,
  timeScale: 1,
  command: "simdc experiment run t --seed 1",
  startMs: 0,
  durationMs: 20_000,
  livenessMs: 5_000,
  agents: { "agent-1": ["host-1"], "agent-2": ["host-2"] },
  hosts: ["host-1", "host-2"],
};

const vmReport = (timeMs: number, vm: string, host: string, state: string): HistoryEntry => ({
  type: "event",
  event: { timeMs, kind: "vm-state-changed", objectKind: "vm", objectId: vm, message: "", source: host, hostId: host, state, incarnation: "i1" },
});
const event = (timeMs: number, kind: string, objectId: string): HistoryEntry => ({
  type: "event",
  event: { timeMs, kind, objectKind: kind.split("-")[0]!, objectId, message: "", source: "controller-1" } as DatacenterEvent,
});
const final = (timeMs: number, running: boolean): HistoryEntry => ({
  type: "final",
  timeMs,
  vms: [{ id: "vm-1", hostId: "host-1", state: running ? "running" : "unknown", power: "on", incarnation: "i1" }],
  hosts: [
    { id: "host-1", state: "connected" },
    { id: "host-2", state: "connected" },
  ],
});
const verdicts = (entries: HistoryEntry[]) => {
  const { scenario } = parseScenario("name: t\ntimeline: []\nduration: 20s\n", "t.yaml", parts);
  return Object.fromEntries(judge(new RunHistory([run, ...entries]), scenario, parts).judged.map((j) => [j.name, j.verdict]));
};

describe("experiment checkers", () => {
  it("checkers: a sound history passes every checker, through a kill and restart of the VM's host", () => {
    const v = verdicts([
      { type: "ack", timeMs: 100, op: "create-vm", id: "vm-1", ok: true, latencyMs: 3 },
      vmReport(200, "vm-1", "host-1", "running"),
      { type: "step", timeMs: 1_000, id: "kill-1", do: "kill", fault: true, ok: true, detail: "agent-1", hosts: ["host-1"] },
      event(1_010, "process-exited", "agent-1"),
      event(4_000, "host-disconnected", "host-1"),
      { type: "step", timeMs: 5_000, id: "restart-1", do: "restart", fault: false, ok: true, detail: "agent-1", hosts: ["host-1"] },
      event(5_300, "host-connected", "host-1"),
      vmReport(5_400, "vm-1", "host-1", "running"),
      final(19_000, true),
    ]);
    for (const name of ["vm-on-one-host", "acknowledged-kept", "vms-running", "hosts-connected"]) expect(v[name]).toMatchObject({ ok: true });
  });

  it("checkers: a VM running on a second host while the first still runs it is caught, naming both reports", () => {
    const v = verdicts([vmReport(200, "vm-1", "host-1", "running"), vmReport(3_000, "vm-1", "host-2", "running"), final(19_000, true)]);
    expect(v["vm-on-one-host"]).toEqual({ ok: false, detail: "vm vm-1 is running on host-2 at +3.00 s while host-1 still runs it (running since +0.20 s, and has not said otherwise)" });
    // A host whose agent died runs nothing: the same move after the exit is no violation.
    const moved = verdicts([vmReport(200, "vm-1", "host-1", "running"), event(2_000, "process-exited", "agent-1"), vmReport(3_000, "vm-1", "host-2", "running"), final(19_000, true)]);
    expect(moved["vm-on-one-host"]).toMatchObject({ ok: true });
  });

  it("checkers: a lost acknowledged create, a VM not back in the window and a host never reconnected are each named", () => {
    const v = verdicts([
      { type: "ack", timeMs: 100, op: "create-vm", id: "vm-9", ok: true, latencyMs: 3 },
      { type: "ack", timeMs: 100, op: "create-vm", id: "vm-8", ok: false, latencyMs: 3, error: "UNAVAILABLE" },
      vmReport(200, "vm-1", "host-1", "running"),
      { type: "step", timeMs: 1_000, id: "kill-1", do: "kill", fault: true, ok: true, detail: "agent-2", hosts: ["host-2"] },
      event(4_000, "host-disconnected", "host-2"),
      vmReport(4_100, "vm-1", "host-1", "unknown"),
      final(19_000, false),
    ]);
    expect(v["acknowledged-kept"]).toEqual({ ok: false, detail: "vm vm-9 was acknowledged created, and is gone at the end" });
    expect(v["vms-running"]).toEqual({ ok: false, detail: "vm vm-1 should run; its last report is unknown from host-1 at +4.10 s, and the controller has it unknown" });
    expect(v["hosts-connected"]).toEqual({ ok: false, detail: "host-2 was disconnected at +4.00 s and never connected again" });
  });
});

describe("experiment reports", () => {
  const step = (timeMs: number, id: string, what: string, target: string, extra: object = {}): HistoryEntry => ({
    type: "step",
    timeMs,
    id,
    do: what,
    fault: what === "kill" || what === "pause" || what === "bus",
    ok: true,
    detail: target,
    hosts: [],
    target,
    ...extra,
  });

  it("checkers: a VM created after the faults healed has the liveness window from its creation", () => {
    const late = (runningAt: number) =>
      verdicts([{ type: "ack", timeMs: 15_000, op: "create-vm", id: "vm-1", ok: true, latencyMs: 3 }, vmReport(runningAt, "vm-1", "host-1", "running"), final(30_000, true)])["vms-running"];
    expect(late(16_000)).toMatchObject({ ok: true });
    expect(late(26_000)).toMatchObject({ ok: false, detail: "vm vm-1 ran again only at +26.00 s, after the liveness window (+20.00 s)" });
  });

  it("sdn: ping-loss counts lost echoes (and unanswered probes) against max; flows-match-intent names the first host whose flows differ", () => {
    const { scenario } = parseScenario("name: t\ntimeline: []\nduration: 20s\nassertions:\n  - assert: ping-loss\n    max: 20\n", "t.yaml", parts);
    const ping = (timeMs: number, values: Record<string, number>): HistoryEntry => ({ type: "sample", timeMs, probe: "ping", values });
    const flows = (installed: string[]): HistoryEntry => ({ ...(final(19_000, true) as object), flows: [{ hostId: "host-1", installed, intended: ["table=0,priority=1 actions=drop"] }] }) as HistoryEntry;
    const judged = (entries: HistoryEntry[]) => Object.fromEntries(judge(new RunHistory([run, ...entries]), scenario, parts).judged.map((j) => [j.name, j.verdict]));
    const good = judged([ping(1_000, { received: 1, rttMs: 2 }), ping(2_000, { received: 1, rttMs: 4 }), ping(3_000, { received: 0 }), ping(4_000, { received: 1, rttMs: 2 }), ping(5_000, { received: 1, rttMs: 2 }), flows(["table=0,priority=1 actions=drop"])]);
    expect(good["ping-loss"]).toMatchObject({ ok: true, metrics: { sent: 5, lost: 1, lossPercent: 20 } });
    expect(good["flows-match-intent"]).toMatchObject({ ok: true, detail: "1 hosts hold exactly their documents' 1 flows" });
    const bad = judged([ping(1_000, { received: 1, rttMs: 2 }), ping(2_000, { errors: 1 }), flows([])]);
    expect(bad["ping-loss"]).toMatchObject({ ok: false, detail: expect.stringMatching(/^1 of 2 echoes lost \(50\.0%, allowed 20%\); the first at/) });
    expect(bad["flows-match-intent"]).toMatchObject({ ok: false, detail: expect.stringMatching(/^host-1 holds 0 flows .* against 1 in its document \(1 missing, 0 not intended; missing table=0,priority=1 actions=drop\)/) });
    expect(judged([flows(["table=0,priority=1 actions=drop", "table=0,priority=2 actions=drop"])])["flows-match-intent"]).toMatchObject({ ok: false, detail: expect.stringMatching(/1 not intended; not intended table=0,priority=2/) });
  });

  it("reports: a fault's window runs from the step to what ended it: a restart, the rule's own end or its clearing, else the run's end", () => {
    const h = new RunHistory([
      run,
      step(1_000, "k", "kill", "agent-1"),
      step(2_000, "r", "restart", "agent-2"),
      step(4_000, "r2", "restart", "agent-1"),
      step(1_500, "b", "bus", "b", { endsAtMs: 9_000 }),
      step(2_500, "c", "bus", "c"),
      step(6_000, "clear", "clear-bus", "c"),
      step(7_000, "p", "pause", "agent-2"),
      final(19_000, true),
    ]);
    expect(faultWindows(h).map((w) => [w.id, w.fromMs, w.toMs])).toEqual([
      ["k", 1_000, 4_000],
      ["b", 1_500, 9_000],
      ["c", 2_500, 6_000],
      ["p", 7_000, 19_000],
    ]);
  });

  it("reports: hosts connected over time follow the connected and disconnected events, from all connected", () => {
    const h = new RunHistory([
      run,
      event(3_000, "host-disconnected", "host-1"),
      event(3_500, "host-disconnected", "host-1"),
      event(4_000, "host-disconnected", "host-2"),
      event(6_000, "host-connected", "host-1"),
      final(10_000, true),
    ]);
    const { judged } = judge(h, parseScenario("name: t\ntimeline: []\nduration: 10s\n", "t.yaml", parts).scenario, parts);
    const data = reportData(h, { seed: 1, ok: false, judged, metrics: {} }) as { hosts: { connected: [number, number][] } };
    // A repeated disconnect changes nothing; the line ends at the run's end.
    expect(data.hosts.connected).toEqual([
      [0, 2],
      [3, 1],
      [4, 0],
      [6, 1],
      [10, 1],
    ]);
  });
});

describe("experiment swarm", () => {
  it("swarm: a seed always gives the same scenario, every one valid and with a healing step at the end of its faults", () => {
    expect(swarmScenario(9)).toBe(swarmScenario(9));
    const distinct = new Set<string>();
    for (let seed = 0; seed < 60; seed++) {
      const text = swarmScenario(seed);
      distinct.add(text.replace(/swarm-\d+/g, "").replace(/swarm run \d+/, ""));
      const { scenario, source } = parseScenario(text, `swarm-${seed}.yaml`, parts);
      const plan = planRun(scenario, source, parts, seed, memoryMib);
      expect(plan.steps.at(-1)).toMatchObject({ id: "heal", do: "clear-bus", atMs: 12_000 });
      expect(plan.steps.filter((s) => s.fault).length).toBeGreaterThan(0);
    }
    expect(distinct.size).toBeGreaterThan(50);
  });
});

/** A scenario with every hypervisor field, step, probe and a few assertions; the refusals below each break one line of it. */
const hvBase = `name: hv
topology:
  hosts: 2
  hostsPerAgent: 1
  pcpus: 4
  memoryMib: 8192
  coscheduling: strict
  shareSalting: "off"
  threadsPerCore: 2
  coreMhz: 2500
vms:
  - name: wide
    vcpus: 4
    workload:
      kind: web
      params:
        cpuMean: 0.3
      phases:
        - kind: boot
          for: 20s
    cpu:
      shares: high
      reservationMhz: 1000
      limitMhz: 6000
    memory:
      shares: 3000
      reservationMib: 256
    image: win10
    shareSalt: pool-a
  - name: narrow
    count: 3
timeline:
  - at: 1s
    do: memory-pressure
    host: host-1
    pressureMib: 4000
    for: 5s
  - at: 2s
    do: boot-storm
    name: vdi
    count: 4
    boot: 10s
    workload:
      kind: vdi
  - at: 3s
    do: runaway
    vm: vdi-2
    for: 5s
duration: 30s
probes:
  - probe: hypervisor
    every: 2s
    hosts: [host-1]
assertions:
  - assert: cpu-ratio
    a: wide
    b: narrow
    counter: wait
    min: 2
  - assert: cpu-ready
    vm: vdi
    max: 10
`;

describe("hypervisor scenarios", () => {
  it("hypervisor: topology options, VM group fields and the new steps are read, and the run's VM groups include those its steps create", () => {
    const { scenario, source } = parseScenario(hvBase, "s.yaml", parts);
    expect(scenario.topology).toMatchObject({ coscheduling: "strict", shareSalting: "off", threadsPerCore: 2, coreMhz: 2500 });
    expect(scenario.vms[0]).toMatchObject({ name: "wide", workload: { kind: "web", params: { cpuMean: 0.3 } }, cpu: { shares: "high", reservationMhz: 1000 }, memory: { shares: 3000 }, image: "win10", shareSalt: "pool-a" });
    // Left out, the hypervisor's options are vSphere's defaults.
    expect(parseScenario("name: d\ntimeline: []\nduration: 1s\n", "d.yaml", parts).scenario.topology).toMatchObject({ coscheduling: "relaxed", shareSalting: "per-vm", threadsPerCore: 1, coreMhz: 2000 });
    const plan = planRun(scenario, source, parts, 7, memoryMib);
    expect(plan.groups).toEqual({ wide: ["wide"], narrow: ["narrow-1", "narrow-2", "narrow-3"], vdi: ["vdi-1", "vdi-2", "vdi-3", "vdi-4"] });
    expect(plan.steps.map((s) => [s.do, s.fault])).toEqual([
      ["memory-pressure", true],
      ["boot-storm", true],
      ["runaway", true],
    ]);
  });

  it("hypervisor: bad workloads, shares, reservations and fault parameters, and hosts or VMs that do not exist (or not yet), are refused naming the line", () => {
    const cases: [string, string, string][] = [
      ["kind: web", "kind: crypto", "s.yaml:15: vms.0.workload.kind: must be one of idle, web, batch, database, vdi"],
      ["cpuMean: 0.3", "speed: 3", 's.yaml:17: vms.0.workload.params: unknown key "speed"'],
      ["kind: web\n      params:\n        cpuMean: 0.3", "kind: batch\n      params:\n        peakCpu: 0.9", "s.yaml:14: vms.0: workload.params.peakCpu does not apply to kind batch"],
      ["cpuMean: 0.3", "cpuMean: 2", "s.yaml:14: vms.0: workload.params.cpuMean must be a number from 0 to 1, got 2"],
      ["        - kind: boot", "        - kind: reboot", "s.yaml:19: vms.0.workload.phases.0.kind: must be one of idle, web, batch, database, vdi, boot"],
      ["for: 20s", "for: 0s", "s.yaml:20: vms.0.workload.phases.0.for: a phase must last longer than 0"],
      ["shares: high", "shares: lots", "s.yaml:22: vms.0.cpu.shares: must be low, normal, high, or a number of shares"],
      // The boot storm's own workload is checked as a group's is.
      ["      kind: vdi\n", "      kind: vdi\n      params:\n        burstFraction: 1\n", "s.yaml:43: timeline.1: workload.params: burstFraction must be below 1 (kind vdi)"],
      ["reservationMhz: 1000", "reservationMhz: 10001", "s.yaml:23: vms.0.cpu.reservationMhz: 10001 MHz is more than 4 vCPUs of 2500 MHz can use (10000 MHz)"],
      ["limitMhz: 6000", "limitMhz: 500", "s.yaml:24: vms.0.cpu.limitMhz: 500 MHz is below the reservation, 1000 MHz"],
      ["reservationMib: 256", "reservationMib: 4096", "s.yaml:27: vms.0.memory.reservationMib: 4096 MiB is more than the VM's 512 MiB"],
      ["pressureMib: 4000", "pressureMib: 9000", "s.yaml:36: timeline.0.pressureMib: a pressure of 9000 MiB is more than a host's 8192 MiB"],
      ["pressureMib: 4000", "pressureMib: 0", "s.yaml:37: timeline.0.for: pressureMib 0 gives the memory back; for needs a pressure to take it back from"],
      ["pressureMib: 4000", "pressureMib: -1", "s.yaml:36: timeline.0.pressureMib: must be >= 0"],
      ["count: 4", "count: 1", "s.yaml:41: timeline.1.count: must be >= 2"],
      ["boot: 10s", "boot: 0s", "s.yaml:42: timeline.1.boot: a boot must last longer than 0"],
      ["    boot: 10s\n", "", 's.yaml:38: timeline.1: missing "boot"'],
      ["host: host-1\n    pressureMib", "host: host-9\n    pressureMib", "s.yaml:35: no host host-9 in this topology"],
      ["vm: vdi-2", "vm: ghost", "s.yaml:47: no VM ghost exists at 3.00 s (the scenario's vms and earlier steps that create VMs make them)"],
      // vdi-2 is made by the storm at 2 s: a runaway before it has nothing to act on.
      ["at: 3s", "at: 1s", "s.yaml:47: no VM vdi-2 exists at 1.00 s (the scenario's vms and earlier steps that create VMs make them)"],
      ["hosts: [host-1]", "hosts: [host-1, host-7]", "s.yaml:53: no host host-7 in this topology"],
      ["b: narrow", "b: skinny", "s.yaml:57: no VM or VM group skinny among the scenario's vms and the VMs its steps create"],
      ["    max: 10\n", "    max: 10\n  - assert: memory-state\n    host: host-3\n    reached: soft\n", "s.yaml:64: no host host-3 in this topology"],
      ["    max: 10\n", "    max: 10\n  - assert: memory-state\n    host: host-1\n    reached: high\n", "s.yaml:65: assertions.2.reached: must be one of clear, soft, hard, low"],
    ];
    for (const [from, to, message] of cases) expect(refusal(hvBase.replace(from, to)), `${from} -> ${to}`).toBe(message);
  });
});

const hvRun = {
  type: "run" as const,
  scenario: "t",
  seed: 1,
  timeScale: 10,
  command: "simdc experiment run t --seed 1",
  startMs: 0,
  durationMs: 200_000,
  livenessMs: 5_000,
  agents: { "agent-1": ["host-1"] },
  hosts: ["host-1"],
  groups: { wide: ["wide"], narrow: ["narrow-1", "narrow-2"] },
};

/** A hypervisor sample of host-1 whose 5 s window closed at `timeMs`: host counters, and each VM's. */
const hvSample = (timeMs: number, host: Record<string, number>, vms: Record<string, Record<string, number>> = {}): HistoryEntry => {
  const values: Record<string, number> = { windowMs: 5_000, pressure: 0, balloon: 0, compressed: 0, swapped: 0, sharedSaved: 0, sharedSavedBetweenVms: 0, ...host };
  for (const [vm, counters] of Object.entries(vms)) for (const [c, v] of Object.entries(counters)) values[vmValueKey(vm, c as "used")] = v;
  return { type: "sample", timeMs, probe: "hypervisor", label: "host-1", values };
};

/** Judged assertions of a scenario with `assertions` (YAML list items) over a run with `entries`. */
function hvVerdicts(assertions: string, entries: HistoryEntry[]): Record<string, Verdict> {
  const { scenario } = parseScenario(`name: t\ntimeline: []\nduration: 200s\nassertions:\n${assertions}`, "t.yaml", parts);
  return Object.fromEntries(judge(new RunHistory([hvRun, ...entries]), scenario, parts).judged.filter((j) => j.kind === "assertion").map((j) => [j.name, j.verdict]));
}

const memoryEvent = (timeMs: number, from: string, to: string): HistoryEntry => ({
  type: "event",
  event: { timeMs, kind: "memory-state-changed", objectKind: "host", objectId: "host-1", message: `host host-1: memory ${from} -> ${to}, 100 MiB free`, source: "agent-1" } as DatacenterEvent,
});

describe("hypervisor assertions", () => {
  // Strict co-scheduling's picture: the wide VM co-stops, the narrow ones wait ready.
  const cpu = (timeMs: number, wideReady = 0): HistoryEntry =>
    hvSample(timeMs, {}, {
      wide: { vcpus: 4, used: 200, ready: wideReady, costop: 200, lost: 50 },
      "narrow-1": { vcpus: 1, used: 50, ready: 50, costop: 0, lost: 50 },
      "narrow-2": { vcpus: 1, used: 50, ready: 40, costop: 0, lost: 50 },
    });

  it("cpu: ready and co-stop are per vCPU and averaged over a group's VMs and the samples whose whole window is inside after..before; a ratio compares sums", () => {
    const history = [cpu(10_000, 400), cpu(20_000), cpu(25_000), cpu(30_000), cpu(42_000, 400)];
    const v = hvVerdicts(
      `  - assert: cpu-ready
    vm: narrow
    min: 40
    max: 50
    after: 16s
    before: 40s
  - assert: cpu-ready
    vm: wide
    max: 5
    after: 16s
    before: 40s
  - assert: cpu-costop
    vm: wide
    min: 45
  - assert: cpu-ratio
    a: wide
    b: narrow
    counter: wait
    min: 4
    after: 16s
    before: 40s
  - assert: lost-work
    vm: narrow
    max: 40
`,
      history,
    );
    // Windows 15-20, 20-25 and 25-30 s: the samples closing at 10 s and 42 s (ready 400) are outside.
    expect(v["cpu-ready(narrow)"]).toMatchObject({ ok: true, metrics: { mean: 45, min: 40, max: 50 } });
    expect(v["cpu-ready(wide)"]).toMatchObject({ ok: true, metrics: { mean: 0 } });
    expect(v["cpu-costop(wide)"]).toMatchObject({ ok: true, metrics: { mean: 50 } });
    // wait = ready + co-stop, summed over vCPUs: 200 against the narrow VMs' 45.
    expect(v["cpu-ratio(wide/narrow)"]).toMatchObject({ ok: true, metrics: { a: 200, b: 45 } });
    expect(v["cpu-ratio(wide/narrow)"]!.metrics!["ratio"]).toBeCloseTo(4.444, 3);
    expect(v["lost-work(narrow)"]).toEqual({ ok: false, detail: "narrow (2 VMs): lost work % 50 on average (50 to 50) over 10 samples from +0.00 s to the end, allowed 0-40", metrics: { mean: 50, min: 50, max: 50 } });
    // Nothing sampled in the window is a failure that says what to add, never a pass.
    expect(hvVerdicts("  - assert: cpu-ready\n    vm: wide\n    max: 5\n", [])["cpu-ready(wide)"]).toEqual({
      ok: false,
      detail: "no hypervisor samples of wide from +0.00 s to the end: add a hypervisor probe, or widen the window",
    });
  });

  it("memory-state: reached counts the deepest state the events show; left needs a later change above the state named", () => {
    const assertions = `  - assert: memory-state
    host: host-1
    reached: hard
    left: clear
`;
    const ok = hvVerdicts(assertions, [memoryEvent(80_000, "high", "soft"), memoryEvent(80_500, "soft", "clear"), memoryEvent(130_000, "clear", "low"), memoryEvent(130_500, "low", "clear"), memoryEvent(180_000, "clear", "high")]);
    expect(ok["memory-state(host-1)"]).toMatchObject({ ok: true, metrics: { deepest: 4, reachedAtMs: 130_000, leftAtMs: 180_000 } });
    // Back to clear is not above clear: the pressure never went.
    const stuck = hvVerdicts(assertions, [memoryEvent(130_000, "clear", "hard"), memoryEvent(130_500, "hard", "clear")]);
    expect(stuck["memory-state(host-1)"]).toMatchObject({ ok: false, detail: "host-1 went hard at +130.00 s, clear at +130.50 s: hard or deeper from +130.00 s, and never back above clear after that" });
    const shallow = hvVerdicts(assertions, [memoryEvent(80_000, "high", "soft")]);
    expect(shallow["memory-state(host-1)"]).toMatchObject({ ok: false, detail: "host-1 went soft at +80.00 s: never hard or deeper (the deepest was soft)" });
  });

  it("reclaim-order: each kind's first sample at startMib or more, in order (one sample may start two); one out of order or never started is named", () => {
    const order = "  - assert: reclaim-order\n    host: host-1\n";
    const inOrder = [hvSample(10_000, { sharedSaved: 2 }), hvSample(85_000, { sharedSaved: 9, balloon: 80 }), hvSample(135_000, { sharedSaved: 15, balloon: 200, compressed: 30, swapped: 20 })];
    expect(hvVerdicts(order, inOrder)["reclaim-order(host-1)"]).toEqual({
      ok: true,
      detail: "on host-1: sharing by +10.00 s, balloon by +85.00 s, compression by +135.00 s, swap by +135.00 s, in that order",
      metrics: { sharingStartMs: 10_000, balloonStartMs: 85_000, compressionStartMs: 135_000, swapStartMs: 135_000 },
    });
    // A jump straight to hard: compression and swap before the balloon.
    const jumped = [hvSample(10_000, { sharedSaved: 2 }), hvSample(85_000, { compressed: 30, swapped: 20 }), hvSample(90_000, { balloon: 100, compressed: 30, swapped: 20 })];
    expect(hvVerdicts(order, jumped)["reclaim-order(host-1)"]).toMatchObject({ ok: false, detail: "on host-1: sharing by +10.00 s, balloon by +90.00 s, compression by +85.00 s, swap by +85.00 s; compression started before balloon" });
    expect(hvVerdicts(order, inOrder.slice(0, 2))["reclaim-order(host-1)"]).toMatchObject({ ok: false, detail: "on host-1: sharing by +10.00 s, balloon by +85.00 s, compression never, swap never; compression never reached 1 MiB" });
  });

  it("page-sharing and reclaimed-back: the most saved (between VMs when asked) in range; everything back to 0 within the time after the pressure goes", () => {
    const entries = [
      hvSample(10_000, { sharedSaved: 20, sharedSavedBetweenVms: 0 }),
      hvSample(100_000, { sharedSaved: 30, pressure: 1500, balloon: 120, compressed: 30, swapped: 20 }),
      hvSample(105_000, { sharedSaved: 31, pressure: 0, balloon: 40 }),
      hvSample(125_000, { sharedSaved: 32, pressure: 0 }),
    ];
    const v = hvVerdicts(
      `  - assert: page-sharing
    host: host-1
    min: 25
  - assert: page-sharing
    host: host-1
    betweenVms: true
    max: 0.5
  - assert: reclaimed-back
    host: host-1
    within: 30s
  - assert: reclaimed-back
    host: host-1
    within: 10s
`,
      entries,
    );
    expect(v["page-sharing(host-1)"]).toMatchObject({ ok: true, metrics: { savedMib: 32 } });
    expect(v["page-sharing(host-1)#2"]).toMatchObject({ ok: true, metrics: { savedMib: 0 } });
    expect(v["reclaimed-back(host-1)"]).toMatchObject({ ok: true, metrics: { reclaimedMib: 170, backAfterMs: 25_000 } });
    expect(v["reclaimed-back(host-1)#2"]).toMatchObject({ ok: false, detail: "host-1's 170 MiB reclaimed (balloon, compressed, swapped) were back to 0 by +125.00 s, 25 s after the last sample under pressure (allowed 10 s)" });
    // Still ballooned at the end, and nothing reclaimed at all, both fail.
    const stuck = hvVerdicts("  - assert: reclaimed-back\n    host: host-1\n    within: 30s\n", entries.slice(0, 3));
    expect(stuck["reclaimed-back(host-1)"]).toMatchObject({ ok: false, detail: "host-1 still holds 40 MiB ballooned, 0 compressed and 0 swapped at +105.00 s, after the pressure went by +100.00 s" });
    const idle = hvVerdicts("  - assert: reclaimed-back\n    host: host-1\n    within: 30s\n", [hvSample(100_000, { pressure: 100 }), hvSample(105_000, {})]);
    expect(idle["reclaimed-back(host-1)"]).toMatchObject({ ok: false, detail: "host-1 reclaimed nothing under pressure (balloon, compressed and swapped stayed 0), so nothing came back" });
  });

  it("reports: the hosts' memory is summed over hosts, each host's latest sample counting until its next; waits are per vCPU", () => {
    const other = (timeMs: number, balloon: number): HistoryEntry => ({ ...(hvSample(timeMs, { balloon }) as object), label: "host-2" }) as HistoryEntry;
    const h = new RunHistory([hvRun, hvSample(5_000, { balloon: 10 }, { wide: { vcpus: 4, ready: 100, costop: 40 } }), other(6_000, 5), hvSample(10_000, { balloon: 20 }, { wide: { vcpus: 4, ready: 0, costop: 200 } }), { type: "final", timeMs: 20_000, vms: [], hosts: [] }]);
    const { judged } = judge(h, parseScenario("name: t\ntimeline: []\nduration: 20s\n", "t.yaml", parts).scenario, parts);
    const data = reportData(h, { seed: 1, ok: true, judged, metrics: {} }) as { hypervisor: { memory: Record<string, [number, number][]>; cpu: Record<string, [number, number][]> } };
    expect(data.hypervisor.memory["balloon"]).toEqual([
      [5, 10],
      [6, 15],
      [10, 25],
    ]);
    expect(data.hypervisor.cpu).toEqual({
      "wide %RDY": [
        [5, 25],
        [10, 0],
      ],
      "wide %CSTP": [
        [5, 10],
        [10, 50],
      ],
    });
  });

  it("reports: a memory pressure holds until the next one on its host; a runaway or boot storm until its own end", () => {
    const step = (timeMs: number, id: string, what: string, target: string, extra: object = {}): HistoryEntry => ({ type: "step", timeMs, id, do: what, fault: true, ok: true, detail: id, hosts: [], target, ...extra });
    const h = new RunHistory([
      hvRun,
      step(1_000, "squeeze", "memory-pressure", "host-1"),
      step(2_000, "other", "memory-pressure", "host-2"),
      step(5_000, "crush", "memory-pressure", "host-1", { endsAtMs: 9_000 }),
      step(6_000, "storm", "boot-storm", "vdi", { endsAtMs: 46_000 }),
      step(7_000, "runaway", "runaway", "wide", { endsAtMs: 17_000 }),
      { type: "final", timeMs: 60_000, vms: [], hosts: [] },
    ]);
    expect(faultWindows(h).map((w) => [w.id, w.fromMs, w.toMs])).toEqual([
      ["squeeze", 1_000, 5_000],
      ["other", 2_000, 60_000],
      ["crush", 5_000, 9_000],
      ["storm", 6_000, 46_000],
      ["runaway", 7_000, 17_000],
    ]);
  });
});
