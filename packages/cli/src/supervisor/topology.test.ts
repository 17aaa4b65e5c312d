// Proves the local datacenter's layout: names, host spread over agents, and
// refusal of impossible counts.

import { describe, expect, it } from "vitest";
import { planTopology } from "./topology.js";

const base = { dataDir: "/d", pcpus: 8, memoryMib: 1024, sanCapacityMib: 100 };

describe("topology", () => {
  it("topology: spreads hosts over agents, the last one taking the rest", () => {
    const plan = planTopology({ ...base, hosts: 5, sanNodes: 2, hostsPerAgent: 2 });
    expect(plan.map((p) => p.name)).toEqual(["controller", "san-1", "san-2", "agent-1", "agent-2", "agent-3"]);
    expect(plan.filter((p) => p.role === "host-agent").map((p) => p.hostIds)).toEqual([
      ["host-1", "host-2"],
      ["host-3", "host-4"],
      ["host-5"],
    ]);
    expect(plan[1]?.args).toEqual(["--node-id", "san-1", "--data-dir", "/d/san/san-1", "--capacity-mib", "100"]);
  });

  it.each([
    [{ hosts: 0, sanNodes: 1, hostsPerAgent: 1 }, /--hosts/],
    [{ hosts: 2, sanNodes: 0, hostsPerAgent: 1 }, /--san/],
    [{ hosts: 2, sanNodes: 1, hostsPerAgent: 3 }, /--hosts-per-agent/],
  ])("topology: refuses %j", (counts, error) => {
    expect(() => planTopology({ ...base, ...counts })).toThrow(error);
  });
});
