// Proves the vswitch on hand-worked cases of OpenFlow semantics: priorities
// and masks, multi-table pipelines with resubmit and goto_table, header
// rewrites and VLAN tags, the in_port rule, MAC learning, the exact-match
// cache staying correct across flow changes, counters, timeouts, and the
// syntax errors OVS would give.

import { describe, expect, it } from "vitest";
import { formatFlow, packetFields, parseFlow, parseFlowFile, parsePacket, Vswitch } from "./mod.js";

function switchWith(flows: string[], now = { ms: 0 }): Vswitch {
  const vs = new Vswitch({ ports: [1, 2, 3, 4], now: () => now.ms });
  for (const f of flows) vs.addFlow(f);
  return vs;
}

const pkt = (text: string) => parsePacket(text);
const A = "02:00:00:00:00:0a";
const B = "02:00:00:00:00:0b";

describe("vswitch", () => {
  it("vswitch: the highest priority match wins, masks and prefixes match as written, a miss drops", () => {
    const vs = switchWith([
      "priority=10,ip,actions=output:1",
      "priority=20,ip,nw_dst=10.1.0.0/16,actions=output:2",
      "priority=30,ip,nw_dst=10.1.2.0/24,nw_src=192.168.0.0/255.255.0.0,actions=output:3",
      "priority=5,actions=output:4",
    ]);
    expect(vs.trace(pkt("in_port=9,ip,nw_src=192.168.7.7,nw_dst=10.1.2.3")).outputs).toEqual([3]);
    expect(vs.trace(pkt("in_port=9,ip,nw_src=172.16.0.1,nw_dst=10.1.2.3")).outputs).toEqual([2]);
    expect(vs.trace(pkt("in_port=9,ip,nw_dst=10.2.0.1")).outputs).toEqual([1]);
    expect(vs.trace(pkt("in_port=9,arp")).outputs).toEqual([4]);
    const only = switchWith(["priority=1,in_port=1,actions=output:2"]);
    expect(only.trace(pkt("in_port=2")).outputs).toEqual([]);
    expect(only.trace(pkt("in_port=2")).matched).toEqual([]);
  });

  it("vswitch: resubmit and goto_table walk the tables with the rewritten packet; output to the packet's own port is dropped unless by in_port", () => {
    const vs = switchWith([
      "table=0,priority=1,actions=set_field:5->reg0,resubmit(,1),output:3",
      "table=1,priority=10,reg0=5,actions=mod_dl_dst:02:00:00:00:00:0b,goto_table:2",
      "table=2,priority=10,dl_dst=02:00:00:00:00:0b,actions=output:1,output:2,in_port",
    ]);
    const v = vs.trace(pkt(`in_port=1,dl_src=${A},dl_dst=${A}`));
    // Table 2 outputs 1 (the in_port: dropped), 2, then in_port (1); table 0 then outputs 3.
    expect(v.outputs).toEqual([2, 1, 3]);
    expect(packetFields(v.packet)).toMatchObject({ dl_dst: B, reg0: "0x5" });
    expect(v.matched.map((f) => f.table)).toEqual([0, 1, 2]);
    // resubmit with a port looks up as if from that port, then puts in_port back.
    const moved = switchWith(["table=0,priority=1,actions=resubmit(4,1),output:4", "table=1,priority=1,in_port=4,actions=output:2"]);
    expect(moved.trace(pkt("in_port=1")).outputs).toEqual([2, 4]);
  });

  it("vswitch: VLAN tags are pushed, rewritten and stripped, and dl_vlan=0xffff matches untagged packets", () => {
    const vs = switchWith([
      "priority=10,dl_vlan=0xffff,actions=mod_vlan_vid:100,resubmit(,1)",
      "priority=10,dl_vlan=7,actions=strip_vlan,resubmit(,1)",
      "table=1,priority=10,dl_vlan=100,actions=output:2",
      "table=1,priority=5,dl_vlan=0xffff,actions=output:3",
    ]);
    const pushed = vs.trace(pkt("in_port=1"));
    expect(pushed.outputs).toEqual([2]);
    expect(packetFields(pushed.packet)["dl_vlan"]).toBe("100");
    const stripped = vs.trace(pkt("in_port=1,dl_vlan=7"));
    expect(stripped.outputs).toEqual([3]);
    expect(packetFields(stripped.packet)["dl_vlan"]).toBe("0xffff");
    expect(vs.trace(pkt("in_port=1,dl_vlan=8")).outputs).toEqual([]);
  });

  it("vswitch: normal floods an unknown destination, learns sources, and then forwards to the learned port only", () => {
    const vs = switchWith(["priority=0,actions=normal"]);
    expect(vs.process(pkt(`in_port=1,dl_src=${A},dl_dst=${B}`)).outputs).toEqual([2, 3, 4]);
    expect(vs.process(pkt(`in_port=2,dl_src=${B},dl_dst=${A}`)).outputs).toEqual([1]);
    expect(vs.process(pkt(`in_port=1,dl_src=${A},dl_dst=${B}`)).outputs).toEqual([2]);
    // A host that moves is learned at its new port.
    expect(vs.process(pkt(`in_port=3,dl_src=${B},dl_dst=${A}`)).outputs).toEqual([1]);
    expect(vs.process(pkt(`in_port=1,dl_src=${A},dl_dst=${B}`)).outputs).toEqual([3]);
    expect(vs.process(pkt(`in_port=1,dl_src=${A},dl_dst=ff:ff:ff:ff:ff:ff`)).outputs).toEqual([2, 3, 4]);
  });

  it("vswitch: the exact-match cache answers repeats and is never stale after a flow change; counters count every packet", () => {
    const vs = switchWith(["priority=10,tcp,tp_dst=80,actions=output:2", "priority=1,actions=output:3"]);
    const web = pkt("in_port=1,tcp,nw_src=10.0.0.1,nw_dst=10.0.0.2,tp_src=1000,tp_dst=80");
    for (let i = 0; i < 5; i++) expect(vs.process(web, 100).outputs).toEqual([2]);
    expect([vs.cacheHits, vs.cacheMisses]).toEqual([4, 1]);
    vs.addFlow("priority=20,tcp,tp_dst=80,actions=drop");
    expect(vs.process(web).outputs).toEqual([]);
    vs.deleteFlows({ table: 0 });
    expect(vs.process(web).outputs).toEqual([]);
    vs.addFlow("priority=1,actions=output:4");
    expect(vs.process(web).outputs).toEqual([4]);
    const counted = switchWith(["priority=10,tcp,tp_dst=80,actions=output:2"]);
    for (let i = 0; i < 3; i++) counted.process(web, 100);
    expect(counted.dumpFlows()).toEqual(["n_packets=3, n_bytes=300, table=0,priority=10,dl_type=0x800,nw_proto=6,tp_dst=80 actions=output:2"]);
    // Counts held by cache entries a flow change made stale still reach their flow.
    counted.addFlow("priority=1,arp,actions=drop");
    for (let i = 0; i < 2; i++) counted.process(web, 50);
    expect(counted.flows().find((f) => f.priority === 10)).toMatchObject({ nPackets: 5, nBytes: 400 });
    expect(counted.dumpFlows()[0]).toMatch(/^n_packets=5, n_bytes=400, /);
  });

  it("vswitch: idle and hard timeouts remove flows on the simulated clock; a used flow stays idle-fresh from the check after its use", () => {
    const now = { ms: 0 };
    const vs = switchWith(["priority=10,in_port=1,idle_timeout=10,actions=output:2", "priority=10,in_port=2,hard_timeout=30,actions=output:1"], now);
    now.ms = 8_500;
    vs.process(pkt("in_port=1"));
    vs.process(pkt("in_port=1"));
    // Uses are stamped when the periodic check folds the cache's counts, as OVS's revalidators do.
    now.ms = 9_000;
    expect(vs.expire()).toEqual([]);
    now.ms = 18_000;
    expect(vs.expire()).toEqual([]);
    now.ms = 19_000;
    expect(vs.expire().map((r) => [r.flow.match[0]!.value, r.reason])).toEqual([[1n, "idle"]]);
    now.ms = 30_000;
    expect(vs.expire().map((r) => r.reason)).toEqual(["hard"]);
    expect(vs.flows()).toEqual([]);
  });

  it("vswitch: packet-ins name their controller connection (controller(id=N)), 0 when unnamed", () => {
    const vs = switchWith(["priority=10,in_port=1,actions=controller(id=1),output:2", "priority=10,in_port=2,actions=controller(reason=no_match,max_len=128)"]);
    expect(vs.trace(pkt("in_port=1")).controllerIds).toEqual([1]);
    expect(vs.trace(pkt("in_port=2")).controllerIds).toEqual([0]);
    expect(formatFlow(parseFlow("priority=1,actions=controller(id=3)"))).toBe("table=0,priority=1 actions=controller(id=3)");
    expect(() => parseFlow("priority=1,actions=controller(id=x)")).toThrow(/controller id/);
  });

  it("vswitch: bad flows and packets are refused with the reason, as ovs-ofctl refuses them", () => {
    const refuse = (flow: string) => () => parseFlow(flow);
    expect(refuse("nw_src=10.0.0.1,actions=drop")).toThrow(/nw_src needs ip or arp/);
    expect(refuse("ip,tp_dst=80,actions=drop")).toThrow(/tp_dst needs tcp, udp or icmp/);
    expect(refuse("in_port=1,actions=mod_nw_src:10.0.0.1")).toThrow(/setting nw_src needs ip/);
    expect(refuse("arp,actions=mod_nw_src:10.0.0.1")).toThrow(/setting nw_src needs ip \(dl_type=0x0800\)/);
    expect(refuse("in_port=1")).toThrow(/no actions=/);
    expect(refuse("in_port=1,colour=blue,actions=drop")).toThrow(/unknown field "colour"/);
    expect(refuse("dl_src=02:00:00:00:00,actions=drop")).toThrow(/not a MAC address/);
    expect(refuse("ip,nw_dst=10.0.0.300,actions=drop")).toThrow(/not an IPv4 address/);
    expect(refuse("table=1,actions=goto_table:1")).toThrow(/later table/);
    expect(refuse("actions=goto_table:2,output:1")).toThrow(/goto_table must be the last action/);
    expect(refuse("actions=explode")).toThrow(/unknown action/);
    expect(refuse("in_port=1,in_port=2,actions=drop")).toThrow(/in_port is given twice/);
    expect(refuse("reg0=0x1ffffffff,actions=drop")).toThrow(/more than 32 bits/);
    expect(() => parsePacket("in_port=1,ip,nw_src=10.0.0.0/8")).toThrow(/values, not masks/);
    expect(() => parseFlowFile("priority=1,actions=output:1\n\n# note\nbogus\n")).toThrow(/^line 4: /);
    expect(formatFlow(parseFlow("table=3, priority=7, udp, nw_dst=10.0.0.0/8, actions=set_field:1->reg2,output:4"))).toBe(
      "table=3,priority=7,dl_type=0x800,nw_dst=10.0.0.0/255.0.0.0,nw_proto=17 actions=set_field:0x1->reg2,output:4",
    );
  });
});
