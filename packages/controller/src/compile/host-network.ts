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
//   table 35  inbound security of a guarded port (a NIC in a security group),
//             as OVN's ACL stages: IP traffic for it is sent through conntrack
//             in the port's zone (its ofport, so two ports of one host never
//             share a connection) with the port in reg6; replies to what it
//             started and packets of admitted connections pass, a new
//             connection passes only when a rule admits it (and is committed),
//             the rest is dropped. Its outbound IP traffic is committed in
//             its zone at table 0, which is what makes the replies known.
//             The rules' own flows are not here: the port names its groups,
//             each group's matches are compiled once (groupAdmissions) into a
//             document of their own, and the host expands them for its ports
//             (admissionFlow), as ovn-controller expands port groups.

import { simdc } from "@simdc/proto";
import { centralControllerId, tableInboundSecurity } from "@simdc/vswitch";
import { externalCidr, externalGateway, externalSegment, routerMac, uplinkMac } from "../network/external.js";
import { contains, ipToNumber, parseCidr } from "../network/ipam.js";
import type { LogicalPort } from "../network/logical-ports.js";

import v1 = simdc.v1;

export const tableIngress = 0;
export const tableLocalServices = 10;
export const tableFromLocal = 20;
export const tableFromTunnel = 30;
export const tableRouting = 25;
export const tableSnatted = 26;
export const tableUnsnatted = 27;
/** The conntrack zone of a host's NAT (NIC zones are their ofports, below 0xf000). */
export const natZone = 0xfffe;
/** What a host's endpoint ports name as their network. */
export const externalNetworkId = "external";
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
  /** Every logical network. */
  networks(): Iterable<v1.INetwork>;
  /** Every external endpoint. */
  endpoints(): Iterable<EndpointPort>;
  /** A host's address on the external network ("" before it registered). */
  uplinkOf(hostId: string): string;
  /** The logical router a network is on. */
  routerOf(networkId: string): v1.IRouter | undefined;
}

export interface EndpointPort {
  id: string;
  ip: string;
  mac: string;
  hostId: string;
  ofport: number;
}

/**
 * A port range as the fewest value/mask pairs that cover it exactly (OVS
 * matches tp_dst with a bit mask, not a range).
 */
export function portRangeMatches(min: number, max: number): string[] {
  const out: string[] = [];
  let at = min;
  while (at <= max) {
    // The largest aligned block starting at `at` that stays within the range.
    let size = 1;
    while (size < 0x10000 && at % (size * 2) === 0 && at + size * 2 - 1 <= max) size *= 2;
    out.push(size === 1 ? String(at) : `0x${at.toString(16)}/0x${(0xffff & ~(size - 1)).toString(16)}`);
    at += size;
  }
  return out;
}

const ruleProtocols: Record<number, string> = {
  [v1.SecurityProtocol.SECURITY_PROTOCOL_ANY]: "ip",
  [v1.SecurityProtocol.SECURITY_PROTOCOL_ICMP]: "icmp",
  [v1.SecurityProtocol.SECURITY_PROTOCOL_TCP]: "tcp",
  [v1.SecurityProtocol.SECURITY_PROTOCOL_UDP]: "udp",
};

