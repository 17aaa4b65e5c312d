// Proves scenario checking, seeded schedules and the checkers on plain data:
// every bad scenario is refused naming its line and field, the same seed
// gives the same schedule, and each checker passes a sound history and names
// the first events of a broken one.

import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import type { DatacenterEvent } from "@simdc/history";
import { builtinParts, faultWindows, judge, parseScenario, planRun, reportData, RunHistory, scenarioSchema, swarmScenario, type HistoryEntry } from "./mod.js";

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
