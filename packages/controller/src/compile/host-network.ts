// The SDN compiler: what one host's vswitch must hold for the logical
// networks, the way OVN's northd and ovn-controller together turn logical
// switches into OpenFlow on br-int. Pure: the same view gives the same
// section, so it is tested against hand-computed tables.
//
// A host gets only what its own ports need: for each network it has a port
// on, the networks' ports (local ones by ofport, remote ones by the tunnel to
// their host), and nothing of networks it has no port on.
//
// The pipeline:
//   table 0   ingress: a VM port is admitted only from its own MAC (port
//             security), a tunnel only with the VNI of a network the two hosts
//             share; both put the network's segment in metadata.
//   table 10  local services: DHCP (UDP 68->67) and ARP requests go to the
//             host's own agent (a local packet-in, as OVN's pinctrl), which
//             answers from the bindings below; the rest goes on to 20.
//   table 20  from a local port: a known MAC goes to its port or tunnel;
//             broadcast and multicast go to the network's other local ports
//             and to every host with a port on it.
//   table 30  from a tunnel: delivered to local ports only (never back out).

import { simdc } from "@simdc/proto";
import { centralControllerId } from "@simdc/vswitch";
import { contains, ipToNumber, parseCidr } from "../network/ipam.js";
import type { LogicalPort } from "../network/logical-ports.js";

import v1 = simdc.v1;

export const tableIngress = 0;
export const tableLocalServices = 10;
export const tableFromLocal = 20;
export const tableFromTunnel = 30;
/** Tables below this are the controller's; hand edits there are refused unless forced. */
export const controllerTablesEnd = 40;
/** Tunnel ports are numbered from here; VM ports count up from 1. */
export const tunnelOfportBase = 0xf000;
/** How long a reactive flow stays without traffic, in seconds. */
export const reactiveIdleTimeoutS = 30;
/** The DHCP lease the vswitch grants when the network does not say (RFC 2131's example). */
export const leaseSecondsDefault = 3_600;

export interface NetworkView {
  network(id: string): v1.INetwork | undefined;
  portsOnHost(hostId: string): Iterable<LogicalPort>;
  portsOnNetwork(networkId: string): Iterable<LogicalPort>;
  /** The agent process that runs a host (its underlay subject); undefined when unknown. */
  agentOf(hostId: string): string | undefined;
}

function byPort(a: LogicalPort, b: LogicalPort): number {
  return a.vmId < b.vmId ? -1 : a.vmId > b.vmId ? 1 : a.index - b.index;
}

/** The prefix length and gateway of the subnet of `network` that holds `ip`. */
function subnetOf(network: v1.INetwork, ip: string): { prefix: number; gateway: string } {
  const address = ipToNumber(ip);
  for (const subnet of network.subnets ?? []) {
    const cidr = parseCidr(subnet.cidr ?? "");
    if (contains(cidr, address)) return { prefix: cidr.prefix, gateway: subnet.gateway ?? "" };
  }
  return { prefix: 32, gateway: "" };
}

/**
 * The host's network section, or undefined when it has no port on any
 * network (its document then carries none).
 */
