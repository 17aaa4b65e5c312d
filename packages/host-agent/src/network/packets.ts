// The packets simulated guests and the vswitch's local services exchange:
// header fields in the vswitch's order (as ovs-ofctl names them), and what a
// packet carries beyond its headers (an ICMP echo's id and sequence, a DHCP
// message), which the vswitch never looks at.

import { fieldIndex, fields, type Packet } from "@simdc/vswitch";

const at = (name: string): number => fieldIndex.get(name)!;
export const IN_PORT = at("in_port");
export const DL_SRC = at("dl_src");
export const DL_DST = at("dl_dst");
export const DL_TYPE = at("dl_type");
export const NW_SRC = at("nw_src");
export const NW_DST = at("nw_dst");
export const NW_PROTO = at("nw_proto");
export const TP_SRC = at("tp_src");
export const TP_DST = at("tp_dst");
export const TUN_ID = at("tun_id");
export const METADATA = at("metadata");
/** The echo identifier, as conntrack tells pings apart by it (simdc's field; OVS matches none). */
export const ICMP_ID = at("icmp_id");
/** The pipeline's scratch fields: never carried across a tunnel. */
export const scratchFields = [METADATA, ...Array.from({ length: 8 }, (_, i) => at(`reg${i}`)), at("ct_state"), at("ct_zone"), at("ct_mark")];

export const ETH_IP = 0x0800n;
export const ETH_ARP = 0x0806n;
export const BROADCAST = 0xffff_ffff_ffffn;
export const ARP_REQUEST = 1n;
export const ARP_REPLY = 2n;
export const PROTO_ICMP = 1n;
export const PROTO_UDP = 17n;
export const PROTO_TCP = 6n;
export const ICMP_ECHO_REPLY = 0n;
export const ICMP_ECHO_REQUEST = 8n;
export const DHCP_SERVER_PORT = 67n;
export const DHCP_CLIENT_PORT = 68n;
/** 0.0.0.0 and 255.255.255.255, as DHCP uses them before a client has an address. */
export const IP_ANY = 0n;
export const IP_BROADCAST = 0xffff_ffffn;

/** RFC 2131 message types (option 53). */
export enum DhcpType {
  Discover = 1,
  Offer = 2,
  Request = 3,
  Ack = 5,
  Nak = 6,
}

export interface DhcpMessage {
  type: DhcpType;
  /** Transaction id, echoed by the server through the exchange. */
  xid: number;
  /** The address offered or granted (yiaddr), or asked for (option 50). */
  address: bigint;
  /** The server's identifier (option 54). */
  serverId: bigint;
  leaseS: number;
  prefixLength: number;
  router: bigint;
}

/** What a packet carries beyond its headers. */
export interface Payload {
  echoId?: number;
  echoSeq?: number;
  /** When the echo request (or traffic packet) left, in simulated ms. */
  sentMs?: number;
  /** A traffic flow's number at its sender; echoSeq is then its sequence. */
  flow?: number;
  /** A request/response flow's request: the response's size. */
  responseBytes?: number;
  /** A request/response flow's response. */
  reply?: boolean;
  dhcp?: DhcpMessage;
}

export const noPayload: Payload = {};

/** Ethernet + IPv4 + ICMP echo with 56 bytes of data, as ping sends by default. */
export const echoBytes = 98;
export const arpBytes = 42;
export const dhcpBytes = 342;

export function blankPacket(): Packet {
  return fields.map(() => 0n);
}

export function ethernet(src: bigint, dst: bigint, type: bigint): Packet {
  const p = blankPacket();
  p[DL_SRC] = src;
  p[DL_DST] = dst;
  p[DL_TYPE] = type;
  return p;
}

export function arp(op: bigint, srcMac: bigint, dstMac: bigint, senderIp: bigint, targetIp: bigint): Packet {
  const p = ethernet(srcMac, dstMac, ETH_ARP);
  p[NW_PROTO] = op;
  p[NW_SRC] = senderIp;
  p[NW_DST] = targetIp;
  return p;
}

export function ipv4(srcMac: bigint, dstMac: bigint, srcIp: bigint, dstIp: bigint, proto: bigint, tpSrc: bigint, tpDst: bigint): Packet {
  const p = ethernet(srcMac, dstMac, ETH_IP);
  p[NW_SRC] = srcIp;
  p[NW_DST] = dstIp;
  p[NW_PROTO] = proto;
  p[TP_SRC] = tpSrc;
  p[TP_DST] = tpDst;
  return p;
}

export function isBroadcastOrMulticast(mac: bigint): boolean {
  return (mac & 0x0100_0000_0000n) !== 0n;
}

export function sameSubnet(a: bigint, b: bigint, prefixLength: number): boolean {
  const shift = BigInt(32 - prefixLength);
  return a >> shift === b >> shift;
}
