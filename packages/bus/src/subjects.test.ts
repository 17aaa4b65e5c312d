// Proves that every subject is built from the prefix and that ids which would
// break a subject (dots, wildcards, spaces) or a path are refused.

import { describe, expect, it } from "vitest";
import { Subjects } from "./subjects.js";

describe("subjects", () => {
  it("subjects: builds each kind from the prefix", () => {
    const s = new Subjects("lab.dc2");
    expect(s.api("ComputeService", "CreateVm")).toBe("lab.dc2.api.v1.ComputeService.CreateVm");
    expect(s.host("host-3", "ApplyVm")).toBe("lab.dc2.host.host-3.ApplyVm");
    expect(s.san("san-1", "ReadBlocks")).toBe("lab.dc2.san.san-1.ReadBlocks");
    expect(s.event("host", "host-3", "heartbeat")).toBe("lab.dc2.evt.host.host-3.heartbeat");
    expect(s.event("host", "*", "heartbeat")).toBe("lab.dc2.evt.host.*.heartbeat");
    expect(s.bucket("vms")).toBe("lab-dc2-vms");
  });

  it.each(["host.1", "h*", ">", "a b", "../x", "", "UPPER", "-lead", "x".repeat(64)])(
    "subjects: refuses the id %j",
    (id) => {
      expect(() => new Subjects().host(id, "ApplyVm")).toThrow(/INVALID_ARGUMENT|not a valid name/);
    },
  );

  it.each(["", "a..b", "a.*", "a.>", "a b"])("subjects: refuses the prefix %j", (prefix) => {
    expect(() => new Subjects(prefix)).toThrow(/subject prefix/);
  });
});