export function compileHostNetwork(hostId: string, view: NetworkView, options: { allProactive?: boolean } = {}): v1.HostNetwork | undefined {
  const local = [...view.portsOnHost(hostId)].filter((p) => view.network(p.networkId)).sort(byPort);
  if (local.length === 0) return undefined;
  // Each NIC keeps the port the controller gave it; one without (or clashing) takes the lowest free.
  const ofportOf = new Map<LogicalPort, number>();
  const used = new Set<number>();
  for (const p of local) {
    if (p.ofport > 0 && p.ofport < tunnelOfportBase && !used.has(p.ofport)) {
      ofportOf.set(p, p.ofport);
      used.add(p.ofport);
    }
  }
  let free = 1;
  for (const p of local) {
    if (ofportOf.has(p)) continue;
    while (used.has(free)) free += 1;
    ofportOf.set(p, free);
    used.add(free);
  }
  const networkIds = [...new Set(local.map((p) => p.networkId))].sort();
  // Every port of each network this host joins, and the hosts they are on.
  const members = new Map<string, LogicalPort[]>();
  const remoteHosts = new Set<string>();
  for (const id of networkIds) {
    const ports = [...view.portsOnNetwork(id)].sort(byPort);
    members.set(id, ports);
    for (const p of ports) if (p.hostId !== hostId && view.agentOf(p.hostId)) remoteHosts.add(p.hostId);
  }
  const tunnels = [...remoteHosts].sort().map((h, i) => v1.TunnelPort.create({ ofport: tunnelOfportBase + i, hostId: h, agentId: view.agentOf(h)! }));
  const tunnelOf = new Map(tunnels.map((t) => [t.hostId, t.ofport]));

  const flows: string[] = [];
  const ports: v1.VswitchPort[] = [];
  const neighbors: v1.Neighbor[] = [];
  for (const id of networkIds) {
    const network = view.network(id)!;
    const segment = network.segmentId ?? 0;
    const meta = `metadata=0x${segment.toString(16)}`;
    const setMeta = `set_field:0x${segment.toString(16)}->metadata`;
    const all = members.get(id)!;
    const mine = local.filter((p) => p.networkId === id);
    const theirHosts = [...new Set(all.filter((p) => tunnelOf.has(p.hostId)).map((p) => p.hostId))].sort();
    // Reactive: the known-MAC flows of table 20 come one by one as packet-ins are answered.
    const reactive = network.flowSetup === v1.FlowSetup.FLOW_SETUP_REACTIVE && !options.allProactive;
    for (const p of mine) {
      const ofport = ofportOf.get(p)!;
      const { prefix, gateway } = subnetOf(network, p.ip);
      ports.push(v1.VswitchPort.create({ ofport, vmId: p.vmId, nicIndex: p.index, networkId: id, segmentId: segment, mac: p.mac, ip: p.ip, prefixLength: prefix, gateway, leaseS: leaseSecondsDefault }));
      flows.push(`table=${tableIngress},priority=100,in_port=${ofport},dl_src=${p.mac} actions=${setMeta},goto_table:${tableLocalServices}`);
    }
    for (const host of theirHosts) {
      flows.push(`table=${tableIngress},priority=100,in_port=${tunnelOf.get(host)},tun_id=0x${segment.toString(16)} actions=${setMeta},goto_table:${tableFromTunnel}`);
    }
    flows.push(`table=${tableLocalServices},priority=110,${meta},udp,tp_src=68,tp_dst=67 actions=controller`);
    flows.push(`table=${tableLocalServices},priority=110,${meta},arp,arp_op=1 actions=controller`);
    for (const p of all) {
      neighbors.push(v1.Neighbor.create({ segmentId: segment, ip: p.ip, mac: p.mac }));
      const ofport = ofportOf.get(p);
      const tunnel = tunnelOf.get(p.hostId);
      if (ofport !== undefined) {
        if (!reactive) flows.push(`table=${tableFromLocal},priority=100,${meta},dl_dst=${p.mac} actions=output:${ofport}`);
        flows.push(`table=${tableFromTunnel},priority=100,${meta},dl_dst=${p.mac} actions=output:${ofport}`);
      } else if (tunnel !== undefined && !reactive) {
        flows.push(`table=${tableFromLocal},priority=100,${meta},dl_dst=${p.mac} actions=set_field:0x${segment.toString(16)}->tun_id,output:${tunnel}`);
      }
    }
    const localOutputs = mine.map((p) => `output:${ofportOf.get(p)}`);
    const tunnelOutputs = theirHosts.map((h) => `output:${tunnelOf.get(h)}`);
    const flood = [...localOutputs, ...(tunnelOutputs.length ? [`set_field:0x${segment.toString(16)}->tun_id`, ...tunnelOutputs] : [])];
    flows.push(`table=${tableFromLocal},priority=50,${meta},dl_dst=01:00:00:00:00:00/01:00:00:00:00:00 actions=${flood.join(",")}`);
    flows.push(`table=${tableFromTunnel},priority=50,${meta},dl_dst=01:00:00:00:00:00/01:00:00:00:00:00 actions=${localOutputs.join(",")}`);
    if (reactive) flows.push(`table=${tableFromLocal},priority=1,${meta} actions=controller(id=${centralControllerId})`);
  }
  flows.push(`table=${tableLocalServices},priority=0 actions=goto_table:${tableFromLocal}`);
  ports.sort((a, b) => a.ofport - b.ofport);
  const dedicatedSegments = networkIds.map((id) => view.network(id)!).filter((n) => n.uplink === v1.Uplink.UPLINK_DEDICATED).map((n) => n.segmentId ?? 0);
  return v1.HostNetwork.create({ ports, tunnels, flows, neighbors, controllerTables: controllerTablesEnd, dedicatedSegments });
}
