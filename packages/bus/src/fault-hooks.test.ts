// Proves the fault hooks end to end on a real nats-server: rules written to
// KV reach every bus (and one that connects late), and drop, delay (without
// blocking the event loop), duplicate and partition act on requests, replies
// and events by subject and by source and destination identity.

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { simdc } from "@simdc/proto";
import { createLogger, wallClock } from "@simdc/common";
import { startTestNats, eventually, type TestNats } from "@simdc/testkit";
import { addFaultRule, Bus, clearFaultRules, computeService, endpoint, readFaultRules, Subjects } from "./mod.js";

import v1 = simdc.v1;
const A = v1.FaultAction;

let nats: TestNats;
let controller: Bus;
let agent: Bus;
let operator: Bus;
const received: string[] = [];

async function bus(processId: string, role: string, seed = 0): Promise<Bus> {
  const b = await Bus.connect({
    servers: nats.url,
    processId,
    role,
    seed,
    logger: createLogger({ service: role, id: processId, level: "silent" }),
    connectTimeoutMs: 5_000,
  });
  await b.followFaultRules();
  return b;
}

async function waitApplied(generation: number): Promise<void> {
  await eventually(`generation ${generation} applied everywhere`, async () => {
    const reports = await operator.faultReports(200);
    return reports.length >= 2 && reports.every((r) => r.generation === generation || r.processId.startsWith("run-")) ? true : undefined;
  });
}

const getVm = (source?: string) =>
  agent.call(computeService.GetVm, { vmId: "vm-1" }, { timeoutMs: 400, ...(source ? { source } : {}) });

beforeAll(async () => {
  nats = await startTestNats();
  controller = await bus("controller-1", "controller");
  agent = await bus("agent-1", "host-agent");
  operator = await Bus.connect({ servers: nats.url, processId: "cli-1", role: "cli", logger: createLogger({ service: "cli", id: "cli-1", level: "silent" }) });
  await controller.serve({ role: "controller", description: "test" }, [
    endpoint(computeService.GetVm, (req) => ({ vm: { id: req.vmId } })),
  ]);
  agent.declareOwned(["host-7", "host-8"]);
  controller.subscribe("simdc.evt.host.*.heartbeat", v1.HostHeartbeat, (beat) => void received.push(beat.hostId));
  await controller.flush();
});

afterAll(async () => {
  await Promise.all([controller?.close(), agent?.close(), operator?.close()]);
  await nats?.dispose();
});

