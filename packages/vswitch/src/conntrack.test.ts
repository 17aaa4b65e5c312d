// Proves connection tracking and NAT through the switch, on hand-worked cases
// of OVS's ct semantics and Linux's conntrack: a stateful firewall, state
// changes as replies arrive, timeouts, ICMP echoes, protocols without ports,
// SNAT port choice (the REFERENCES oracle and the forced remap), reverse NAT,
// DNAT, zones, a full table, the exact-match cache around tracked verdicts,
// trace changing nothing, and the flow syntax.

import { describe, expect, it } from "vitest";
import { formatFlow, packetFields, parseFlow, parsePacket, Vswitch, type VswitchOptions } from "./mod.js";

function switchWith(flows: string[], now = { ms: 0 }, conntrack?: VswitchOptions["conntrack"]): Vswitch {
  const vs = new Vswitch({ ports: [1, 2, 3, 4], now: () => now.ms, ...(conntrack ? { conntrack } : {}) });
  for (const f of flows) vs.addFlow(f);
  return vs;
}

const pkt = (text: string) => parsePacket(text);
const fieldsOf = (v: { packet: bigint[] }) => packetFields(v.packet);

/** ovs-actions(7)'s firewall: new connections only from port 1, established ones both ways. */
const firewall = [
  "table=0,priority=1,actions=drop",
  "table=0,priority=100,ip,ct_state=-trk,actions=ct(table=1)",
  "table=1,priority=10,in_port=1,ip,ct_state=+trk+new,actions=ct(commit),output:2",
  "table=1,priority=10,in_port=1,ip,ct_state=+trk+est,actions=output:2",
  "table=1,priority=10,in_port=2,ip,ct_state=+trk+new,actions=drop",
  "table=1,priority=10,in_port=2,ip,ct_state=+trk+est,actions=output:1",
];
const outbound = pkt("in_port=1,tcp,nw_src=10.0.0.1,nw_dst=10.0.0.2,tp_src=40000,tp_dst=80");
const reply = pkt("in_port=2,tcp,nw_src=10.0.0.2,nw_dst=10.0.0.1,tp_src=80,tp_dst=40000");
const unsolicited = pkt("in_port=2,tcp,nw_src=10.0.0.2,nw_dst=10.0.0.1,tp_src=5555,tp_dst=22");

