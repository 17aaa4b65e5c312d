// The SDN compiler against tables worked out by hand: two networks over
// three hosts, what each host gets (only its networks' flows, its ports
// numbered from 1, tunnels from 0xf000 to the hosts it shares a network
// with), and that a host with no port gets no section at all.

import { describe, expect, it } from "vitest";
import { simdc } from "@simdc/proto";
import type { LogicalPort } from "../network/logical-ports.js";
import { compileHostNetwork, groupAdmissions, portRangeMatches, type NetworkView } from "./host-network.js";

import v1 = simdc.v1;

const networks: Record<string, v1.INetwork> = {
  blue: { id: "blue", mode: v1.NetworkMode.NETWORK_MODE_HOST_ONLY, segmentId: 1, subnets: [{ cidr: "10.1.0.0/24", gateway: "10.1.0.1" }] },
  red: { id: "red", mode: v1.NetworkMode.NETWORK_MODE_HOST_ONLY, segmentId: 2, subnets: [{ cidr: "10.2.0.0/16", gateway: "10.2.0.1" }] },
};

const port = (vmId: string, hostId: string, networkId: string, mac: string, ip: string, ofport = 0, securityGroups: string[] = []): LogicalPort => ({ vmId, index: 0, hostId, networkId, mac, ip, ofport, securityGroups });

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
  networks: () => Object.values(networks),
  endpoints: () => [],
  uplinkOf: () => "",
  routerOf: () => undefined,
};

