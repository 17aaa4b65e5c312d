// What simdc's control and data planes agree on beyond OpenFlow itself, in
// one place: the cookie of the flows the controller installs in answer to
// packet-ins, and the controller connection those packet-ins go to (0 is the
// host's own agent, which answers DHCP and ARP), and the shape of the
// inbound admission flows hosts expand from security groups.

/** Marks a flow installed in answer to a packet-in: not part of any host document. */
export const reactiveCookie = 0x5eac7n;
/** The controller connection of a reactive network's table misses: controller(id=1). */
export const centralControllerId = 1;

/**
 * The table where a guarded port's inbound IP is judged, with the port in
 * reg6, after conntrack in the port's zone (its ofport).
 */
export const tableInboundSecurity = 35;

/**
 * The flow that admits a new inbound connection to a guarded port when its
 * packet matches `match` (an ovs-ofctl match, from a security group's
 * document), committing it in the port's zone. The controller compiles the
 * groups' matches once; each host expands them for its own ports with this.
 */
export function admissionFlow(ofport: number, match: string): string {
  return `table=${tableInboundSecurity},priority=100,reg6=${ofport},ct_state=+trk+new,${match} actions=ct(commit,zone=${ofport}),output:${ofport}`;
}

/**
 * A guarded port's admission flows: the matches of all its groups, each
 * once, in the order its groups and their documents give them (a group
 * with no document admits nothing).
 */
export function admissionFlows(ofport: number, groupIds: readonly string[], admissionsOf: (groupId: string) => readonly string[] | undefined): string[] {
  const matches = new Set<string>();
  for (const groupId of groupIds) for (const match of admissionsOf(groupId) ?? []) matches.add(match);
  return [...matches].map((match) => admissionFlow(ofport, match));
}
