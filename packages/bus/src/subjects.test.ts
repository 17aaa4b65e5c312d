// Proves that every subject is built from the prefix and that ids which would
// break a subject (dots, wildcards, spaces) or a path are refused.

import { describe, expect, it } from "vitest";
import { Subjects } from "./subjects.js";

describe("subjects", () => {
  it("subjects: builds each kind from the prefix", () => {
    const s = new Subjects("lab.dc2");
    expect(s.api("ComputeService", "CreateVm")).toBe("lab.dc2.api.v1.ComputeService.CreateVm");
    expect(s.apiById("HostService", "RegisterHost", "host-3")).toBe("lab.dc2.api.v1.HostService.RegisterHost.host-3");
    expect(s.host("agent-1", "host-3", "GetHostState")).toBe("lab.dc2.host.agent-1.host-3.GetHostState");
    expect(s.host("agent-1", "*", "GetHostState")).toBe("lab.dc2.host.agent-1.*.GetHostState");
    expect(s.underlay("agent-1", "host-3", "agent-2")).toBe("lab.dc2.dp.agent-1.host-3.agent-2");
    expect(s.underlay("agent-1", "*", "*")).toBe("lab.dc2.dp.agent-1.*.*");
    expect(s.underlayCredit("agent-1", "agent-2")).toBe("lab.dc2.dp.agent-1.agent-2");
    expect(s.underlayCredit("agent-1", "*")).toBe("lab.dc2.dp.agent-1.*");
    expect(s.san("san-1", "ReadBlocks")).toBe("lab.dc2.san.san-1.ReadBlocks");
    expect(s.event("host", "host-3", "heartbeat")).toBe("lab.dc2.evt.host.host-3.heartbeat");
    expect(s.event("host", "*", "heartbeat")).toBe("lab.dc2.evt.host.*.heartbeat");
    expect(s.bucket("vms")).toBe("lab-dc2-vms");
  });

  it.each(["host.1", "h*", ">", "a b", "../x", "", "UPPER", "-lead", "x".repeat(64)])(
    "subjects: refuses the id %j",
    (id) => {
      expect(() => new Subjects().host("agent-1", id, "GetHostState")).toThrow(/INVALID_ARGUMENT|not a valid name/);
      expect(() => new Subjects().host(id, "host-1", "GetHostState")).toThrow(/INVALID_ARGUMENT|not a valid name/);
    },
  );

  it("subjects: the token positions name the ids in the subjects the servers subscribe to", () => {
    const s = new Subjects("lab.dc2");
    expect(Subjects.token(s.host("agent-1", "host-3", "GetHostState"), s.hostIdToken)).toBe("host-3");
    expect(Subjects.token(s.underlay("agent-1", "host-9", "agent-4"), s.underlayHostToken)).toBe("host-9");
    expect(Subjects.token(s.underlay("agent-1", "host-9", "agent-4"), s.underlaySenderToken)).toBe("agent-4");
    expect(Subjects.token(s.underlayCredit("agent-1", "agent-4"), s.underlayCreditorToken)).toBe("agent-4");
    expect(Subjects.token(s.event("host", "host-7", "heartbeat"), s.eventIdToken)).toBe("host-7");
    expect(Subjects.token("a.b", 5)).toBe("");
  });

  it.each(["", "a..b", "a.*", "a.>", "a b"])("subjects: refuses the prefix %j", (prefix) => {
    expect(() => new Subjects(prefix)).toThrow(/subject prefix/);
  });
});
