// The network stack of a simulated guest, one per NIC: a DHCP client (RFC
// 2131: DISCOVER, OFFER, REQUEST, ACK; renew at T1 = 0.5 of the lease,
// rebind at T2 = 0.875, the address dropped at expiry; retransmissions at 4,
// 8, 16 ... 64 s with a second of seeded jitter), an ARP cache that answers
// for its own address, and ICMP echo, both ways. It sees only what its
// vswitch port delivers, and sends only through it.

import type { Clock, Timer } from "@simdc/common";
import { toWords, type Packet, type PacketWords } from "@simdc/vswitch";
import {
  arp,
  ARP_REPLY,
  ARP_REQUEST,
  arpBytes,
  BROADCAST,
  DHCP_CLIENT_PORT,
  DHCP_SERVER_PORT,
  dhcpBytes,
  DhcpType,
  DL_DST,
  DL_SRC,
  DL_TYPE,
  echoBytes,
  ETH_ARP,
  ETH_IP,
  ICMP_ECHO_REPLY,
  ICMP_ECHO_REQUEST,
  ICMP_ID,
  IP_ANY,
  IP_BROADCAST,
  ipv4,
  isBroadcastOrMulticast,
  NW_DST,
  NW_PROTO,
  NW_SRC,
  PROTO_ICMP,
  PROTO_TCP,
  PROTO_UDP,
  sameSubnet,
  TP_DST,
  TP_SRC,
  type DhcpMessage,
  type Payload,
} from "./packets.js";

/** "static": addressed as configured, no DHCP (an external endpoint). */
export type LeaseState = "down" | "selecting" | "requesting" | "bound" | "renewing" | "rebinding" | "static";

export interface GuestNicOptions {
  mac: bigint;
  clock: Clock;
  /** Seeded, in [0, 1). */
  random: () => number;
  /**
   * Puts a packet (its fields, or its words) on the NIC's vswitch port.
   * @returns false when the host could not send it on for now (the
   * underlay's flow control), as a full socket buffer refuses a datagram.
   */
  send(packet: Packet | PacketWords, payload: Payload, bytes: number): boolean;
  /** A traffic packet (UDP with a flow number) arrived for this NIC's address. */
  received(sourceIp: bigint, payload: Payload, bytes: number): void;
  /** An address to take as it is instead of asking DHCP. */
  staticAddress?: { ip: bigint; prefixLength: number; router: bigint };
}

/** How long a learned neighbor is trusted before it is asked again (Linux's base_reachable_time, 30 s). */
export const arpReachableMs = 30_000;
const retransmitFirstMs = 4_000;
const retransmitMaxMs = 64_000;
const renewRetryMinMs = 60_000;

export class GuestNic {
  readonly mac: bigint;
  ip = IP_ANY;
  prefixLength = 0;
  router = IP_ANY;
  lease: LeaseState = "down";
  private xid = 0;
  private server = { ip: IP_ANY, mac: BROADCAST };
  private retransmitMs = retransmitFirstMs;
  private dhcpTimer: Timer | null = null;
  private leaseTimers: Timer[] = [];
  /** Neighbors learned by ARP, with when (simulated ms): an entry is trusted for arpReachableMs, then asked again. */
  private readonly arpCache = new Map<bigint, { mac: bigint; learnedMs: number }>();
  private readonly arpWaiters = new Map<bigint, ((mac: bigint) => void)[]>();
  private readonly echoWaiters = new Map<string, (rttMs: number) => void>();

  constructor(private readonly options: GuestNicOptions) {
    this.mac = options.mac;
  }

  /** The link came up (the VM runs): ask for an address (or take the static one). */
  up(): void {
    if (this.lease !== "down") return;
    const fixed = this.options.staticAddress;
    if (!fixed) return this.discover();
    this.lease = "static";
    this.ip = fixed.ip;
    this.prefixLength = fixed.prefixLength;
    this.router = fixed.router;
  }

  /** Where a packet for `ip` goes first: to `ip` on the NIC's own subnet, else to its router (IP_ANY: no route). */
  nextHop(ip: bigint): bigint {
    return sameSubnet(this.ip, ip, this.prefixLength) ? ip : this.router;
  }

  /** The link went down (the VM stopped): the guest forgets its address, neighbors and waits. */
  down(): void {
    this.lease = "down";
    this.ip = IP_ANY;
    this.dhcpTimer?.cancel();
    this.dhcpTimer = null;
    for (const t of this.leaseTimers) t.cancel();
    this.leaseTimers = [];
    this.arpCache.clear();
  }

