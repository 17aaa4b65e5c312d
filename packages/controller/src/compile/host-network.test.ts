// The SDN compiler against tables worked out by hand: two networks over
// three hosts, what each host gets (only its networks' flows, its ports
// numbered from 1, tunnels from 0xf000 to the hosts it shares a network
// with), and that a host with no port gets no section at all.

import { describe, expect, it } from "vitest";
import { simdc } from "@simdc/proto";
import type { LogicalPort } from "../network/logical-ports.js";
import { compileHostNetwork, type NetworkView } from "./host-network.js";

import v1 = simdc.v1;

const networks: Record<string, v1.INetwork> = {
  blue: { id: "blue", segmentId: 1, subnets: [{ cidr: "10.1.0.0/24", gateway: "10.1.0.1" }] },
  red: { id: "red", segmentId: 2, subnets: [{ cidr: "10.2.0.0/16", gateway: "10.2.0.1" }] },
};

const port = (vmId: string, hostId: string, networkId: string, mac: string, ip: string, ofport = 0): LogicalPort => ({ vmId, index: 0, hostId, networkId, mac, ip, ofport });

const ports: LogicalPort[] = [
  port("a", "h1", "blue", "02:00:00:00:00:0a", "10.1.0.2"),
  port("b", "h2", "blue", "02:00:00:00:00:0b", "10.1.0.3"),
  port("c", "h1", "red", "02:00:00:00:00:0c", "10.2.0.2"),
  port("d", "h3", "red", "02:00:00:00:00:0d", "10.2.0.3"),
];

const view: NetworkView = {
  network: (id) => networks[id],
  portsOnHost: (h) => ports.filter((p) => p.hostId === h),
  portsOnNetwork: (n) => ports.filter((p) => p.networkId === n),
  agentOf: (h) => (h === "h4" ? undefined : `agent-${h}`),
};

