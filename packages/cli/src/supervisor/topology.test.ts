// Proves the local datacenter's layout: names, host spread over agents, and
// refusal of impossible counts.

import { describe, expect, it } from "vitest";
import { planTopology } from "./topology.js";

const base = { dataDir: "/d", pcpus: 8, memoryMib: 1024, sanCapacityMib: 100, controllers: 1 };

describe("topology", () => {
  it("topology: spreads hosts over agents, the last one taking the rest", () => {
    const plan = planTopology({ ...base, hosts: 5, sanNodes: 2, hostsPerAgent: 2 });
    expect(plan.map((p) => p.name)).toEqual(["controller-1", "san-1", "san-2", "agent-1", "agent-2", "agent-3"]);
    expect(plan.filter((p) => p.role === "host-agent").map((p) => p.hostIds)).toEqual([
      ["host-1", "host-2"],
      ["host-3", "host-4"],
      ["host-5"],
    ]);
    expect(plan[1]?.args).toEqual(["--node-id", "san-1", "--data-dir", "/d/san/san-1", "--capacity-mib", "100"]);
  });

  it("topology: 10,000 hosts in agents of 1,000, and two controllers with their own ids", () => {
    const plan = planTopology({ ...base, hosts: 10_000, sanNodes: 2, hostsPerAgent: 1000, controllers: 2 });
    const agents = plan.filter((p) => p.role === "host-agent");
    expect(agents).toHaveLength(10);
    expect(agents.every((a) => a.hostIds.length === 1000)).toBe(true);
    expect(agents[9]?.hostIds.at(-1)).toBe("host-10000");
    expect(plan.filter((p) => p.role === "controller").map((p) => [p.name, p.args])).toEqual([
      ["controller-1", ["--controller-id", "controller-1"]],
      ["controller-2", ["--controller-id", "controller-2"]],
    ]);
  });

  it.each([
    [{ hosts: 0, sanNodes: 1, hostsPerAgent: 1 }, /--hosts/],
    [{ hosts: 2, sanNodes: 0, hostsPerAgent: 1 }, /--san/],
    [{ hosts: 2, sanNodes: 1, hostsPerAgent: 3 }, /--hosts-per-agent/],
    [{ hosts: 10_001, sanNodes: 1, hostsPerAgent: 1000 }, /--hosts must be 1-10000/],
    [{ hosts: 5000, sanNodes: 1, hostsPerAgent: 1001 }, /--hosts-per-agent must be 1-1000/],
    [{ hosts: 2, sanNodes: 1, hostsPerAgent: 1, controllers: 4 }, /--controllers/],
  ])("topology: refuses %j", (counts, error) => {
    expect(() => planTopology({ ...base, ...counts })).toThrow(error);
  });
});
