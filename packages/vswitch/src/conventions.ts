// What simdc's control and data planes agree on beyond OpenFlow itself, in
// one place: the cookie of the flows the controller installs in answer to
// packet-ins, and the controller connection those packet-ins go to (0 is the
// host's own agent, which answers DHCP and ARP).

/** Marks a flow installed in answer to a packet-in: not part of any host document. */
export const reactiveCookie = 0x5eac7n;
/** The controller connection of a reactive network's table misses: controller(id=1). */
export const centralControllerId = 1;