  receive(packet: Packet, payload: Payload, bytes: number): void {
    if (this.lease === "down") return;
    const dst = packet[DL_DST]!;
    if (dst !== this.mac && !isBroadcastOrMulticast(dst)) return;
    if (packet[DL_TYPE] === ETH_ARP) this.onArp(packet);
    else if (packet[DL_TYPE] === ETH_IP) {
      if (packet[NW_PROTO] === PROTO_UDP && packet[TP_DST] === DHCP_CLIENT_PORT && payload.dhcp) this.onDhcp(packet, payload.dhcp);
      else if (packet[NW_PROTO] === PROTO_UDP && payload.flow !== undefined && packet[NW_DST] === this.ip && this.ip !== IP_ANY) this.options.received(packet[NW_SRC]!, payload, bytes);
      else if (packet[NW_PROTO] === PROTO_TCP && payload.flow !== undefined && packet[NW_DST] === this.ip && this.ip !== IP_ANY) this.onTransaction(packet, payload, bytes);
      else if (packet[NW_PROTO] === PROTO_ICMP && packet[NW_DST] === this.ip && this.ip !== IP_ANY) this.onIcmp(packet, payload);
    }
  }

  /** The MAC a packet for `target` is sent to (its own, or its router's), from the cache or by asking (ARP); undefined after `timeoutMs` or with no route. */
  resolve(target: bigint, timeoutMs: number): Promise<bigint | undefined> {
    const ip = this.nextHop(target);
    if (ip === IP_ANY) return Promise.resolve(undefined);
    const known = this.arpCache.get(ip);
    // An address another NIC holds now (its VM gone, the address given again) must not keep its old MAC for ever.
    if (known !== undefined && this.options.clock.nowMs() - known.learnedMs < arpReachableMs) return Promise.resolve(known.mac);
    return new Promise((resolve) => {
      let waiters = this.arpWaiters.get(ip);
      if (!waiters) this.arpWaiters.set(ip, (waiters = []));
      const timer = this.options.clock.after(timeoutMs, () => {
        const list = this.arpWaiters.get(ip);
        const rest = list?.filter((w) => w !== done) ?? [];
        if (rest.length) this.arpWaiters.set(ip, rest);
        else this.arpWaiters.delete(ip);
        resolve(undefined);
      });
      const done = (mac: bigint): void => {
        timer.cancel();
        resolve(mac);
      };
      waiters.push(done);
      this.options.send(arp(ARP_REQUEST, this.mac, BROADCAST, this.ip, ip), {}, arpBytes);
    });
  }

  /** Sends one echo request; resolves with the round trip in simulated ms, or undefined after `timeoutMs`. */
  echo(targetMac: bigint, targetIp: bigint, id: number, seq: number, timeoutMs: number): Promise<number | undefined> {
    const key = `${id}:${seq}`;
    return new Promise((resolve) => {
      const timer = this.options.clock.after(timeoutMs, () => {
        this.echoWaiters.delete(key);
        resolve(undefined);
      });
      this.echoWaiters.set(key, (rttMs) => {
        timer.cancel();
        resolve(rttMs);
      });
      const packet = ipv4(this.mac, targetMac, this.ip, targetIp, PROTO_ICMP, ICMP_ECHO_REQUEST, 0n);
      packet[ICMP_ID] = BigInt(id);
      this.options.send(packet, { echoId: id, echoSeq: seq, sentMs: this.options.clock.nowMs() }, echoBytes);
    });
  }

  /** The header words of this NIC's traffic to one destination, UDP or TCP (made once a flow). */
  flowHeaders(targetMac: bigint, targetIp: bigint, proto: bigint, srcPort: bigint, dstPort: bigint): PacketWords {
    return toWords(ipv4(this.mac, targetMac, this.ip, targetIp, proto, srcPort, dstPort));
  }

  /** One packet of a traffic flow, its headers made by flowHeaders. @returns false when it was refused (see send). */
  sendWords(headers: PacketWords, payload: Payload, bytes: number): boolean {
    return this.options.send(headers, payload, bytes);
  }

  private onArp(packet: Packet): void {
    const senderIp = packet[NW_SRC]!;
    const senderMac = packet[DL_SRC]!;
    if (senderIp !== IP_ANY) this.arpCache.set(senderIp, { mac: senderMac, learnedMs: this.options.clock.nowMs() });
    if (packet[NW_PROTO] === ARP_REQUEST && this.ip !== IP_ANY && packet[NW_DST] === this.ip) {
      this.options.send(arp(ARP_REPLY, this.mac, senderMac, this.ip, senderIp), {}, arpBytes);
    }
    const waiters = this.arpWaiters.get(senderIp);
    if (waiters && packet[NW_PROTO] === ARP_REPLY) {
      this.arpWaiters.delete(senderIp);
      for (const w of waiters) w(senderMac);
    }
  }

  /**
   * A request/response flow's segment for this NIC: a request is counted and
   * answered at once with the response size it asks for (back to the MAC it
   * came from, the router's when it was routed); a response goes to the flow.
   */
  private onTransaction(packet: Packet, payload: Payload, bytes: number): void {
    this.options.received(packet[NW_SRC]!, payload, bytes);
    if (payload.reply) return;
    const response = ipv4(this.mac, packet[DL_SRC]!, this.ip, packet[NW_SRC]!, PROTO_TCP, packet[TP_DST]!, packet[TP_SRC]!);
    this.options.send(response, { flow: payload.flow, echoSeq: payload.echoSeq, sentMs: payload.sentMs, reply: true }, payload.responseBytes || bytes);
  }

