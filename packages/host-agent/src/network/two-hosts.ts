// A fixture of two hosts' network sections, as the controller compiles them
// for vm a (10.0.0.2, on h1) and vm b (10.0.0.3, on h2) on one overlay
// network with VNI 7: the unit tests and the underlay benchmark run the
// data plane on it without a controller.

import { simdc } from "@simdc/proto";

import v1 = simdc.v1;

export const macA = "02:00:00:00:00:0a";
export const macB = "02:00:00:00:00:0b";

/** Host `self`'s section (agents agent-h1 and agent-h2), with `extra` ports of its own. */
export function twoHostSection(self: "h1" | "h2", extra: v1.IVswitchPort[] = []): v1.IHostNetwork {
  const [mine, theirs] = self === "h1" ? [macA, macB] : [macB, macA];
  const ip = self === "h1" ? "10.0.0.2" : "10.0.0.3";
  const other = self === "h1" ? "h2" : "h1";
  return {
    ports: [{ ofport: 1, vmId: self === "h1" ? "a" : "b", nicIndex: 0, networkId: "n", segmentId: 7, mac: mine, ip, prefixLength: 24, gateway: "10.0.0.1", leaseS: 3600 }, ...extra],
    tunnels: [{ ofport: 0xf000, hostId: other, agentId: `agent-${other}` }],
    flows: [
      `table=0,priority=100,in_port=1,dl_src=${mine} actions=set_field:0x7->metadata,goto_table:10`,
      "table=0,priority=100,in_port=61440,tun_id=0x7 actions=set_field:0x7->metadata,goto_table:30",
      "table=10,priority=110,metadata=0x7,udp,tp_src=68,tp_dst=67 actions=controller",
      "table=10,priority=110,metadata=0x7,arp,arp_op=1 actions=controller",
      "table=10,priority=0 actions=goto_table:20",
      `table=20,priority=100,metadata=0x7,dl_dst=${mine} actions=output:1`,
      `table=20,priority=100,metadata=0x7,dl_dst=${theirs} actions=set_field:0x7->tun_id,output:61440`,
      `table=30,priority=100,metadata=0x7,dl_dst=${mine} actions=output:1`,
      ...extra.flatMap((p) => [
        `table=0,priority=100,in_port=${p.ofport},dl_src=${p.mac} actions=set_field:0x7->metadata,goto_table:10`,
        `table=20,priority=100,metadata=0x7,dl_dst=${p.mac} actions=output:${p.ofport}`,
        `table=30,priority=100,metadata=0x7,dl_dst=${p.mac} actions=output:${p.ofport}`,
      ]),
    ],
    neighbors: [
      { segmentId: 7, ip: "10.0.0.2", mac: macA },
      { segmentId: 7, ip: "10.0.0.3", mac: macB },
      ...extra.map((p) => ({ segmentId: 7, ip: p.ip, mac: p.mac })),
    ],
    controllerTables: 40,
  };
}
