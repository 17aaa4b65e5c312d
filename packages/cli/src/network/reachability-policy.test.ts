// The reachability policy on a small world worked out by hand: one network
// of each mode, an endpoint, a security group.

import { describe, expect, it } from "vitest";
import { simdc } from "@simdc/proto";
import { policyAllows, type Guest, type PolicyWorld } from "./reachability-policy.js";

import v1 = simdc.v1;

const world: PolicyWorld = {
  modeOf: (id) => ({ lan: v1.NetworkMode.NETWORK_MODE_BRIDGE, home: v1.NetworkMode.NETWORK_MODE_NAT, lab: v1.NetworkMode.NETWORK_MODE_HOST_ONLY })[id],
  routerOf: (id) => (id === "lab" || id === "lab2" ? "r" : undefined),
  securityGroup: (id) => (id === "ping-from-lan" ? { id, rules: [{ protocol: v1.SecurityProtocol.SECURITY_PROTOCOL_ICMP, remoteCidr: "10.1.0.0/24" }] } : id === "web" ? { id, rules: [{ protocol: v1.SecurityProtocol.SECURITY_PROTOCOL_TCP, portMin: 80, portMax: 80 }] } : undefined),
};
const vm = (id: string, ...nics: [string, string, string[]?][]): Guest => ({ kind: "vm", id, nics: nics.map(([network, ip, securityGroups = []]) => ({ network, ip, securityGroups })) });
const l1 = vm("l1", ["lan", "10.1.0.2"]);
const l2 = vm("l2", ["lan", "10.1.0.3", ["ping-from-lan"]]);
const l3 = vm("l3", ["lan", "10.1.0.4", ["web"]]);
const n1 = vm("n1", ["home", "10.2.0.2"]);
const o1 = vm("o1", ["lab", "10.3.0.2"]);
const both = vm("both", ["lab", "10.3.0.3"], ["home", "10.2.0.3"]);
const www: Guest = { kind: "endpoint", id: "www", ip: "198.18.128.1" };
const dns: Guest = { kind: "endpoint", id: "dns", ip: "198.18.128.2" };

describe("reachability policy", () => {
  it("policy: each mode's reach to and from the outside, networks apart, security groups by source and protocol", () => {
    const allows = (from: Guest, to: Guest, ip?: string) => policyAllows(from, to, ip ?? (to.kind === "endpoint" ? to.ip : to.nics[0]!.ip), world);
    // The outside reaches bridge NICs only, and itself.
    expect([allows(www, l1), allows(www, n1), allows(www, o1), allows(www, dns)]).toEqual([true, false, false, true]);
    // Bridge and NAT VMs reach the outside; host-only ones do not; lab is on router r, so both's default route is its lab NIC.
    expect([allows(l1, www), allows(n1, www), allows(o1, www), allows(both, www)]).toEqual([true, true, false, false]);
    // Networks stay apart, whatever their mode.
    expect([allows(l1, n1), allows(n1, l1), allows(o1, both, "10.3.0.3"), allows(o1, both, "10.2.0.3")]).toEqual([false, false, true, false]);
    // A group admitting ICMP from lan: l1 gets in, the outside does not; a TCP-only group admits no echo.
    expect([allows(l1, l2), allows(www, l2), allows(l1, l3), allows(l2, l1)]).toEqual([true, false, false, true]);
    // lab and lab2 share router r: host-only, yet routed to each other; not to the outside, and nothing else routes to them.
    const p1 = vm("p1", ["lab2", "10.4.0.2"]);
    expect([allows(o1, p1), allows(p1, o1), allows(p1, www), allows(l1, p1), allows(www, p1)]).toEqual([true, true, false, false, false]);
    // A VM's default route is its first NIC with a router: both's lab NIC (on r) comes first, so it reaches lab2 but not the outside.
    const both2 = vm("both2", ["lab", "10.3.0.4"], ["home", "10.2.0.4"]);
    expect([allows(both2, p1), allows(both2, www)]).toEqual([true, false]);
    // An address the target does not hold is never allowed.
    expect(allows(l1, l2, "10.1.0.99")).toBe(false);
  });
});