  private onIcmp(packet: Packet, payload: Payload): void {
    if (packet[TP_SRC] === ICMP_ECHO_REQUEST) {
      const reply = ipv4(this.mac, packet[DL_SRC]!, this.ip, packet[NW_SRC]!, PROTO_ICMP, ICMP_ECHO_REPLY, 0n);
      reply[ICMP_ID] = packet[ICMP_ID]!;
      this.options.send(reply, payload, echoBytes);
    } else if (packet[TP_SRC] === ICMP_ECHO_REPLY) {
      const key = `${payload.echoId ?? 0}:${payload.echoSeq ?? 0}`;
      const waiter = this.echoWaiters.get(key);
      if (!waiter) return;
      this.echoWaiters.delete(key);
      waiter(this.options.clock.nowMs() - (payload.sentMs ?? 0));
    }
  }

  // ---- DHCP client ----

  private sendDhcp(type: DhcpType, address: bigint, broadcast: boolean): void {
    const dstMac = broadcast ? BROADCAST : this.server.mac;
    const srcIp = this.lease === "renewing" || this.lease === "rebinding" ? this.ip : IP_ANY;
    const dstIp = broadcast ? IP_BROADCAST : this.server.ip;
    const packet = ipv4(this.mac, dstMac, srcIp, dstIp, PROTO_UDP, DHCP_CLIENT_PORT, DHCP_SERVER_PORT);
    const dhcp: DhcpMessage = { type, xid: this.xid, address, serverId: this.server.ip, leaseS: 0, prefixLength: 0, router: IP_ANY };
    this.options.send(packet, { dhcp }, dhcpBytes);
  }

  private newXid(): void {
    this.xid = Math.floor(this.options.random() * 0xffff_ffff) >>> 0;
  }

  /** Retransmits `send` at 4, 8, 16 ... 64 s, each with up to a second of jitter either way, until cancelled. */
  private retransmit(send: () => void): void {
    this.dhcpTimer?.cancel();
    const delay = this.retransmitMs + (this.options.random() * 2 - 1) * 1_000;
    this.retransmitMs = Math.min(retransmitMaxMs, this.retransmitMs * 2);
    this.dhcpTimer = this.options.clock.after(delay, () => {
      send();
      this.retransmit(send);
    });
  }

  private discover(): void {
    this.lease = "selecting";
    this.ip = IP_ANY;
    this.server = { ip: IP_ANY, mac: BROADCAST };
    this.newXid();
    this.retransmitMs = retransmitFirstMs;
    const send = (): void => this.sendDhcp(DhcpType.Discover, IP_ANY, true);
    send();
    this.retransmit(send);
  }

  private onDhcp(packet: Packet, message: DhcpMessage): void {
    if (message.xid !== this.xid) return;
    if (message.type === DhcpType.Offer && this.lease === "selecting") {
      this.server = { ip: message.serverId, mac: packet[DL_SRC]! };
      this.lease = "requesting";
      this.retransmitMs = retransmitFirstMs;
      const send = (): void => this.sendDhcp(DhcpType.Request, message.address, true);
      send();
      this.retransmit(send);
    } else if (message.type === DhcpType.Ack && (this.lease === "requesting" || this.lease === "renewing" || this.lease === "rebinding")) {
      this.bind(message, packet[DL_SRC]!);
    } else if (message.type === DhcpType.Nak && this.lease !== "bound") {
      this.discover();
    }
  }

  private bind(ack: DhcpMessage, serverMac: bigint): void {
    this.dhcpTimer?.cancel();
    this.dhcpTimer = null;
    for (const t of this.leaseTimers) t.cancel();
    this.lease = "bound";
    this.ip = ack.address;
    this.prefixLength = ack.prefixLength;
    this.router = ack.router;
    this.server = { ip: ack.serverId, mac: serverMac };
    const leaseMs = ack.leaseS * 1_000;
    const clock = this.options.clock;
    this.leaseTimers = [
      clock.after(leaseMs * 0.5, () => this.renew("renewing", leaseMs * 0.875 - leaseMs * 0.5)),
      clock.after(leaseMs * 0.875, () => this.renew("rebinding", leaseMs - leaseMs * 0.875)),
      clock.after(leaseMs, () => this.discover()),
    ];
  }

  /** Renewing (unicast to the server) or rebinding (broadcast): retries at half the time left, at least 60 s apart. */
  private renew(state: "renewing" | "rebinding", untilNextMs: number): void {
    this.lease = state;
    this.newXid();
    const broadcast = state === "rebinding";
    this.sendDhcp(DhcpType.Request, this.ip, broadcast);
    this.dhcpTimer?.cancel();
    const retryMs = Math.max(renewRetryMinMs, untilNextMs / 2);
    if (retryMs < untilNextMs) this.dhcpTimer = this.options.clock.after(retryMs, () => this.renew(state, untilNextMs - retryMs));
  }
}
