// Proves the fault rule matcher on plain data: subject patterns, one-way
// drops, symmetric partitions, delays within their bounds, copies, percent
// sampling from a seeded source, and refusal of malformed rules.

import { describe, expect, it } from "vitest";
import { simdc } from "@simdc/proto";
import { checkFaultRule, faultRulePhase, FaultRules, subjectMatches } from "./faults.js";

import v1 = simdc.v1;
const A = v1.FaultAction;

describe("faults", () => {
  it("faults: subject patterns follow NATS wildcards", () => {
    const p = (s: string): string[] => s.split(".");
    expect(subjectMatches(p("simdc.evt.host.*.heartbeat"), "simdc.evt.host.host-1.heartbeat")).toBe(true);
    expect(subjectMatches(p("simdc.evt.host.*.heartbeat"), "simdc.evt.host.host-1.status")).toBe(false);
    expect(subjectMatches(p("simdc.>"), "simdc.api.v1.ComputeService.GetVm")).toBe(true);
    expect(subjectMatches(p("simdc.>"), "simdc")).toBe(false);
    expect(subjectMatches(p("simdc.*"), "simdc.a.b")).toBe(false);
  });

  it("faults: a rule with a start and an end acts only between them, by the simulated clock it is given", () => {
    let now = 1_000;
    const rules = new FaultRules(1, [{ id: "w", action: A.FAULT_ACTION_DROP, source: "host-1", startsAtMs: 2_000, endsAtMs: 5_000 }], 0, () => now);
    const at = (ms: number): string => {
      now = ms;
      return rules.decide("x", ["host-1"], ["controller"]).kind;
    };
    expect([at(1_999), at(2_000), at(4_999), at(5_000), at(9_000)]).toEqual(["deliver", "drop", "drop", "deliver", "deliver"]);
    const rule = checkFaultRule({ id: "w", action: A.FAULT_ACTION_DROP, startsAtMs: 2_000, endsAtMs: 5_000 });
    expect([faultRulePhase(rule, 1_000), faultRulePhase(rule, 3_000), faultRulePhase(rule, 5_000)]).toEqual(["pending", "active", "ended"]);
    // An end alone: in force from now until then.
    const open = new FaultRules(1, [{ id: "e", action: A.FAULT_ACTION_DROP, endsAtMs: 3_000 }], 0, () => now);
    now = 2_000;
    expect(open.decide("x", [], []).kind).toBe("drop");
    now = 3_000;
    expect(open.decide("x", [], []).kind).toBe("deliver");
    expect(() => checkFaultRule({ id: "bad", action: A.FAULT_ACTION_DROP, startsAtMs: 5_000, endsAtMs: 5_000 })).toThrow(/end after it starts/);
    expect(() => checkFaultRule({ id: "bad", action: A.FAULT_ACTION_DROP, startsAtMs: -1 })).toThrow(/must be times/);
  });

  it("faults: a drop is one-way from source to destination", () => {
    const rules = new FaultRules(1, [{ id: "r1", action: A.FAULT_ACTION_DROP, source: "host-3", destination: "controller" }]);
    expect(rules.decide("x", ["host-3", "agent-1"], ["controller-1", "controller"]).kind).toBe("drop");
    expect(rules.decide("x", ["controller-1", "controller"], ["host-3"]).kind).toBe("deliver");
    expect(rules.decide("x", ["host-2"], ["controller"]).kind).toBe("deliver");
  });

  it("faults: a partition drops both ways, and without destination cuts the source off from everyone", () => {
    const pair = new FaultRules(1, [{ id: "p", action: A.FAULT_ACTION_PARTITION, source: "host-3", destination: "san-1" }]);
    expect(pair.decide("x", ["host-3"], ["san-1"]).kind).toBe("drop");
    expect(pair.decide("x", ["san-1"], ["host-3"]).kind).toBe("drop");
    expect(pair.decide("x", ["host-3"], ["controller"]).kind).toBe("deliver");
    const alone = new FaultRules(1, [{ id: "p", action: A.FAULT_ACTION_PARTITION, source: "host-3" }]);
    expect(alone.decide("x", ["controller"], ["host-3"]).kind).toBe("drop");
    expect(alone.decide("x", ["host-3"], ["san-2"]).kind).toBe("drop");
    expect(alone.decide("x", ["host-2"], ["san-2"]).kind).toBe("deliver");
  });

  it("faults: delays stay within delay + jitter, spread by message", () => {
    const rules = new FaultRules(1, [{ id: "d", action: A.FAULT_ACTION_DELAY, delayMs: 100, jitterMs: 50 }], 42);
    const delays = Array.from({ length: 500 }, (_, seq) => {
      const v = rules.decide("x", ["host-1"], [], { sender: "host-1", seq });
      return v.kind === "delay" ? v.delayMs : -1;
    });
    expect(Math.min(...delays)).toBeGreaterThanOrEqual(100);
    expect(Math.max(...delays)).toBeLessThanOrEqual(150);
    expect(new Set(delays).size).toBeGreaterThan(20);
  });

  it("faults: percent samples matching messages", () => {
    const rules = new FaultRules(1, [{ id: "d", action: A.FAULT_ACTION_DROP, percent: 30 }], 7);
    const dropped = Array.from({ length: 2000 }, (_, seq) => rules.decide("x", [], [], { sender: "host-1", seq })).filter((v) => v.kind === "drop").length;
    expect(dropped).toBeGreaterThan(500);
    expect(dropped).toBeLessThan(700);
  });

  it("faults: the same seed decides the same on the same messages, whatever order they come in", () => {
    const rule = { id: "lossy", action: A.FAULT_ACTION_DROP, percent: 50 };
    const messages = Array.from({ length: 400 }, (_, i) => ({ sender: `host-${i % 7}`, seq: Math.floor(i / 7), subject: `simdc.evt.host.host-${i % 7}.heartbeat` }));
    const verdicts = (seed: number, order: typeof messages): Map<string, string> =>
      new Map(order.map((m) => [`${m.sender}/${m.seq}`, new FaultRules(1, [rule], seed).decide(m.subject, [m.sender], [], m).kind]));
    const first = verdicts(1234, messages);
    const rerun = verdicts(1234, [...messages].reverse());
    expect(rerun).toEqual(first);
    const otherSeed = verdicts(99, messages);
    expect([...otherSeed].filter(([k, v]) => first.get(k) !== v).length).toBeGreaterThan(100);
    // A reply is keyed by its request but decided apart from it.
    const r = new FaultRules(1, [rule], 1234);
    const legs = Array.from({ length: 200 }, (_, seq) => [r.decide("s", [], [], { sender: "a", seq }).kind, r.decide("s", [], [], { sender: "a", seq }, "reply").kind]);
    expect(legs.some(([request, reply]) => request !== reply)).toBe(true);
  });

  it("faults: duplicates carry their copies, the first matching rule wins", () => {
    const rules = new FaultRules(1, [
      { id: "a", action: A.FAULT_ACTION_DUPLICATE, subject: "simdc.evt.>", copies: 2 },
      { id: "b", action: A.FAULT_ACTION_DROP },
    ]);
    expect(rules.decide("simdc.evt.vm.vm-1.status", [], [])).toEqual({ kind: "duplicate", copies: 2, ruleId: "a" });
    expect(rules.decide("simdc.api.v1.X.Y", [], [])).toEqual({ kind: "drop", ruleId: "b" });
  });

  it.each([
    [{ id: "r", action: 0 }, /action/],
    [{ id: "r", action: 99 }, /action/],
    [{ id: "", action: A.FAULT_ACTION_DROP }, /rule id/],
    [{ id: "r", action: A.FAULT_ACTION_DROP, subject: "a..b" }, /subject/],
    [{ id: "r", action: A.FAULT_ACTION_DROP, subject: "a.>.b" }, /subject/],
    [{ id: "r", action: A.FAULT_ACTION_DROP, source: "h.1" }, /source/],
    [{ id: "r", action: A.FAULT_ACTION_PARTITION }, /partition needs a source/],
    [{ id: "r", action: A.FAULT_ACTION_DELAY }, /delay needs/],
    [{ id: "r", action: A.FAULT_ACTION_DELAY, delayMs: 60_000, jitterMs: 1 }, /at most 60000/],
    [{ id: "r", action: A.FAULT_ACTION_DROP, percent: 101 }, /percent/],
    [{ id: "r", action: A.FAULT_ACTION_DUPLICATE, copies: 11 }, /copies/],
  ])("faults: refuses the rule %j", (rule, error) => {
    expect(() => checkFaultRule(rule)).toThrow(error);
  });
});