describe("fault hooks", () => {
  it("fault hooks: a drop rule from one host cuts only that host's requests", async () => {
    const set = await addFaultRule(operator, { id: "cut-host-3", action: A.FAULT_ACTION_DROP, source: "host-3", destination: "controller" });
    await waitApplied(set.generation);
    await expect(getVm("host-3")).rejects.toMatchObject({ code: "UNAVAILABLE" });
    expect((await getVm("host-2")).vm?.id).toBe("vm-1");
    const reports = await operator.faultReports(200);
    expect(reports.find((r) => r.processId === "controller-1")?.dropped).toBeGreaterThanOrEqual(1);
    await waitApplied((await clearFaultRules(operator)).generation);
    expect((await getVm("host-3")).vm?.id).toBe("vm-1");
  });

  it("fault hooks: a partition drops events both ways and heals when cleared", async () => {
    const set = await addFaultRule(operator, { id: "iso", action: A.FAULT_ACTION_PARTITION, source: "host-7" });
    await waitApplied(set.generation);
    received.length = 0;
    for (const hostId of ["host-7", "host-8"]) {
      agent.publish(`simdc.evt.host.${hostId}.heartbeat`, v1.HostHeartbeat, { hostId }, hostId);
    }
    await agent.flush();
    await eventually("host-8's beat", () => (received.includes("host-8") ? true : undefined));
    await wallClock.sleep(100);
    expect(received).toEqual(["host-8"]);
    await waitApplied((await clearFaultRules(operator, "iso")).generation);
    agent.publish("simdc.evt.host.host-7.heartbeat", v1.HostHeartbeat, { hostId: "host-7" }, "host-7");
    await eventually("host-7's beat after healing", () => (received.includes("host-7") ? true : undefined));
  });

  it("fault hooks: a delay holds replies back within delay + jitter without blocking the event loop", async () => {
    const set = await addFaultRule(operator, {
      id: "slow-api",
      action: A.FAULT_ACTION_DELAY,
      subject: "simdc.api.>",
      delayMs: 150,
      jitterMs: 50,
    });
    await waitApplied(set.generation);
    let ticks = 0;
    const timer = setInterval(() => (ticks += 1), 10);
    const started = Date.now();
    await Promise.all(Array.from({ length: 20 }, () => agent.call(computeService.GetVm, { vmId: "vm-1" }, { timeoutMs: 2_000 })));
    const tookMs = Date.now() - started;
    clearInterval(timer);
    // Applied on receipt and on reply: between 2 x 150 and 2 x 200 ms, plus scheduling.
    expect(tookMs).toBeGreaterThanOrEqual(300);
    expect(tookMs).toBeLessThan(900);
    // Twenty delayed requests ran concurrently and timers kept firing meanwhile.
    expect(ticks).toBeGreaterThan(15);
    await waitApplied((await clearFaultRules(operator)).generation);
  });

  it("fault hooks: each process reports what each rule did, and how many messages a delay holds right now", async () => {
    const set = await addFaultRule(operator, { id: "hold", action: A.FAULT_ACTION_DELAY, subject: "simdc.evt.host.host-6.heartbeat", delayMs: 1_000 });
    const other = await addFaultRule(operator, { id: "cut", action: A.FAULT_ACTION_DROP, subject: "simdc.evt.host.host-9.heartbeat" });
    await waitApplied(Math.max(set.generation, other.generation));
    received.length = 0;
    for (let i = 0; i < 3; i++) agent.publish("simdc.evt.host.host-6.heartbeat", v1.HostHeartbeat, { hostId: "host-6" }, "host-6");
    for (let i = 0; i < 2; i++) agent.publish("simdc.evt.host.host-9.heartbeat", v1.HostHeartbeat, { hostId: "host-9" }, "host-9");
    const countsOf = async () => (await operator.faultReports(200)).find((r) => r.processId === "controller-1")!;
    const holding = await eventually("three held by the controller", async () => {
      const r = await countsOf();
      return r.held === 3 ? r : undefined;
    });
    expect(holding.rules.map((c) => [c.ruleId, c.delayed, c.held, c.dropped])).toEqual([
      ["hold", 3, 3, 0],
      ["cut", 0, 0, 2],
    ]);
    expect(holding.nowMs).toBeGreaterThan(0);
    await eventually("the held three delivered", () => (received.filter((h) => h === "host-6").length === 3 ? true : undefined));
    const after = await countsOf();
    expect(after.held).toBe(0);
    expect(after.rules.find((c) => c.ruleId === "hold")).toMatchObject({ delayed: 3, held: 0 });
    expect(received).not.toContain("host-9");
    await waitApplied((await clearFaultRules(operator)).generation);
    expect((await countsOf()).rules).toEqual([]);
  });

  it("fault hooks: a duplicate rule delivers extra copies of events", async () => {
    const set = await addFaultRule(operator, { id: "dup", action: A.FAULT_ACTION_DUPLICATE, subject: "simdc.evt.host.*.heartbeat", copies: 2 });
    await waitApplied(set.generation);
    received.length = 0;
    agent.publish("simdc.evt.host.host-5.heartbeat", v1.HostHeartbeat, { hostId: "host-5" }, "host-5");
    await eventually("three copies", () => (received.length === 3 ? true : undefined));
    expect(received).toEqual(["host-5", "host-5", "host-5"]);
    await waitApplied((await clearFaultRules(operator)).generation);
  });

  it("fault hooks: each item of a batch is judged as if it came alone from its own sender", async () => {
    const got: string[] = [];
    controller.subscribeBatch(
      "simdc.evt.agent.*.heartbeats",
      v1.HostHeartbeats,
      (batch) => batch.beats.map((beat) => ({ item: beat.hostId ?? "", subject: `simdc.evt.host.${beat.hostId}.heartbeat`, sender: beat.hostId ?? "", seq: beat.seq ?? 0 })),
      (hostId) => void got.push(hostId),
    );
    await controller.flush();
    const rules = [
      { id: "cut-7", action: A.FAULT_ACTION_PARTITION, source: "host-7" },
      { id: "dup-5", action: A.FAULT_ACTION_DUPLICATE, subject: "simdc.evt.host.host-5.heartbeat", copies: 1 },
    ];
    let generation = 0;
    for (const rule of rules) generation = (await addFaultRule(operator, rule)).generation;
    await waitApplied(generation);
    agent.publish("simdc.evt.agent.agent-1.heartbeats", v1.HostHeartbeats, { beats: ["host-5", "host-7", "host-8"].map((hostId) => ({ hostId, seq: 1 })) });
    await eventually("host-8's beat", () => (got.includes("host-8") ? true : undefined));
    await wallClock.sleep(100);
    // host-7 is cut alone, host-5's beat comes twice, host-8's once: the batch's other items are untouched.
    expect(got).toEqual(["host-5", "host-5", "host-8"]);
    await waitApplied((await clearFaultRules(operator)).generation);
  });

  it("fault hooks: a process that connects late applies the current rules and reports their generation", async () => {
    const set = await addFaultRule(operator, { id: "late", action: A.FAULT_ACTION_DROP, subject: "simdc.evt.vm.>" });
    await waitApplied(set.generation);
    const late = await bus("san-9", "san-storage");
    const reports = await operator.faultReports(300);
    expect(reports.find((r) => r.processId === "san-9")).toMatchObject({ generation: set.generation, identities: ["san-9", "san-storage"] });
    const got: string[] = [];
    late.subscribe("simdc.evt.vm.>", v1.VmStatus, (s) => void got.push(s.vmId));
    await late.flush();
    agent.publish("simdc.evt.vm.vm-1.status", v1.VmStatus, { vmId: "vm-1" });
    await agent.flush();
    await late.flush();
    expect(got).toEqual([]);
    expect((await readFaultRules(operator)).rules.map((r) => r.id)).toEqual(["late"]);
    await late.close();
    await clearFaultRules(operator);
  });

  it("fault hooks: a subscription is judged by the host that owns it, so cutting one host of an agent leaves its siblings alone", async () => {
    // Host-to-host traffic on the underlay: agent-1 subscribes once for all its
    // hosts, and the host id in the subject says whose message it is.
    const other = await bus("agent-2", "host-agent");
    const delivered: string[] = [];
    const hostOf = (subject: string) => Subjects.token(subject, agent.subjects.underlayHostToken);
    agent.subscribe(agent.subjects.underlay("agent-1", "*", "*"), v1.HostHeartbeat, (m, subject) => void delivered.push(`${m.hostId}->${hostOf(subject)}`), { owner: hostOf });
    await agent.flush();
    const set = await addFaultRule(operator, { id: "iso-7", action: A.FAULT_ACTION_PARTITION, source: "host-7" });
    await waitApplied(set.generation);
    for (const to of ["host-7", "host-8"]) other.publish(other.subjects.underlay("agent-1", to, "agent-2"), v1.HostHeartbeat, { hostId: "host-9" }, "host-9");
    await other.flush();
    await eventually("host-8's packet", () => (delivered.includes("host-9->host-8") ? true : undefined));
    await agent.flush();
    expect(delivered).toEqual(["host-9->host-8"]);
    const reports = await operator.faultReports(200);
    expect(reports.find((r) => r.processId === "agent-1")?.identities).toEqual(expect.arrayContaining(["host-7", "host-8"]));
    await waitApplied((await clearFaultRules(operator)).generation);
    other.publish(other.subjects.underlay("agent-1", "host-7", "agent-2"), v1.HostHeartbeat, { hostId: "host-9" }, "host-9");
    await eventually("host-7's packet after healing", () => (delivered.includes("host-9->host-7") ? true : undefined));
    await other.close();
  });

  it("fault hooks: two runs with the same seed drop the same messages; another seed drops others", async () => {
    const run = async (seed: number): Promise<number[]> => {
      const sender = await bus(`run-${seed}-a`, "host-agent", seed);
      const receiver = await bus(`run-${seed}-b`, "controller", seed);
      const got: number[] = [];
      receiver.subscribe("simdc.evt.host.host-1.heartbeat", v1.HostHeartbeat, (beat) => void got.push(beat.seq));
      await receiver.flush();
      for (let seq = 1; seq <= 300; seq++) sender.publish("simdc.evt.host.host-1.heartbeat", v1.HostHeartbeat, { hostId: "host-1", seq }, "host-1");
      await sender.flush();
      await receiver.flush();
      await Promise.all([sender.close(), receiver.close()]);
      return got;
    };
    const set = await addFaultRule(operator, { id: "lossy", action: A.FAULT_ACTION_DROP, subject: "simdc.evt.host.host-1.heartbeat", percent: 50 });
    await waitApplied(set.generation);
    const first = await run(11);
    const again = await run(11);
    const other = await run(12);
    expect(first.length).toBeGreaterThan(100);
    expect(first.length).toBeLessThan(200);
    expect(again).toEqual(first);
    expect(other).not.toEqual(first);
    await waitApplied((await clearFaultRules(operator)).generation);
  });

  it("fault hooks: malformed rules and unknown ids are refused and change nothing", async () => {
    const before = await readFaultRules(operator);
    await expect(addFaultRule(operator, { id: "x", action: A.FAULT_ACTION_PARTITION })).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
    await expect(addFaultRule(operator, { id: "x", action: A.FAULT_ACTION_DROP, subject: "a..b" })).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
    await expect(clearFaultRules(operator, "nope")).rejects.toMatchObject({ code: "NOT_FOUND" });
    expect(await readFaultRules(operator)).toEqual(before);
  });
});