describe("sdn compiler", () => {
  it("compiler: a host gets its ports, tunnels to the hosts it shares a network with, and exactly these flows", () => {
    const h1 = compileHostNetwork("h1", view)!;
    expect(h1.ports.map((p) => [p.ofport, p.vmId, p.networkId, p.segmentId, p.mac, p.ip, p.prefixLength, p.gateway, p.leaseS])).toEqual([
      // Host-only networks on no router: no default route for their guests.
      [1, "a", "blue", 1, "02:00:00:00:00:0a", "10.1.0.2", 24, "", 3600],
      [2, "c", "red", 2, "02:00:00:00:00:0c", "10.2.0.2", 16, "", 3600],
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

  it("compiler: a NIC in security groups gets its outbound IP committed in its zone, its inbound IP through conntrack, and names its groups; each group's admissions compile once, for every host", () => {
    const guarded = [port("a", "h1", "blue", "02:00:00:00:00:0a", "10.1.0.2", 1, ["web", "ops", "gone"]), port("b", "h2", "blue", "02:00:00:00:00:0b", "10.1.0.3", 1)];
    const guardedView: NetworkView = { ...view, portsOnHost: (h) => guarded.filter((p) => p.hostId === h), portsOnNetwork: () => guarded };
    const h1 = compileHostNetwork("h1", guardedView)!;
    // The rules' admissions are not in the host's section: the host expands its groups' documents (admissionFlow).
    expect(h1.flows.filter((f) => f.includes("ct(") || f.startsWith("table=35"))).toEqual([
      "table=0,priority=110,in_port=1,dl_src=02:00:00:00:00:0a,ip actions=ct(commit,zone=1),set_field:0x1->metadata,goto_table:10",
      "table=35,priority=200,reg6=1,ct_state=+trk+est actions=output:1",
      "table=35,priority=200,reg6=1,ct_state=+trk+rel actions=output:1",
      "table=20,priority=110,metadata=0x1,dl_dst=02:00:00:00:00:0a,ip actions=set_field:1->reg6,ct(zone=1,table=35)",
      "table=30,priority=110,metadata=0x1,dl_dst=02:00:00:00:00:0a,ip actions=set_field:1->reg6,ct(zone=1,table=35)",
      "table=35,priority=0 actions=drop",
    ]);
    expect(h1.ports.map((p) => p.securityGroups)).toEqual([["web", "ops", "gone"]]);
    // The unguarded NIC on h2 gets no conntrack at all.
    const h2 = compileHostNetwork("h2", guardedView)!;
    expect(h2.flows.some((f) => f.includes("ct(") || f.startsWith("table=35"))).toBe(false);
    expect(h2.ports[0]!.securityGroups).toEqual([]);
    // 80-81 is one masked match; a rule held twice is there once; a group with no rules admits nothing.
    const web = { id: "web", rules: [{ protocol: v1.SecurityProtocol.SECURITY_PROTOCOL_TCP, portMin: 80, portMax: 81 }, { protocol: v1.SecurityProtocol.SECURITY_PROTOCOL_ICMP, remoteCidr: "10.1.0.0/24" }, { protocol: v1.SecurityProtocol.SECURITY_PROTOCOL_ICMP, remoteCidr: "10.1.0.0/24" }] };
    expect(groupAdmissions(web)).toEqual(["tcp,tp_dst=0x50/0xfffe", "icmp,nw_src=10.1.0.0/24"]);
    expect(groupAdmissions({ id: "none", rules: [] })).toEqual([]);
    expect(groupAdmissions({ id: "any", rules: [{ protocol: v1.SecurityProtocol.SECURITY_PROTOCOL_ANY }, { protocol: v1.SecurityProtocol.SECURITY_PROTOCOL_UDP, portMin: 53 }] })).toEqual(["ip", "udp,tp_dst=53"]);
  });

  it("compiler: a port range becomes the fewest aligned value/mask matches that cover exactly it", () => {
    expect(portRangeMatches(80, 80)).toEqual(["80"]);
    expect(portRangeMatches(80, 81)).toEqual(["0x50/0xfffe"]);
    expect(portRangeMatches(1, 65535)).toHaveLength(16);
    expect(portRangeMatches(1000, 1999)).toEqual(["0x3e8/0xfff8", "0x3f0/0xfff0", "0x400/0xfe00", "0x600/0xff00", "0x700/0xff80", "0x780/0xffc0", "0x7c0/0xfff0"]);
    // Every port in and around a range: matched by one of its pairs exactly when inside.
    for (const [min, max] of [[1, 65535], [1000, 1999], [5, 6], [32768, 40000]] as const) {
      const pairs = portRangeMatches(min, max).map((m) => (m.includes("/") ? m.split("/").map(Number) : [Number(m), 0xffff]) as [number, number]);
      for (const p of [min - 1, min, min + 1, max - 1, max, max + 1, (min + max) >> 1]) {
        if (p < 0 || p > 65535) continue;
        expect(pairs.some(([v, m]) => (p & m) === v)).toBe(p >= min && p <= max);
      }
    }
  });

  it("compiler: the outside: a bridge network routes to the endpoints as it is, a NAT network through conntrack as its host's uplink address, a host-only one not at all; the endpoints' host routes back into bridge networks only", () => {
    const modes: Record<string, v1.INetwork> = {
      lan: { id: "lan", mode: v1.NetworkMode.NETWORK_MODE_BRIDGE, segmentId: 1, subnets: [{ cidr: "10.1.0.0/24", gateway: "10.1.0.1" }] },
      home: { id: "home", mode: v1.NetworkMode.NETWORK_MODE_NAT, segmentId: 2, subnets: [{ cidr: "10.2.0.0/24", gateway: "10.2.0.1" }] },
      lab: { id: "lab", mode: v1.NetworkMode.NETWORK_MODE_HOST_ONLY, segmentId: 3, subnets: [{ cidr: "10.3.0.0/24", gateway: "10.3.0.1" }] },
    };
    const vms = [
      port("l1", "h1", "lan", "02:00:00:00:00:11", "10.1.0.2", 1),
      port("n1", "h1", "home", "02:00:00:00:00:21", "10.2.0.2", 2),
      port("o1", "h1", "lab", "02:00:00:00:00:31", "10.3.0.2", 3),
      port("n2", "h3", "home", "02:00:00:00:00:22", "10.2.0.3", 1),
    ];
    const www = { id: "www", ip: "198.18.128.1", mac: "0a:02:c6:12:80:01", hostId: "h2", ofport: 0xe000 };
    const outside: NetworkView = {
      network: (id) => modes[id],
      networks: () => Object.values(modes),
      portsOnHost: (h) => vms.filter((p) => p.hostId === h),
      portsOnNetwork: (n) => vms.filter((p) => p.networkId === n),
      agentOf: (h) => `agent-${h}`,
          endpoints: () => [www],
      uplinkOf: (h) => ({ h1: "198.18.0.2", h2: "198.18.0.3", h3: "198.18.0.4" })[h] ?? "",
      routerOf: () => undefined,
    };
    const h1 = compileHostNetwork("h1", outside)!;
    // h1 has VMs on all three; it reaches the endpoints' host h2 and h3 (home).
    expect(h1.tunnels.map((t) => t.hostId)).toEqual(["h2", "h3"]);
    const routing = h1.flows.filter((f) => /table=2[5-7]|priority=120|0xffffff/.test(f));
    expect(routing).toEqual([
      "table=20,priority=120,metadata=0x2,dl_dst=0a:00:00:00:00:02,ip actions=goto_table:25",
      "table=25,priority=100,metadata=0x2,ip,nw_dst=198.18.0.0/16 actions=ct(commit,zone=65534,nat(src=198.18.0.2),table=26)",
      "table=27,priority=100,ct_state=+trk+est,ip,nw_dst=10.2.0.2 actions=set_field:0a:00:00:00:00:02->dl_src,set_field:02:00:00:00:00:21->dl_dst,set_field:0x2->metadata,resubmit(,30)",
      "table=27,priority=100,ct_state=+trk+rel,ip,nw_dst=10.2.0.2 actions=set_field:0a:00:00:00:00:02->dl_src,set_field:02:00:00:00:00:21->dl_dst,set_field:0x2->metadata,resubmit(,30)",
      "table=20,priority=120,metadata=0x1,dl_dst=0a:00:00:00:00:01,ip actions=goto_table:25",
      "table=25,priority=100,metadata=0x1,ip,nw_dst=198.18.128.1 actions=set_field:0a:00:00:ff:ff:ff->dl_src,set_field:0a:02:c6:12:80:01->dl_dst,set_field:0xffffff->metadata,resubmit(,20)",
      "table=0,priority=100,in_port=61440,tun_id=0xffffff actions=set_field:0xffffff->metadata,goto_table:30",
      "table=20,priority=100,metadata=0xffffff,dl_dst=0a:02:c6:12:80:01 actions=set_field:0xffffff->tun_id,output:61440",
      "table=20,priority=110,metadata=0xffffff,dl_dst=0a:01:c6:12:00:02,ip actions=ct(zone=65534,nat,table=27)",
      "table=30,priority=110,metadata=0xffffff,dl_dst=0a:01:c6:12:00:02,ip actions=ct(zone=65534,nat,table=27)",
      "table=26,priority=100,ip,nw_dst=198.18.128.1 actions=set_field:0a:01:c6:12:00:02->dl_src,set_field:0a:02:c6:12:80:01->dl_dst,set_field:0xffffff->metadata,resubmit(,20)",
      "table=20,priority=50,metadata=0xffffff,dl_dst=01:00:00:00:00:00/01:00:00:00:00:00 actions=set_field:0xffffff->tun_id,output:61440",
      "table=30,priority=50,metadata=0xffffff,dl_dst=01:00:00:00:00:00/01:00:00:00:00:00 actions=drop",
    ]);
    // The routers answer ARP for the gateways of lan and home, not of lab; lab's guests get no router by DHCP.
    expect(h1.neighbors.filter((n) => (n.mac ?? "").startsWith("0a:")).map((n) => `${n.segmentId} ${n.ip} ${n.mac}`)).toEqual(["2 10.2.0.1 0a:00:00:00:00:02", "1 10.1.0.1 0a:00:00:00:00:01"]);
    expect(h1.ports.map((p) => [p.vmId, p.gateway])).toEqual([
      ["l1", "10.1.0.1"],
      ["n1", "10.2.0.1"],
      ["o1", ""],
    ]);
    // h2 plays www: its port, the outside's router, routes back into lan (not home, not lab), and the NAT hosts' uplinks.
    const h2 = compileHostNetwork("h2", outside)!;
    expect(h2.ports.map((p) => [p.ofport, p.vmId, p.external, p.ip, p.prefixLength, p.gateway])).toEqual([[0xe000, "www", true, "198.18.128.1", 16, "198.18.0.1"]]);
    expect(h2.tunnels.map((t) => t.hostId)).toEqual(["h1", "h3"]);
    expect(h2.flows.filter((f) => f.startsWith("table=25"))).toEqual([
      "table=25,priority=100,metadata=0xffffff,ip,nw_dst=10.1.0.2 actions=set_field:0a:00:00:00:00:01->dl_src,set_field:02:00:00:00:00:11->dl_dst,set_field:0x1->metadata,resubmit(,20)",
    ]);
    expect(h2.flows).toContain("table=20,priority=100,metadata=0x1,dl_dst=02:00:00:00:00:11 actions=set_field:0x1->tun_id,output:61440");
    expect(h2.flows.some((f) => f.includes("metadata=0x2") || f.includes("metadata=0x3"))).toBe(false);
    expect(h2.neighbors.filter((n) => n.segmentId === 0xffffff).map((n) => `${n.ip} ${n.mac}`)).toEqual(["198.18.0.1 0a:00:00:ff:ff:ff", "198.18.128.1 0a:02:c6:12:80:01", "198.18.0.2 0a:01:c6:12:00:02", "198.18.0.4 0a:01:c6:12:00:04"]);
    expect(h2.flows).toContain("table=20,priority=100,metadata=0xffffff,dl_dst=0a:01:c6:12:00:04 actions=set_field:0xffffff->tun_id,output:61441");
    // h1 admits lan's traffic from the endpoints' host (the outside routed in).
    expect(h1.flows).toContain("table=0,priority=100,in_port=61440,tun_id=0x1 actions=set_field:0x1->metadata,goto_table:30");
  });

  it("compiler: a logical router: each host with a VM on one of its networks routes to the VMs of the others, holds their L2 tables, and the others' hosts admit what it routes in", () => {
    const routed: NetworkView = { ...view, routerOf: (id) => (id === "blue" || id === "red" ? { id: "r", networks: ["blue", "red"] } : undefined) };
    const h2 = compileHostNetwork("h2", routed)!;
    // h2 has b on blue; through the router it reaches red's c (h1) and d (h3).
    expect(h2.tunnels.map((t) => t.hostId)).toEqual(["h1", "h3"]);
    expect(h2.ports.map((p) => [p.vmId, p.gateway])).toEqual([["b", "10.1.0.1"]]);
    expect(h2.flows.filter((f) => f.startsWith("table=25") || f.includes("priority=120"))).toEqual([
      "table=20,priority=120,metadata=0x1,dl_dst=0a:00:00:00:00:01,ip actions=goto_table:25",
      "table=25,priority=100,metadata=0x1,ip,nw_dst=10.2.0.2 actions=set_field:0a:00:00:00:00:02->dl_src,set_field:02:00:00:00:00:0c->dl_dst,set_field:0x2->metadata,resubmit(,20)",
      "table=25,priority=100,metadata=0x1,ip,nw_dst=10.2.0.3 actions=set_field:0a:00:00:00:00:02->dl_src,set_field:02:00:00:00:00:0d->dl_dst,set_field:0x2->metadata,resubmit(,20)",
    ]);
    expect(h2.flows).toContain("table=20,priority=100,metadata=0x2,dl_dst=02:00:00:00:00:0d actions=set_field:0x2->tun_id,output:61441");
    expect(h2.neighbors.filter((n) => (n.mac ?? "").startsWith("0a:")).map((n) => `${n.segmentId} ${n.ip}`)).toEqual(["1 10.1.0.1"]);
    // h3 (d on red) admits red traffic from h2, which has no port on red but routes into it; its red broadcasts still go only to red's hosts.
    const h3 = compileHostNetwork("h3", routed)!;
    expect(h3.flows).toContain("table=0,priority=100,in_port=61441,tun_id=0x2 actions=set_field:0x2->metadata,goto_table:30");
    expect(h3.flows.find((f) => f.startsWith("table=20,priority=50,metadata=0x2"))).toBe("table=20,priority=50,metadata=0x2,dl_dst=01:00:00:00:00:00/01:00:00:00:00:00 actions=output:1,set_field:0x2->tun_id,output:61440");
    // Without the router, h2 knows nothing of red.
    expect(compileHostNetwork("h2", view)!.flows.some((f) => f.includes("metadata=0x2"))).toBe(false);
  });
});