/** The table-35 matches (after a port's reg6) that admit a new inbound connection under the group's rules, each once. */
export function groupAdmissions(group: v1.ISecurityGroup): string[] {
  const out = new Set<string>();
  for (const rule of group.rules ?? []) {
    const proto = ruleProtocols[rule.protocol ?? 0];
    if (!proto) continue;
    const from = rule.remoteCidr ? `,nw_src=${rule.remoteCidr}` : "";
    const ports = rule.portMin ? portRangeMatches(rule.portMin, rule.portMax ?? rule.portMin).map((p) => `,tp_dst=${p}`) : [""];
    for (const port of ports) out.add(`${proto}${from}${port}`);
  }
  return [...out];
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

/** The ofport each local NIC gets: the one the controller gave it, or (missing or clashing) the lowest free. */
function ofportsOf(local: LogicalPort[]): Map<LogicalPort, number> {
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
  return ofportOf;
}

const hex = (n: number): string => `0x${n.toString(16)}`;
const isRouted = (n: v1.INetwork | undefined): boolean => n?.mode === v1.NetworkMode.NETWORK_MODE_BRIDGE || n?.mode === v1.NetworkMode.NETWORK_MODE_NAT;
const isBridge = (n: v1.INetwork | undefined): boolean => n?.mode === v1.NetworkMode.NETWORK_MODE_BRIDGE;
const isNat = (n: v1.INetwork | undefined): boolean => n?.mode === v1.NetworkMode.NETWORK_MODE_NAT;

/**
 * The host's network section, or undefined when it has no port on any
 * network and plays no external endpoint (its document then carries none).
 */
export function compileHostNetwork(hostId: string, view: NetworkView, options: { allProactive?: boolean } = {}): v1.HostNetwork | undefined {
  const local = [...view.portsOnHost(hostId)].filter((p) => view.network(p.networkId)).sort(byPort);
  const endpoints = [...view.endpoints()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const localEndpoints = endpoints.filter((e) => e.hostId === hostId);
  if (local.length === 0 && localEndpoints.length === 0) return undefined;
  const ofportOf = ofportsOf(local);
  const hasRouter = (n: v1.INetwork): boolean => isRouted(n) || view.routerOf(n.id ?? "") !== undefined;
  const endpointHosts = new Set(endpoints.map((e) => e.hostId).filter((h) => view.agentOf(h)));
  // A host that plays endpoints routes the outside into every bridge network, so it holds their L2 tables too.
  const localNetworks = [...new Set(local.map((p) => p.networkId))];
  const matesOf = (id: string): string[] => (view.routerOf(id)?.networks ?? []).filter((m) => m !== id && view.network(m));
  // A VM's host routes for it: it holds the L2 tables of every network its networks' routers reach.
  const networkIds = [...new Set([...localNetworks, ...localNetworks.flatMap(matesOf)])];
  if (localEndpoints.length) for (const n of view.networks()) if (isBridge(n) && !networkIds.includes(n.id ?? "") && [...view.portsOnNetwork(n.id ?? "")].length) networkIds.push(n.id ?? "");
  networkIds.sort();
  // Every port of each network this host joins; the hosts they are on (where its broadcasts go); and every host that may send
  // into it (those, and the hosts that route into it: its router-mates' hosts, and for a bridge network the endpoints' hosts).
  const members = new Map<string, LogicalPort[]>();
  const floodHosts = new Map<string, string[]>();
  const senderHosts = new Map<string, string[]>();
  const remoteHosts = new Set<string>();
  const known = (hosts: Set<string>) => [...hosts].filter((h) => h !== hostId && view.agentOf(h)).sort();
  for (const id of networkIds) {
    const ports = [...view.portsOnNetwork(id)].sort(byPort);
    members.set(id, ports);
    const hosts = new Set(ports.map((p) => p.hostId));
    floodHosts.set(id, known(hosts));
    for (const mate of matesOf(id)) for (const p of view.portsOnNetwork(mate)) hosts.add(p.hostId);
    if (isBridge(view.network(id))) for (const h of endpointHosts) hosts.add(h);
    senderHosts.set(id, known(hosts));
    for (const h of senderHosts.get(id)!) remoteHosts.add(h);
  }
  // The external network: a host with routed NICs reaches the endpoints' hosts; an endpoints' host reaches every host with routed NICs (bridge VMs' hosts send it their replies, NAT hosts own uplinks it answers to).
  const routedLocal = local.filter((p) => isRouted(view.network(p.networkId)));
  const natLocal = local.filter((p) => isNat(view.network(p.networkId)));
  const externalHosts = new Set<string>();
  if (routedLocal.length) for (const h of endpointHosts) externalHosts.add(h);
  const natHosts = new Set<string>();
  if (localEndpoints.length) {
    for (const h of endpointHosts) externalHosts.add(h);
    for (const n of view.networks()) {
      if (!isRouted(n)) continue;
      for (const p of view.portsOnNetwork(n.id ?? "")) {
        if (!view.agentOf(p.hostId)) continue;
        externalHosts.add(p.hostId);
        if (isNat(n)) natHosts.add(p.hostId);
      }
    }
  }
  externalHosts.delete(hostId);
  for (const h of externalHosts) remoteHosts.add(h);
  const tunnels = [...remoteHosts].sort().map((h, i) => v1.TunnelPort.create({ ofport: tunnelOfportBase + i, hostId: h, agentId: view.agentOf(h)! }));
  const tunnelOf = new Map(tunnels.map((t) => [t.hostId, t.ofport]));

  const flows: string[] = [];
  const ports: v1.VswitchPort[] = [];
  const neighbors: v1.Neighbor[] = [];
  const toTunnel = (segment: number, host: string) => `set_field:${hex(segment)}->tun_id,output:${tunnelOf.get(host)}`;
  for (const id of networkIds) {
    const network = view.network(id)!;
    const segment = network.segmentId ?? 0;
    const meta = `metadata=${hex(segment)}`;
    const setMeta = `set_field:${hex(segment)}->metadata`;
    const all = members.get(id)!;
    const mine = local.filter((p) => p.networkId === id);
    const theirHosts = floodHosts.get(id)!;
    // Reactive: the known-MAC flows of table 20 come one by one as packet-ins are answered.
    const reactive = network.flowSetup === v1.FlowSetup.FLOW_SETUP_REACTIVE && !options.allProactive;
    for (const p of mine) {
      const ofport = ofportOf.get(p)!;
      const { prefix, gateway } = subnetOf(network, p.ip);
      // A host-only network on no router has none: its guests get no default route.
      const router = hasRouter(network) ? gateway : "";
      ports.push(
        v1.VswitchPort.create({ ofport, vmId: p.vmId, nicIndex: p.index, networkId: id, segmentId: segment, mac: p.mac, ip: p.ip, prefixLength: prefix, gateway: router, leaseS: leaseSecondsDefault, securityGroups: [...p.securityGroups] }),
      );
      flows.push(`table=${tableIngress},priority=100,in_port=${ofport},dl_src=${p.mac} actions=${setMeta},goto_table:${tableLocalServices}`);
      if (p.securityGroups.length === 0) continue;
      flows.push(`table=${tableIngress},priority=110,in_port=${ofport},dl_src=${p.mac},ip actions=ct(commit,zone=${ofport}),${setMeta},goto_table:${tableLocalServices}`);
      const guard = `table=${tableInboundSecurity},priority=200,reg6=${ofport}`;
      flows.push(`${guard},ct_state=+trk+est actions=output:${ofport}`, `${guard},ct_state=+trk+rel actions=output:${ofport}`);
    }
    for (const host of senderHosts.get(id)!) {
      flows.push(`table=${tableIngress},priority=100,in_port=${tunnelOf.get(host)},tun_id=${hex(segment)} actions=${setMeta},goto_table:${tableFromTunnel}`);
    }
    flows.push(`table=${tableLocalServices},priority=110,${meta},udp,tp_src=68,tp_dst=67 actions=controller`);
    flows.push(`table=${tableLocalServices},priority=110,${meta},arp,arp_op=1 actions=controller`);
    for (const p of all) {
      neighbors.push(v1.Neighbor.create({ segmentId: segment, ip: p.ip, mac: p.mac }));
      const ofport = ofportOf.get(p);
      const tunnel = tunnelOf.get(p.hostId);
      if (ofport !== undefined) {
        const tables = reactive ? [tableFromTunnel] : [tableFromLocal, tableFromTunnel];
        for (const table of tables) {
          flows.push(`table=${table},priority=100,${meta},dl_dst=${p.mac} actions=output:${ofport}`);
          if (p.securityGroups.length) flows.push(`table=${table},priority=110,${meta},dl_dst=${p.mac},ip actions=set_field:${ofport}->reg6,ct(zone=${ofport},table=${tableInboundSecurity})`);
        }
      } else if (tunnel !== undefined && !reactive) {
        flows.push(`table=${tableFromLocal},priority=100,${meta},dl_dst=${p.mac} actions=${toTunnel(segment, p.hostId)}`);
      }
    }
    const localOutputs = mine.map((p) => `output:${ofportOf.get(p)}`);
    const tunnelOutputs = theirHosts.map((h) => `output:${tunnelOf.get(h)}`);
    const flood = [...localOutputs, ...(tunnelOutputs.length ? [`set_field:${hex(segment)}->tun_id`, ...tunnelOutputs] : [])];
    flows.push(`table=${tableFromLocal},priority=50,${meta},dl_dst=01:00:00:00:00:00/01:00:00:00:00:00 actions=${flood.length ? flood.join(",") : "drop"}`);
    flows.push(`table=${tableFromTunnel},priority=50,${meta},dl_dst=01:00:00:00:00:00/01:00:00:00:00:00 actions=${localOutputs.length ? localOutputs.join(",") : "drop"}`);
    if (reactive) flows.push(`table=${tableFromLocal},priority=1,${meta} actions=controller(id=${centralControllerId})`);
    if (mine.length && hasRouter(network)) routeOut(network, mine);
  }

  /**
   * A network's router on this host: its gateways answer ARP; what its VMs
   * send the router goes to the VMs of the networks on its logical router,
   * and out to the endpoints (a bridge network's as it is, a NAT network's
   * as this host's uplink address).
   */
  function routeOut(network: v1.INetwork, mine: LogicalPort[]): void {
    const segment = network.segmentId ?? 0;
    const mac = routerMac(segment);
    for (const subnet of network.subnets ?? []) neighbors.push(v1.Neighbor.create({ segmentId: segment, ip: subnet.gateway ?? "", mac }));
    flows.push(`table=${tableFromLocal},priority=120,metadata=${hex(segment)},dl_dst=${mac},ip actions=goto_table:${tableRouting}`);
    for (const mate of matesOf(network.id ?? "")) {
      const mateSegment = view.network(mate)!.segmentId ?? 0;
      for (const p of members.get(mate)!) {
        flows.push(`table=${tableRouting},priority=100,metadata=${hex(segment)},ip,nw_dst=${p.ip} actions=set_field:${routerMac(mateSegment)}->dl_src,set_field:${p.mac}->dl_dst,set_field:${hex(mateSegment)}->metadata,resubmit(,${tableFromLocal})`);
      }
    }
    if (!isRouted(network)) return;
    if (isBridge(network)) {
      for (const e of endpoints) {
        flows.push(`table=${tableRouting},priority=100,metadata=${hex(segment)},ip,nw_dst=${e.ip} actions=set_field:${routerMac(externalSegment)}->dl_src,set_field:${e.mac}->dl_dst,set_field:${hex(externalSegment)}->metadata,resubmit(,${tableFromLocal})`);
      }
      return;
    }
    const uplink = view.uplinkOf(hostId);
    if (!uplink) return;
    flows.push(`table=${tableRouting},priority=100,metadata=${hex(segment)},ip,nw_dst=${externalCidr} actions=ct(commit,zone=${natZone},nat(src=${uplink}),table=${tableSnatted})`);
    // Replies to the uplink address come back through conntrack to the NIC that started the connection.
    for (const p of mine) {
      for (const state of ["+trk+est", "+trk+rel"]) {
        flows.push(`table=${tableUnsnatted},priority=100,ct_state=${state},ip,nw_dst=${p.ip} actions=set_field:${mac}->dl_src,set_field:${p.mac}->dl_dst,set_field:${hex(segment)}->metadata,resubmit(,${tableFromTunnel})`);
      }
    }
  }

  // The external network's share on this host.
  if (routedLocal.length || localEndpoints.length) {
    const segment = externalSegment;
    const meta = `metadata=${hex(segment)}`;
    const setMeta = `set_field:${hex(segment)}->metadata`;
    const gatewayMac = routerMac(segment);
    const uplink = view.uplinkOf(hostId);
    for (const h of [...externalHosts].sort()) flows.push(`table=${tableIngress},priority=100,in_port=${tunnelOf.get(h)},tun_id=${hex(segment)} actions=${setMeta},goto_table:${tableFromTunnel}`);
    for (const e of localEndpoints) {
      ports.push(v1.VswitchPort.create({ ofport: e.ofport, vmId: e.id, networkId: externalNetworkId, segmentId: segment, mac: e.mac, ip: e.ip, prefixLength: parseCidr(externalCidr).prefix, gateway: externalGateway, leaseS: leaseSecondsDefault, external: true }));
      flows.push(`table=${tableIngress},priority=100,in_port=${e.ofport},dl_src=${e.mac} actions=${setMeta},goto_table:${tableLocalServices}`);
    }
    if (localEndpoints.length) {
      flows.push(`table=${tableLocalServices},priority=110,${meta},arp,arp_op=1 actions=controller`);
      neighbors.push(v1.Neighbor.create({ segmentId: segment, ip: externalGateway, mac: gatewayMac }));
      for (const e of endpoints) neighbors.push(v1.Neighbor.create({ segmentId: segment, ip: e.ip, mac: e.mac }));
      for (const h of [...natHosts].sort()) {
        const ip = view.uplinkOf(h);
        if (!ip) continue;
        neighbors.push(v1.Neighbor.create({ segmentId: segment, ip, mac: uplinkMac(ip) }));
        if (h !== hostId) flows.push(`table=${tableFromLocal},priority=100,${meta},dl_dst=${uplinkMac(ip)} actions=${toTunnel(segment, h)}`);
      }
      // The outside's router: what the endpoints send it goes to the bridge networks' VMs.
      flows.push(`table=${tableFromLocal},priority=120,${meta},dl_dst=${gatewayMac},ip actions=goto_table:${tableRouting}`);
      for (const id of networkIds) {
        const network = view.network(id)!;
        if (!isBridge(network)) continue;
        for (const p of members.get(id)!) {
          flows.push(`table=${tableRouting},priority=100,${meta},ip,nw_dst=${p.ip} actions=set_field:${routerMac(network.segmentId ?? 0)}->dl_src,set_field:${p.mac}->dl_dst,set_field:${hex(network.segmentId ?? 0)}->metadata,resubmit(,${tableFromLocal})`);
        }
      }
    }
    for (const e of endpoints) {
      if (e.hostId === hostId) {
        flows.push(`table=${tableFromLocal},priority=100,${meta},dl_dst=${e.mac} actions=output:${e.ofport}`);
        flows.push(`table=${tableFromTunnel},priority=100,${meta},dl_dst=${e.mac} actions=output:${e.ofport}`);
      } else if (tunnelOf.has(e.hostId)) flows.push(`table=${tableFromLocal},priority=100,${meta},dl_dst=${e.mac} actions=${toTunnel(segment, e.hostId)}`);
    }
    if (natLocal.length && uplink) {
      for (const table of [tableFromLocal, tableFromTunnel]) flows.push(`table=${table},priority=110,${meta},dl_dst=${uplinkMac(uplink)},ip actions=ct(zone=${natZone},nat,table=${tableUnsnatted})`);
      for (const e of endpoints) {
        flows.push(`table=${tableSnatted},priority=100,ip,nw_dst=${e.ip} actions=set_field:${uplinkMac(uplink)}->dl_src,set_field:${e.mac}->dl_dst,${setMeta},resubmit(,${tableFromLocal})`);
      }
    }
    const localOutputs = localEndpoints.map((e) => `output:${e.ofport}`);
    const others = [...endpointHosts].filter((h) => h !== hostId && tunnelOf.has(h)).sort().map((h) => `output:${tunnelOf.get(h)}`);
    const flood = [...localOutputs, ...(others.length ? [`set_field:${hex(segment)}->tun_id`, ...others] : [])];
    flows.push(`table=${tableFromLocal},priority=50,${meta},dl_dst=01:00:00:00:00:00/01:00:00:00:00:00 actions=${flood.length ? flood.join(",") : "drop"}`);
    flows.push(`table=${tableFromTunnel},priority=50,${meta},dl_dst=01:00:00:00:00:00/01:00:00:00:00:00 actions=${localOutputs.length ? localOutputs.join(",") : "drop"}`);
  }
  flows.push(`table=${tableLocalServices},priority=0 actions=goto_table:${tableFromLocal}`);
  if (local.some((p) => p.securityGroups.length)) flows.push(`table=${tableInboundSecurity},priority=0 actions=drop`);
  ports.sort((a, b) => a.ofport - b.ofport);
  const dedicatedSegments = networkIds.map((id) => view.network(id)!).filter((n) => n.uplink === v1.Uplink.UPLINK_DEDICATED).map((n) => n.segmentId ?? 0);
  return v1.HostNetwork.create({ ports, tunnels, flows, neighbors, controllerTables: controllerTablesEnd, dedicatedSegments });
}
