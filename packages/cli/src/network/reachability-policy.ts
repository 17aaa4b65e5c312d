// What the network policy says one guest may reach, for `simdc net
// reachability` to compare with what the data plane does. Guests are VMs
// (their NICs) and external endpoints (the outside world):
// - a NIC reaches the NICs of its own network;
// - off its networks, a VM sends by its default route: its first NIC whose
//   network has a router (bridge and NAT networks have one, and so has a
//   network on a logical router); from there it reaches the NICs of the
//   networks on the same logical router, and, from a bridge or NAT network,
//   the outside (NAT: outbound only);
// - the outside reaches bridge networks' NICs, never NAT or host-only ones;
// - the outside reaches itself;
// and a NIC in security groups admits an echo only when a rule of one of
// them allows ICMP (or any IP) from the sender's address.

import { contains, ipToNumber, parseCidr } from "@simdc/common";
import { simdc } from "@simdc/proto";

import v1 = simdc.v1;

export interface PolicyNic {
  network: string;
  ip: string;
  securityGroups: string[];
}

export type Guest = { kind: "vm"; id: string; nics: PolicyNic[] } | { kind: "endpoint"; id: string; ip: string };

export interface PolicyWorld {
  modeOf(network: string): v1.NetworkMode | undefined;
  securityGroup(id: string): v1.ISecurityGroup | undefined;
  /** The logical router a network is on. */
  routerOf(network: string): string | undefined;
}

const routed = (mode: v1.NetworkMode | undefined) => mode === v1.NetworkMode.NETWORK_MODE_BRIDGE || mode === v1.NetworkMode.NETWORK_MODE_NAT;

/** Whether a NIC in `groupIds` admits an echo request from `sourceIp`. */
export function admitsEcho(groupIds: readonly string[], sourceIp: string, world: PolicyWorld): boolean {
  if (groupIds.length === 0) return true;
  const source = ipToNumber(sourceIp);
  return groupIds.some((id) =>
    (world.securityGroup(id)?.rules ?? []).some(
      (r) => (r.protocol === v1.SecurityProtocol.SECURITY_PROTOCOL_ANY || r.protocol === v1.SecurityProtocol.SECURITY_PROTOCOL_ICMP) && (!r.remoteCidr || contains(parseCidr(r.remoteCidr), source)),
    ),
  );
}

/** Whether `from` may reach `to` at `target` (one of to's addresses) with an echo, and the reply come back. */
export function policyAllows(from: Guest, to: Guest, target: string, world: PolicyWorld): boolean {
  if (from.kind === "endpoint") {
    if (to.kind === "endpoint") return true;
    const nic = to.nics.find((n) => n.ip === target);
    return nic !== undefined && world.modeOf(nic.network) === v1.NetworkMode.NETWORK_MODE_BRIDGE && admitsEcho(nic.securityGroups, from.ip, world);
  }
  const defaultRoute = from.nics.find((n) => routed(world.modeOf(n.network)) || world.routerOf(n.network) !== undefined);
  if (to.kind === "endpoint") return defaultRoute !== undefined && routed(world.modeOf(defaultRoute.network));
  const nic = to.nics.find((n) => n.ip === target);
  if (!nic) return false;
  const onLink = from.nics.find((n) => n.network === nic.network);
  if (onLink) return admitsEcho(nic.securityGroups, onLink.ip, world);
  const router = defaultRoute && world.routerOf(defaultRoute.network);
  return router !== undefined && router === world.routerOf(nic.network) && admitsEcho(nic.securityGroups, defaultRoute!.ip, world);
}