describe("sdn compiler", () => {
  it("compiler: a host gets its ports, tunnels to the hosts it shares a network with, and exactly these flows", () => {
    const h1 = compileHostNetwork("h1", view)!;
    expect(h1.ports.map((p) => [p.ofport, p.vmId, p.networkId, p.segmentId, p.mac, p.ip, p.prefixLength, p.gateway, p.leaseS])).toEqual([
      [1, "a", "blue", 1, "02:00:00:00:00:0a", "10.1.0.2", 24, "10.1.0.1", 3600],
      [2, "c", "red", 2, "02:00:00:00:00:0c", "10.2.0.2", 16, "10.2.0.1", 3600],
    ]);
    expect(h1.tunnels.map((t) => [t.ofport, t.hostId, t.agentId])).toEqual([
      [0xf000, "h2", "agent-h2"],
      [0xf001, "h3", "agent-h3"],
    ]);
    expect(h1.flows).toEqual([
      // blue: a on this host, b behind the tunnel to h2.
      "table=0,priority=100,in_port=1,dl_src=02:00:00:00:00:0a actions=set_field:0x1->metadata,goto_table:10",
      "table=0,priority=100,in_port=61440,tun_id=0x1 actions=set_field:0x1->metadata,goto_table:30",
      "table=10,priority=110,metadata=0x1,udp,tp_src=68,tp_dst=67 actions=controller",
      "table=10,priority=110,metadata=0x1,arp,arp_op=1 actions=controller",
      "table=20,priority=100,metadata=0x1,dl_dst=02:00:00:00:00:0a actions=output:1",
      "table=30,priority=100,metadata=0x1,dl_dst=02:00:00:00:00:0a actions=output:1",
      "table=20,priority=100,metadata=0x1,dl_dst=02:00:00:00:00:0b actions=set_field:0x1->tun_id,output:61440",
      "table=20,priority=50,metadata=0x1,dl_dst=01:00:00:00:00:00/01:00:00:00:00:00 actions=output:1,set_field:0x1->tun_id,output:61440",
      "table=30,priority=50,metadata=0x1,dl_dst=01:00:00:00:00:00/01:00:00:00:00:00 actions=output:1",
      // red: c on this host, d behind the tunnel to h3.
      "table=0,priority=100,in_port=2,dl_src=02:00:00:00:00:0c actions=set_field:0x2->metadata,goto_table:10",
      "table=0,priority=100,in_port=61441,tun_id=0x2 actions=set_field:0x2->metadata,goto_table:30",
      "table=10,priority=110,metadata=0x2,udp,tp_src=68,tp_dst=67 actions=controller",
      "table=10,priority=110,metadata=0x2,arp,arp_op=1 actions=controller",
      "table=20,priority=100,metadata=0x2,dl_dst=02:00:00:00:00:0c actions=output:2",
      "table=30,priority=100,metadata=0x2,dl_dst=02:00:00:00:00:0c actions=output:2",
      "table=20,priority=100,metadata=0x2,dl_dst=02:00:00:00:00:0d actions=set_field:0x2->tun_id,output:61441",
      "table=20,priority=50,metadata=0x2,dl_dst=01:00:00:00:00:00/01:00:00:00:00:00 actions=output:2,set_field:0x2->tun_id,output:61441",
      "table=30,priority=50,metadata=0x2,dl_dst=01:00:00:00:00:00/01:00:00:00:00:00 actions=output:2",
      "table=10,priority=0 actions=goto_table:20",
    ]);
    expect(h1.neighbors.map((n) => `${n.segmentId} ${n.ip} ${n.mac}`)).toEqual([
      "1 10.1.0.2 02:00:00:00:00:0a",
      "1 10.1.0.3 02:00:00:00:00:0b",
      "2 10.2.0.2 02:00:00:00:00:0c",
      "2 10.2.0.3 02:00:00:00:00:0d",
    ]);
  });

  it("compiler: a host with a port on one network gets nothing of the others", () => {
    const h3 = compileHostNetwork("h3", view)!;
    expect(h3.tunnels.map((t) => t.hostId)).toEqual(["h1"]);
    expect(h3.flows.some((f) => f.includes("metadata=0x1"))).toBe(false);
    expect(h3.neighbors.every((n) => n.segmentId === 2)).toBe(true);
    expect(h3.flows.filter((f) => f.startsWith("table=20,priority=100"))).toEqual([
      "table=20,priority=100,metadata=0x2,dl_dst=02:00:00:00:00:0c actions=set_field:0x2->tun_id,output:61440",
      "table=20,priority=100,metadata=0x2,dl_dst=02:00:00:00:00:0d actions=output:1",
    ]);
  });

  it("compiler: a reactive network's known-MAC flows of table 20 are left to packet-ins; the table misses go to the controller", () => {
    const reactive: NetworkView = { ...view, network: (id) => (id === "blue" ? { ...networks["blue"], flowSetup: v1.FlowSetup.FLOW_SETUP_REACTIVE } : networks[id]) };
    const h1 = compileHostNetwork("h1", reactive)!;
    const blue20 = h1.flows.filter((f) => f.startsWith("table=20") && f.includes("metadata=0x1"));
    expect(blue20).toEqual([
      "table=20,priority=50,metadata=0x1,dl_dst=01:00:00:00:00:00/01:00:00:00:00:00 actions=output:1,set_field:0x1->tun_id,output:61440",
      "table=20,priority=1,metadata=0x1 actions=controller(id=1)",
    ]);
    // Delivery from tunnels stays proactive, and red is untouched.
    expect(h1.flows).toContain("table=30,priority=100,metadata=0x1,dl_dst=02:00:00:00:00:0a actions=output:1");
    expect(h1.flows.filter((f) => f.includes("metadata=0x2"))).toEqual(compileHostNetwork("h1", view)!.flows.filter((f) => f.includes("metadata=0x2")));
    // What the controller answers packet-ins from: the proactive form.
    expect(compileHostNetwork("h1", reactive, { allProactive: true })!.flows.filter((f) => !f.includes("controller(id=1)"))).toEqual(compileHostNetwork("h1", view)!.flows);
  });

  it("compiler: each NIC keeps the port the controller gave it, so a VM joining a host changes no other VM's port", () => {
    const kept: LogicalPort[] = [port("a", "h1", "blue", "02:00:00:00:00:0a", "10.1.0.2", 5), port("c", "h1", "red", "02:00:00:00:00:0c", "10.2.0.2", 2), port("n", "h1", "blue", "02:00:00:00:00:0e", "10.1.0.9")];
    const h1 = compileHostNetwork("h1", { ...view, portsOnHost: () => kept, portsOnNetwork: (id) => kept.filter((p) => p.networkId === id) })!;
    expect(h1.ports.map((p) => [p.vmId, p.ofport])).toEqual([
      ["n", 1],
      ["c", 2],
      ["a", 5],
    ]);
    expect(h1.flows).toContain("table=0,priority=100,in_port=5,dl_src=02:00:00:00:00:0a actions=set_field:0x1->metadata,goto_table:10");
  });

  it("compiler: a host with no port gets no section; a port on a deleted network or a host with no agent yet is left out", () => {
    expect(compileHostNetwork("h9", view)).toBeUndefined();
    const orphan: NetworkView = { ...view, network: (id) => (id === "red" ? undefined : networks[id]) };
    expect(compileHostNetwork("h3", orphan)).toBeUndefined();
    const unregistered: NetworkView = { ...view, agentOf: (h) => (h === "h2" ? undefined : `agent-${h}`) };
    const h1 = compileHostNetwork("h1", unregistered)!;
    expect(h1.tunnels.map((t) => t.hostId)).toEqual(["h3"]);
    expect(h1.flows.some((f) => f.includes("02:00:00:00:00:0b"))).toBe(false);
  });
});