describe("conntrack", () => {
  it("conntrack: a stateful firewall commits outbound connections, lets their replies in as +est+rpl and drops unsolicited +new", () => {
    const vs = switchWith(firewall);
    // Before any commit the reply is just a new connection from the wrong side; nothing is stored without commit.
    expect(vs.process(reply).outputs).toEqual([]);
    expect(vs.dumpConntrack()).toEqual([]);
    const out = vs.process(outbound);
    expect(out.outputs).toEqual([2]);
    expect(out.matched.map((f) => f.table)).toEqual([0, 1]);
    expect(vs.dumpConntrack()).toEqual(["tcp,orig=(src=10.0.0.1,dst=10.0.0.2,sport=40000,dport=80),reply=(src=10.0.0.2,dst=10.0.0.1,sport=80,dport=40000)"]);
    const back = vs.process(reply);
    expect(back.outputs).toEqual([1]);
    // The copy that resumed in table 1 carries the tracker's verdict.
    expect(fieldsOf(back)).toMatchObject({ ct_state: "est|rpl|trk", ct_zone: "0" });
    expect(vs.process(outbound).outputs).toEqual([2]);
    expect(vs.process(unsolicited).outputs).toEqual([]);
    expect(vs.conntrackStats()).toEqual({ connections: 1, commits: 1, fullDrops: 0, expired: 0, insertFailed: 0 });
  });

  it("conntrack: a committed UDP connection is +new until a reply is seen, +est after; replies are +est+rpl", () => {
    const vs = switchWith([
      "table=0,priority=10,ip,actions=ct(table=1,zone=5)",
      "table=1,priority=10,ip,ct_state=+trk+new,in_port=1,actions=ct(commit,zone=5),output:2",
      "table=1,priority=10,ip,ct_state=+trk+est-rpl,actions=output:3",
      "table=1,priority=10,ip,ct_state=+trk+est+rpl,actions=output:1",
    ]);
    const query = pkt("in_port=1,udp,nw_src=10.0.0.1,nw_dst=10.0.0.2,tp_src=5000,tp_dst=53");
    const answer = pkt("in_port=2,udp,nw_src=10.0.0.2,nw_dst=10.0.0.1,tp_src=53,tp_dst=5000");
    expect(vs.process(query).outputs).toEqual([2]);
    expect(vs.process(query).outputs).toEqual([2]);
    expect(vs.process(answer).outputs).toEqual([1]);
    expect(vs.process(query).outputs).toEqual([3]);
    expect(vs.dumpConntrack()).toEqual(["udp,orig=(src=10.0.0.1,dst=10.0.0.2,sport=5000,dport=53),reply=(src=10.0.0.2,dst=10.0.0.1,sport=53,dport=5000),zone=5"]);
  });

  it("conntrack: UDP lives 30 s unreplied and 120 s once replied, each packet restarting the clock; an expired connection is absent even before the sweep", () => {
    const now = { ms: 0 };
    const vs = switchWith(["table=0,priority=10,in_port=1,ip,actions=ct(commit),output:2", "table=0,priority=10,in_port=2,ip,actions=ct(table=1)", "table=1,priority=10,ip,ct_state=+trk+est,actions=output:1"], now);
    const query = pkt("in_port=1,udp,nw_src=10.0.0.1,nw_dst=10.0.0.2,tp_src=5000,tp_dst=53");
    const answer = pkt("in_port=2,udp,nw_src=10.0.0.2,nw_dst=10.0.0.1,tp_src=53,tp_dst=5000");
    vs.process(query);
    now.ms = 20_000;
    vs.process(query);
    // Refreshed at 20 s: alive until 50 s.
    now.ms = 49_999;
    expect(vs.expireConnections()).toBe(0);
    now.ms = 50_000;
    expect(vs.expireConnections()).toBe(1);
    expect(vs.dumpConntrack()).toEqual([]);
    // A reply turns it into a stream: 120 s from the last packet.
    now.ms = 100_000;
    vs.process(query);
    now.ms = 110_000;
    expect(vs.process(answer).outputs).toEqual([1]);
    now.ms = 229_999;
    expect(vs.expireConnections()).toBe(0);
    now.ms = 230_000;
    expect(vs.expireConnections()).toBe(1);
    // Lazily: 30 s after a commit the reply finds nothing, before any sweep.
    now.ms = 300_000;
    vs.process(query);
    now.ms = 330_000;
    expect(vs.process(answer).outputs).toEqual([]);
    expect(vs.conntrackStats()).toMatchObject({ connections: 0, commits: 3, expired: 3 });
  });

  it("conntrack: ICMP echoes are tracked by identifier; a reply nobody asked for, or another ICMP type, is +inv", () => {
    const vs = switchWith([
      "table=0,priority=10,ip,actions=ct(table=1)",
      "table=1,priority=10,icmp,ct_state=+trk+new,actions=ct(commit),output:2",
      "table=1,priority=10,icmp,ct_state=+trk+est,actions=output:3",
      "table=1,priority=10,ct_state=+trk+inv,actions=output:4",
    ]);
    const ping = (id: number) => pkt(`in_port=1,icmp,nw_src=10.0.0.1,nw_dst=10.0.0.2,icmp_type=8,icmp_code=0,icmp_id=${id}`);
    const pong = (id: number) => pkt(`in_port=2,icmp,nw_src=10.0.0.2,nw_dst=10.0.0.1,icmp_type=0,icmp_code=0,icmp_id=${id}`);
    expect(vs.process(ping(7)).outputs).toEqual([2]);
    expect(vs.process(pong(7)).outputs).toEqual([3]);
    expect(vs.process(pong(8)).outputs).toEqual([4]);
    expect(vs.process(ping(8)).outputs).toEqual([2]);
    expect(vs.process(pkt("in_port=2,icmp,nw_src=10.0.0.2,nw_dst=10.0.0.1,icmp_type=3,icmp_code=1")).outputs).toEqual([4]);
    expect(vs.dumpConntrack()).toEqual([
      "icmp,orig=(src=10.0.0.1,dst=10.0.0.2,id=7,type=8,code=0),reply=(src=10.0.0.2,dst=10.0.0.1,id=7,type=0,code=0)",
      "icmp,orig=(src=10.0.0.1,dst=10.0.0.2,id=8,type=8,code=0),reply=(src=10.0.0.2,dst=10.0.0.1,id=8,type=0,code=0)",
    ]);
  });

  it("conntrack: SNAT keeps a unique source port and remaps a colliding one to the lowest free (REFERENCES oracle); ct(nat) reverses it on replies", () => {
    const vs = switchWith([
      "table=0,priority=10,in_port=1,ip,actions=ct(commit,zone=5,nat(src=192.0.2.1)),output:2",
      "table=0,priority=10,in_port=2,ip,actions=ct(zone=5,nat,table=1)",
      "table=1,priority=10,ip,ct_state=+trk+est+rpl,actions=output:1",
    ]);
    const fromA = vs.process(pkt("in_port=1,udp,nw_src=10.0.0.2,nw_dst=198.51.100.7,tp_src=40000,tp_dst=53"));
    expect(fromA.outputs).toEqual([2]);
    // The packet leaves translated, and untracked: OVS clears ct_* after a ct without table.
    expect(fieldsOf(fromA)).toMatchObject({ nw_src: "192.0.2.1", tp_src: "40000", ct_state: "0", ct_zone: "0" });
    const fromB = vs.process(pkt("in_port=1,udp,nw_src=10.0.0.3,nw_dst=198.51.100.7,tp_src=40000,tp_dst=53"));
    expect(fieldsOf(fromB)).toMatchObject({ nw_src: "192.0.2.1", tp_src: "1024" });
    // A's next packet keeps its binding.
    expect(fieldsOf(vs.process(pkt("in_port=1,udp,nw_src=10.0.0.2,nw_dst=198.51.100.7,tp_src=40000,tp_dst=53")))).toMatchObject({ tp_src: "40000" });
    expect(vs.dumpConntrack()).toEqual([
      "udp,orig=(src=10.0.0.2,dst=198.51.100.7,sport=40000,dport=53),reply=(src=198.51.100.7,dst=192.0.2.1,sport=53,dport=40000),zone=5",
      "udp,orig=(src=10.0.0.3,dst=198.51.100.7,sport=40000,dport=53),reply=(src=198.51.100.7,dst=192.0.2.1,sport=53,dport=1024),zone=5",
    ]);
    const toB = vs.process(pkt("in_port=2,udp,nw_src=198.51.100.7,nw_dst=192.0.2.1,tp_src=53,tp_dst=1024"));
    expect(toB.outputs).toEqual([1]);
    // The reply's destination is restored, so the kernel flags it +dnat.
    expect(fieldsOf(toB)).toMatchObject({ nw_dst: "10.0.0.3", tp_dst: "40000", ct_state: "est|rpl|trk|dnat", ct_zone: "5" });
    expect(fieldsOf(vs.process(pkt("in_port=2,udp,nw_src=198.51.100.7,nw_dst=192.0.2.1,tp_src=53,tp_dst=40000")))).toMatchObject({ nw_dst: "10.0.0.2", tp_dst: "40000" });
    // Nothing was sent to 192.0.2.1:2000: new, and no flow takes it.
    expect(vs.process(pkt("in_port=2,udp,nw_src=198.51.100.7,nw_dst=192.0.2.1,tp_src=53,tp_dst=2000")).outputs).toEqual([]);
    // Echo identifiers are remapped the same way (0-65535 when no range is given).
    const ping = (src: string) => vs.process(pkt(`in_port=1,icmp,nw_src=${src},nw_dst=198.51.100.7,icmp_type=8,icmp_code=0,icmp_id=7`));
    expect(fieldsOf(ping("10.0.0.2"))).toMatchObject({ nw_src: "192.0.2.1", icmp_id: "7" });
    expect(fieldsOf(ping("10.0.0.3"))).toMatchObject({ nw_src: "192.0.2.1", icmp_id: "0" });
    expect(fieldsOf(vs.process(pkt("in_port=2,icmp,nw_src=198.51.100.7,nw_dst=192.0.2.1,icmp_type=0,icmp_code=0,icmp_id=0")))).toMatchObject({ nw_dst: "10.0.0.3", icmp_id: "7" });
  });

  it("conntrack: an IP protocol without ports (GRE) is tracked by its addresses alone, as Linux's generic tracker and OVS's ct_proto_other do: +new, not +inv; SNAT rewrites only the address; 600 s idle", () => {
    const now = { ms: 0 };
    const vs = switchWith(
      [
        "table=0,priority=10,in_port=1,ip,actions=ct(commit,nat(src=192.0.2.1)),output:2",
        "table=0,priority=10,in_port=2,ip,actions=ct(nat,table=1)",
        "table=1,priority=10,ip,ct_state=+trk+new,actions=output:3",
        "table=1,priority=10,ip,ct_state=+trk+est+rpl,actions=output:1",
        "table=1,priority=10,ip,ct_state=+trk+inv,actions=output:4",
      ],
      now,
    );
    const gre = (text: string) => pkt(`ip,nw_proto=47,${text}`);
    const reply = gre("in_port=2,nw_src=198.51.100.7,nw_dst=192.0.2.1");
    expect(vs.trace(reply).outputs).toEqual([3]);
    const out = vs.process(gre("in_port=1,nw_src=10.0.0.2,nw_dst=198.51.100.7"));
    expect(out.outputs).toEqual([2]);
    expect(fieldsOf(out)).toMatchObject({ nw_src: "192.0.2.1", tp_src: "0", tp_dst: "0" });
    // dpctl/dump-conntrack prints a protocol it has no name for as its number, and the ports as 0.
    expect(vs.dumpConntrack()).toEqual(["47,orig=(src=10.0.0.2,dst=198.51.100.7,sport=0,dport=0),reply=(src=198.51.100.7,dst=192.0.2.1,sport=0,dport=0)"]);
    const back = vs.process(reply);
    expect(back.outputs).toEqual([1]);
    expect(fieldsOf(back)).toMatchObject({ nw_dst: "10.0.0.2", ct_state: "est|rpl|trk|dnat" });
    now.ms = 599_999;
    expect(vs.expireConnections()).toBe(0);
    now.ms = 600_000;
    expect(vs.expireConnections()).toBe(1);
  });

  it("conntrack: a source port below 16384 talking to one at or above 32768 is remapped even when unique; low ports stay low; a port range can run out", () => {
    const flows = ["table=0,priority=10,in_port=1,ip,actions=ct(commit,nat(src=192.0.2.1)),output:2", "table=0,priority=10,in_port=3,ip,actions=ct(commit,nat(src=192.0.2.2:2000-2001)),output:2"];
    const vs = switchWith(flows);
    const send = (s: Vswitch, text: string) => fieldsOf(s.process(pkt(`in_port=1,udp,${text}`)));
    expect(send(vs, "nw_src=10.0.0.2,nw_dst=198.51.100.7,tp_src=5000,tp_dst=40000")).toMatchObject({ tp_src: "1024" });
    expect(send(vs, "nw_src=10.0.0.2,nw_dst=198.51.100.7,tp_src=5001,tp_dst=53")).toMatchObject({ tp_src: "5001" });
    expect(send(vs, "nw_src=10.0.0.3,nw_dst=198.51.100.7,tp_src=123,tp_dst=123")).toMatchObject({ tp_src: "123" });
    expect(send(vs, "nw_src=10.0.0.4,nw_dst=198.51.100.7,tp_src=123,tp_dst=123")).toMatchObject({ tp_src: "1" });
    // Linux reverted the forced remap in 5.17; without it the unique port is kept.
    expect(send(switchWith(flows, { ms: 0 }, { forcePortRemap: false }), "nw_src=10.0.0.2,nw_dst=198.51.100.7,tp_src=5000,tp_dst=40000")).toMatchObject({ tp_src: "5000" });
    // Two ports for three hosts: the third commit fails and its packet goes nowhere (never out un-NATed).
    const viaRange = (host: number) => vs.process(pkt(`in_port=3,udp,nw_src=10.0.1.${host},nw_dst=198.51.100.7,tp_src=40000,tp_dst=53`));
    expect(fieldsOf(viaRange(1))).toMatchObject({ nw_src: "192.0.2.2", tp_src: "2000" });
    expect(fieldsOf(viaRange(2))).toMatchObject({ nw_src: "192.0.2.2", tp_src: "2001" });
    expect(viaRange(3).outputs).toEqual([]);
    expect(vs.conntrackStats()).toMatchObject({ commits: 6, insertFailed: 1 });
  });

  it("conntrack: DNAT picks the backend by client and the port from the range; replies get the service's address back (+snat)", () => {
    const vs = switchWith([
      "table=0,priority=10,in_port=1,tcp,nw_dst=203.0.113.10,tp_dst=80,actions=ct(commit,zone=7,nat(dst=10.0.0.5-10.0.0.6:8080)),output:2",
      "table=0,priority=10,in_port=2,ip,actions=ct(zone=7,nat,table=1)",
      "table=1,priority=10,ip,ct_state=+trk+est+rpl,actions=output:1",
    ]);
    // 198.51.100.20 is even and 198.51.100.21 odd: the first and second backends.
    const request = (client: string) => fieldsOf(vs.process(pkt(`in_port=1,tcp,nw_src=${client},nw_dst=203.0.113.10,tp_src=33000,tp_dst=80`)));
    expect(request("198.51.100.20")).toMatchObject({ nw_dst: "10.0.0.5", tp_dst: "8080" });
    expect(request("198.51.100.21")).toMatchObject({ nw_dst: "10.0.0.6", tp_dst: "8080" });
    const answer = vs.process(pkt("in_port=2,tcp,nw_src=10.0.0.5,nw_dst=198.51.100.20,tp_src=8080,tp_dst=33000"));
    expect(answer.outputs).toEqual([1]);
    expect(fieldsOf(answer)).toMatchObject({ nw_src: "203.0.113.10", tp_src: "80", ct_state: "est|rpl|trk|snat" });
    expect(vs.dumpConntrack()[0]).toBe("tcp,orig=(src=198.51.100.20,dst=203.0.113.10,sport=33000,dport=80),reply=(src=10.0.0.5,dst=198.51.100.20,sport=8080,dport=33000),zone=7");
  });

  it("conntrack: zones keep identical tuples apart, and ct(commit,exec(...)) marks a connection", () => {
    const vs = switchWith([
      "table=0,priority=10,in_port=1,ip,actions=ct(commit,zone=1,table=1)",
      "table=0,priority=10,in_port=2,ip,actions=ct(commit,zone=2,exec(set_field:0x2a->ct_mark),table=1)",
      "table=1,priority=10,ct_zone=1,ct_state=+trk+new,actions=output:3",
      "table=1,priority=10,ct_zone=2,ct_state=+trk+new,ct_mark=0x2a,actions=output:4",
      "table=1,priority=5,ct_state=+trk+est,actions=output:1",
    ]);
    const tuple = "udp,nw_src=10.0.0.1,nw_dst=10.0.0.2,tp_src=5000,tp_dst=53";
    expect(vs.process(pkt(`in_port=1,${tuple}`)).outputs).toEqual([3]);
    expect(vs.process(pkt(`in_port=2,${tuple}`)).outputs).toEqual([4]);
    expect(vs.process(pkt("in_port=2,udp,nw_src=10.0.0.2,nw_dst=10.0.0.1,tp_src=53,tp_dst=5000")).outputs).toEqual([1]);
    expect(vs.dumpConntrack()).toEqual([
      "udp,orig=(src=10.0.0.1,dst=10.0.0.2,sport=5000,dport=53),reply=(src=10.0.0.2,dst=10.0.0.1,sport=53,dport=5000),zone=1",
      "udp,orig=(src=10.0.0.1,dst=10.0.0.2,sport=5000,dport=53),reply=(src=10.0.0.2,dst=10.0.0.1,sport=53,dport=5000),zone=2,mark=42",
    ]);
  });

  it("conntrack: a full table refuses new commits (+inv, counted) until timeouts make room", () => {
    const now = { ms: 0 };
    const vs = switchWith(
      ["table=0,priority=10,ip,actions=ct(commit,table=1)", "table=1,priority=10,ct_state=+trk+new,actions=output:2", "table=1,priority=10,ct_state=+trk+inv,actions=output:4"],
      now,
      { connectionsMax: 2 },
    );
    const flow = (port: number) => pkt(`in_port=1,udp,nw_src=10.0.0.1,nw_dst=10.0.0.2,tp_src=${port},tp_dst=53`);
    expect(vs.process(flow(1001)).outputs).toEqual([2]);
    expect(vs.process(flow(1002)).outputs).toEqual([2]);
    expect(vs.process(flow(1003)).outputs).toEqual([4]);
    expect(vs.conntrackStats()).toMatchObject({ connections: 2, fullDrops: 1 });
    now.ms = 30_000;
    expect(vs.process(flow(1003)).outputs).toEqual([2]);
    expect(vs.conntrackStats()).toEqual({ connections: 1, commits: 3, fullDrops: 1, expired: 2, insertFailed: 0 });
  });

  it("conntrack: a verdict that went through ct is never cached, so it follows the tracker; other packets still hit the cache", () => {
    const vs = switchWith([...firewall, "table=0,priority=10,arp,actions=output:3"]);
    expect(vs.process(reply).outputs).toEqual([]);
    vs.process(outbound);
    // The same words as the first packet, a new verdict: the connection now exists.
    expect(vs.process(reply).outputs).toEqual([1]);
    expect(vs.cacheHits).toBe(0);
    const arp = pkt("in_port=1,arp");
    vs.process(arp);
    vs.process(arp);
    expect(vs.cacheHits).toBe(1);
    // Tracked packets still count on their flows.
    expect(vs.flows().find((f) => f.priority === 100)).toMatchObject({ nPackets: 3 });
  });

  it("conntrack: trace shows the tracker's verdict and NAT but commits nothing, marks no reply and restarts no timeout", () => {
    const now = { ms: 0 };
    const vs = switchWith(
      [
        "table=0,priority=10,in_port=1,ip,actions=ct(table=1)",
        "table=1,priority=10,ip,ct_state=+trk+new,actions=ct(commit,nat(src=192.0.2.1)),output:2",
        "table=1,priority=10,ip,ct_state=+trk+est,actions=output:3",
        "table=0,priority=10,in_port=2,ip,actions=ct(nat,table=2)",
        "table=2,priority=10,ip,ct_state=+trk+est+rpl,actions=output:1",
      ],
      now,
    );
    const out = pkt("in_port=1,udp,nw_src=10.0.0.2,nw_dst=198.51.100.7,tp_src=40000,tp_dst=53");
    const traced = vs.trace(out);
    expect(traced.outputs).toEqual([2]);
    expect(fieldsOf(traced)).toMatchObject({ nw_src: "192.0.2.1", tp_src: "40000" });
    expect(vs.dumpConntrack()).toEqual([]);
    expect(vs.conntrackStats().commits).toBe(0);
    vs.process(out);
    const back = pkt("in_port=2,udp,nw_src=198.51.100.7,nw_dst=192.0.2.1,tp_src=53,tp_dst=40000");
    now.ms = 20_000;
    expect(vs.trace(back).outputs).toEqual([1]);
    // The traced reply was not seen: the next outbound packet is still +new, and the timeout still runs from 0 s.
    expect(vs.trace(out).outputs).toEqual([2]);
    now.ms = 30_000;
    expect(vs.expireConnections()).toBe(1);
  });

  it("conntrack: flows with ct_* matches and ct actions round-trip through ovs-ofctl syntax", () => {
    const cases: [string, string][] = [
      [
        "table=1,priority=10,ip,ct_state=+trk+est-rpl,ct_zone=5,ct_mark=0x1/0x1,actions=ct(commit,zone=5,table=30,nat(src=192.0.2.1)),ct_clear,output:2",
        "table=1,priority=10,dl_type=0x800,ct_state=+est-rpl+trk,ct_zone=5,ct_mark=0x1/0x1 actions=ct(commit,table=30,zone=5,nat(src=192.0.2.1)),ct_clear,output:2",
      ],
      ["icmp,icmp_id=7,ct_state=0x22,actions=ct(table=3,nat),ct", "table=0,priority=32768,dl_type=0x800,nw_proto=1,icmp_id=7,ct_state=est|trk actions=ct(table=3,nat),ct()"],
      [
        "ip,ct_state=0x21/0x21,actions=ct(commit,nat(dst=10.0.0.5-10.0.0.6:8080-8081),exec(set_field:0x2/0x3->ct_mark))",
        "table=0,priority=32768,dl_type=0x800,ct_state=+new+trk actions=ct(commit,nat(dst=10.0.0.5-10.0.0.6:8080-8081),exec(set_field:0x2/0x3->ct_mark))",
      ],
      ["ip,ct_state=-trk,actions=ct(commit,nat(src=192.0.2.1:5000))", "table=0,priority=32768,dl_type=0x800,ct_state=-trk actions=ct(commit,nat(src=192.0.2.1:5000))"],
    ];
    for (const [written, dumped] of cases) {
      expect(formatFlow(parseFlow(written))).toBe(dumped);
      expect(parseFlow(dumped)).toEqual(parseFlow(written));
    }
  });

  it("conntrack: bad ct flows are refused with the reason", () => {
    const refuse = (flow: string) => () => parseFlow(flow);
    expect(refuse("ip,actions=ct(bogus)")).toThrow(/ct: unknown argument "bogus"/);
    expect(refuse("ip,actions=ct(zone=70000)")).toThrow(/ct zone=70000: a whole number from 0 to 65535/);
    expect(refuse("ip,actions=ct(table=255)")).toThrow(/ct table=255/);
    expect(refuse("ip,actions=ct(nat(src=192.0.2.1))")).toThrow(/nat with a range .* needs commit/);
    expect(refuse("ip,actions=ct(commit,nat(src))")).toThrow(/nat\(src\) needs a range/);
    expect(refuse("ip,actions=ct(commit,nat(src=192.0.2.9-192.0.2.1))")).toThrow(/last address is below the first/);
    expect(refuse("ip,actions=ct(commit,nat(src=192.0.2.1:0))")).toThrow(/ports go from 1 to 65535/);
    expect(refuse("ip,actions=ct(commit,nat(src=192.0.2.1,dst=192.0.2.2))")).toThrow(/one of src or dst/);
    expect(refuse("ip,actions=ct(commit,force)")).toThrow(/does not model force/);
    expect(refuse("ip,actions=ct(zone=1,zone=2)")).toThrow(/zone is given twice/);
    expect(refuse("actions=ct(commit)")).toThrow(/ct needs ip/);
    expect(refuse("ip,ct_state=+trk+inv,actions=ct(commit)")).toThrow(/\+inv/);
    expect(refuse("ip,actions=ct(exec(set_field:1->ct_mark))")).toThrow(/exec .* needs commit/);
    expect(refuse("ip,actions=ct(commit,exec(output:1))")).toThrow(/only set_field:VALUE\[\/MASK\]->ct_mark/);
    expect(refuse("ip,actions=set_field:1->ct_mark")).toThrow(/ct\(commit,exec/);
    expect(refuse("ip,actions=set_field:0x20->ct_state")).toThrow(/cannot set ct_state/);
    expect(refuse("ct_state=+trk+bogus,actions=drop")).toThrow(/unknown flag "bogus"/);
    expect(refuse("ct_state=+trk-trk,actions=drop")).toThrow(/trk is given twice/);
    expect(refuse("ct_state=0x100,actions=drop")).toThrow(/bits beyond the flags/);
    expect(refuse("ct_zone=1/1,actions=drop")).toThrow(/ct_zone takes no mask/);
    expect(refuse("icmp_id=5,actions=drop")).toThrow(/icmp_id needs icmp/);
    expect(refuse("udp,actions=set_field:5->icmp_id")).toThrow(/setting icmp_id needs icmp/);
  });
});
