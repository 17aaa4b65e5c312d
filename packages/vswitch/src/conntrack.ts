// The connection tracker behind the ct action, with the semantics of Linux's
// conntrack and NAT as Open vSwitch drives them: connections kept by zone and
// tuple (an IP protocol without ports by its addresses alone) and found from
// either direction, the state ct_state reports, a NAT binding chosen when a
// connection is committed, and idle timeouts on the caller's clock. Pure: no
// I/O and no clock of its own; a dry run (trace) reads the table and changes
// nothing.

/** ct_state's flags (ovs-fields(7)). */
export const CT_NEW = 0x01;
export const CT_EST = 0x02;
export const CT_REL = 0x04;
export const CT_RPL = 0x08;
export const CT_INV = 0x10;
export const CT_TRK = 0x20;
export const CT_SNAT = 0x40;
export const CT_DNAT = 0x80;

/**
 * How long a connection lives after its last packet, in seconds: Linux's
 * defaults (nf_conntrack-sysctl.rst). simdc's packets carry no TCP flags, so
 * TCP has two states only: 120 s until a reply is seen (Linux's SYN_SENT and
 * TIME_WAIT), established after. `generic` is every IP protocol but TCP, UDP
 * and ICMP (nf_conntrack_generic_timeout).
 */
export const conntrackTimeoutsS = { tcpUnreplied: 120, tcpEstablished: 432_000, udpUnreplied: 30, udpStream: 120, icmp: 30, generic: 600 } as const;
/** Connections a tracker holds unless told otherwise (Linux sizes nf_conntrack_max by memory; 65,536 is a common value). */
export const connectionsMaxDefault = 65_536;

const ETH_IP = 0x0800;
const PROTO_ICMP = 1;
const PROTO_TCP = 6;
const PROTO_UDP = 17;
const ICMP_ECHO_REPLY = 0;
const ICMP_ECHO_REQUEST = 8;
/** The protocols dpctl/dump-conntrack names (ct_dpif_format_ipproto); it prints others as numbers. */
const protocolNames: Record<number, string> = { [PROTO_ICMP]: "icmp", 2: "igmp", [PROTO_TCP]: "tcp", [PROTO_UDP]: "udp", 33: "dccp", 132: "sctp", 136: "udplite" };

/** The headers the tracker reads, as numbers (IPv4 addresses unsigned). */
export interface CtHeaders {
  dlType: number;
  proto: number;
  src: number;
  dst: number;
  /** TCP/UDP ports; ICMP type and code. */
  tpSrc: number;
  tpDst: number;
  icmpId: number;
}

/**
 * A connection's tuple in one direction. An ICMP echo is keyed as Linux keys
 * it: its identifier (in sport; dport is 0), type and code. A protocol other
 * than TCP, UDP and ICMP has no ports (both 0), as Linux's generic tracker
 * and OVS's ct_proto_other key it.
 */
export interface ConnTuple {
  proto: number;
  src: number;
  dst: number;
  sport: number;
  dport: number;
  icmpType: number;
  icmpCode: number;
}

/** The addresses and ports a NAT binding is chosen from. */
export interface NatRange {
  addressMin: number;
  addressMax: number;
  /** null when none was given: Linux's defaults apply. */
  ports: { min: number; max: number } | null;
}

/** ct's nat argument: bare (translate as the connection already does), or the range of a new connection's binding. */
export type CtNat = { manip: null } | { manip: "src" | "dst"; range: NatRange };

/** ct(commit,exec(set_field:value/mask->ct_mark)): the bits of the connection's mark to set. */
export interface CtMark {
  value: number;
  mask: number;
}

/** What one ct action asks of the tracker. */
export interface CtRequest {
  zone: number;
  commit: boolean;
  nat: CtNat | null;
  mark: CtMark | null;
}

export interface CtResult {
  /** ct_state: CT_TRK and the other flags. */
  state: number;
  zone: number;
  mark: number;
  /** The packet's tuple after NAT, when the tracker translated it. */
  translated: ConnTuple | null;
  /** The commit failed (table full, or no unique tuple): the state is +inv, and Linux drops such a packet. */
  refused: boolean;
}

export interface ConntrackStats {
  /** Connections in the table now. */
  connections: number;
  commits: number;
  /** Commits refused because the table held connectionsMax connections (Linux's `drop`). */
  fullDrops: number;
  /** Connections removed by their timeout. */
  expired: number;
  /** Commits refused because their reply tuple was taken and NAT found no free one (Linux's `insert_failed`). */
  insertFailed: number;
}

export interface ConntrackOptions {
  /** The table's size; a commit beyond it fails (the packet is +inv). */
  connectionsMax?: number;
  /**
   * Remap a source port below 16384 talking to a port at or above 32768 even
   * when it is unique, so a NATed connection cannot shadow a service port
   * (Linux 878aed8db324; Linux reverted it in 5.17 for asymmetric routing).
   * On unless false.
   */
  forcePortRemap?: boolean;
}

interface Connection {
  zone: number;
  original: ConnTuple;
  reply: ConnTuple;
  originalKey: string;
  replyKey: string;
  nat: "src" | "dst" | null;
  mark: number;
  /** Whether a packet in the reply direction has been seen (Linux's IPS_SEEN_REPLY). */
  seenReply: boolean;
  expiresMs: number;
}

export class Conntrack {
  private readonly connections = new Set<Connection>();
  /** Each connection under both its tuples: replies find it by the reply tuple. */
  private readonly byTuple = new Map<string, { connection: Connection; reply: boolean }>();
  private readonly connectionsMax: number;
  private readonly forcePortRemap: boolean;
  /** When a full table was last swept for expired connections (once a clock tick, however many commits wait). */
  private sweptMs = -Infinity;
  private commits = 0;
  private fullDrops = 0;
  private expired = 0;
  private insertFailed = 0;

  constructor(options: ConntrackOptions = {}) {
    this.connectionsMax = options.connectionsMax ?? connectionsMaxDefault;
    this.forcePortRemap = options.forcePortRemap ?? true;
  }

  /**
   * Passes a packet through the tracker, as one ct action does: finds its
   * connection (an expired one counts as absent), commits a new one if asked,
   * and says the packet's state and, with `nat`, its translated tuple. A
   * packet that is not IPv4, or an ICMP message other than an echo, is
   * +trk+inv. With `dryRun` nothing changes: not the table, the timeouts or
   * the counters.
   */
  track(headers: CtHeaders, request: CtRequest, nowMs: number, dryRun: boolean): CtResult {
    const invalid: CtResult = { state: CT_TRK | CT_INV, zone: request.zone, mark: 0, translated: null, refused: false };
    const tuple = tupleOf(headers);
    if (!tuple) return invalid;
    const hit = this.find(keyOf(request.zone, tuple), nowMs, dryRun);
    if (hit) return this.existing(hit.connection, hit.reply, request, nowMs, dryRun);
    // Linux starts an ICMP connection only with a request: a reply nobody asked for is invalid.
    if (tuple.proto === PROTO_ICMP && tuple.icmpType !== ICMP_ECHO_REQUEST) return invalid;
    if (!request.commit) return { state: CT_TRK | CT_NEW, zone: request.zone, mark: 0, translated: null, refused: false };
    return this.commit(tuple, request, nowMs, dryRun) ?? { ...invalid, refused: true };
  }

  /** Removes the connections whose timeout has passed by `nowMs`. @returns how many. */
  expire(nowMs: number): number {
    let removed = 0;
    for (const connection of this.connections) {
      if (connection.expiresMs > nowMs) continue;
      this.remove(connection);
      removed += 1;
    }
    this.expired += removed;
    return removed;
  }

  /**
   * One line a connection, as `ovs-appctl dpctl/dump-conntrack` prints them:
   * `udp,orig=(src=..,dst=..,sport=..,dport=..),reply=(..),zone=5,mark=1`
   * (zone and mark only when not 0). Expired connections not yet swept are
   * left out.
   */
  dump(nowMs: number): string[] {
    const lines: string[] = [];
    for (const c of this.connections) {
      if (c.expiresMs <= nowMs) continue;
      let line = `${protocolNames[c.original.proto] ?? c.original.proto},orig=(${formatTuple(c.original)}),reply=(${formatTuple(c.reply)})`;
      if (c.zone) line += `,zone=${c.zone}`;
      if (c.mark) line += `,mark=${c.mark}`;
      lines.push(line);
    }
    return lines;
  }

  stats(): ConntrackStats {
    return { connections: this.connections.size, commits: this.commits, fullDrops: this.fullDrops, expired: this.expired, insertFailed: this.insertFailed };
  }

  /** The live connection a tuple key names, and in which direction. */
  private find(key: string, nowMs: number, dryRun: boolean): { connection: Connection; reply: boolean } | undefined {
    const hit = this.byTuple.get(key);
    if (!hit || hit.connection.expiresMs > nowMs) return hit;
    // Expired: absent. A live pass removes it now rather than at the next sweep.
    if (!dryRun) {
      this.remove(hit.connection);
      this.expired += 1;
    }
    return undefined;
  }

  private existing(c: Connection, reply: boolean, request: CtRequest, nowMs: number, dryRun: boolean): CtResult {
    const mark = request.commit && request.mark ? withMark(c.mark, request.mark) : c.mark;
    if (!dryRun) {
      if (reply) c.seenReply = true;
      c.expiresMs = nowMs + timeoutMs(c);
      c.mark = mark;
    }
    let state = CT_TRK | (reply ? CT_EST | CT_RPL : c.seenReply ? CT_EST : CT_NEW);
    let translated: ConnTuple | null = null;
    // nat with a range on a connection that exists is a bare nat (ovs-actions(7)).
    if (request.nat && c.nat) {
      // Each direction is rewritten into the other direction's tuple, inverted.
      translated = invert(reply ? c.original : c.reply);
      // The flag names the header rewritten: a reply to a SNATed connection has its destination restored (Linux's ovs_nat_update_key).
      state |= (c.nat === "src") !== reply ? CT_SNAT : CT_DNAT;
    }
    return { state, zone: c.zone, mark, translated, refused: false };
  }

  /** A new connection, NAT bound if asked. @returns null when the table is full or no unique reply tuple is left. */
  private commit(tuple: ConnTuple, request: CtRequest, nowMs: number, dryRun: boolean): CtResult | null {
    if (this.connections.size >= this.connectionsMax && !this.roomAfterSweep(nowMs, dryRun)) {
      if (!dryRun) this.fullDrops += 1;
      return null;
    }
    const nat = request.nat && request.nat.manip !== null ? request.nat : null;
    const translated = nat ? this.bind(request.zone, tuple, nat.manip, nat.range, nowMs, dryRun) : tuple;
    // Without NAT the reply tuple can still be taken: by a connection NATed to exactly this packet's reverse (Linux refuses the clash at confirm).
    if (!translated || this.find(keyOf(request.zone, invert(translated)), nowMs, dryRun)) {
      if (!dryRun) this.insertFailed += 1;
      return null;
    }
    const reply = invert(translated);
    const c: Connection = {
      zone: request.zone,
      original: tuple,
      reply,
      originalKey: keyOf(request.zone, tuple),
      replyKey: keyOf(request.zone, reply),
      nat: nat?.manip ?? null,
      mark: request.mark ? withMark(0, request.mark) : 0,
      seenReply: false,
      expiresMs: 0,
    };
    c.expiresMs = nowMs + timeoutMs(c);
    if (!dryRun) {
      this.connections.add(c);
      // The reply key first, so a tuple that is its own reverse finds the original direction.
      this.byTuple.set(c.replyKey, { connection: c, reply: true });
      this.byTuple.set(c.originalKey, { connection: c, reply: false });
      this.commits += 1;
    }
    const state = CT_TRK | CT_NEW | (c.nat === "src" ? CT_SNAT : c.nat === "dst" ? CT_DNAT : 0);
    return { state, zone: c.zone, mark: c.mark, translated: nat ? translated : null, refused: false };
  }

  /** Whether a full table has room once expired connections are gone. */
  private roomAfterSweep(nowMs: number, dryRun: boolean): boolean {
    if (dryRun) {
      for (const c of this.connections) if (c.expiresMs <= nowMs) return true;
      return false;
    }
    if (nowMs > this.sweptMs) {
      this.sweptMs = nowMs;
      this.expire(nowMs);
    }
    return this.connections.size < this.connectionsMax;
  }

  /**
   * The tuple a new connection is translated to, as Linux's get_unique_tuple
   * chooses it: the address from the range (picked by the original source,
   * so a host keeps its address), the port (an ICMP echo's identifier) kept
   * if the reply tuple stays unique, otherwise the lowest free one in the
   * range. Without a port range a source port stays in its class (1-511,
   * 600-1023, 1024-65535) and a destination port is never changed. A
   * protocol without ports gets the address only, or nothing when that tuple
   * is taken (Linux's nf_nat_l4proto_unique_tuple has no ports to try).
   * @returns null when the range has no unique tuple left.
   */
  private bind(zone: number, tuple: ConnTuple, manip: "src" | "dst", range: NatRange, nowMs: number, dryRun: boolean): ConnTuple | null {
    const icmp = tuple.proto === PROTO_ICMP;
    const address = range.addressMin + (tuple.src % (range.addressMax - range.addressMin + 1));
    const base = manip === "src" ? { ...tuple, src: address } : { ...tuple, dst: address };
    const free = (t: ConnTuple): boolean => !this.find(keyOf(zone, invert(t)), nowMs, dryRun);
    if (!icmp && !hasPorts(tuple.proto)) return free(base) ? base : null;
    // The port NAT may change: the one on the rewritten side; an echo's identifier serves both.
    const onDst = manip === "dst" && !icmp;
    const withPort = (port: number): ConnTuple => (onDst ? { ...base, dport: port } : { ...base, sport: port });
    let min: number;
    let max: number;
    if (range.ports) ({ min, max } = range.ports);
    else if (icmp) [min, max] = [0, 0xffff];
    else if (manip === "dst") return free(base) ? base : null;
    else [min, max] = base.sport < 512 ? [1, 511] : base.sport < 1024 ? [600, 1023] : [1024, 0xffff];
    const port = onDst ? base.dport : base.sport;
    const forced = this.forcePortRemap && manip === "src" && !icmp && tuple.sport < 16_384 && tuple.dport >= 32_768;
    const inRange = !range.ports || (port >= min && port <= max);
    if (!forced && inRange && free(base)) return base;
    for (let p = min; p <= max; p++) {
      const candidate = withPort(p);
      if (free(candidate)) return candidate;
    }
    return null;
  }

  private remove(c: Connection): void {
    this.connections.delete(c);
    this.byTuple.delete(c.originalKey);
    this.byTuple.delete(c.replyKey);
  }
}

function tupleOf(h: CtHeaders): ConnTuple | null {
  if (h.dlType !== ETH_IP) return null;
  if (h.proto === PROTO_TCP || h.proto === PROTO_UDP) return { proto: h.proto, src: h.src, dst: h.dst, sport: h.tpSrc, dport: h.tpDst, icmpType: 0, icmpCode: 0 };
  if (h.proto === PROTO_ICMP) {
    if (h.tpSrc !== ICMP_ECHO_REQUEST && h.tpSrc !== ICMP_ECHO_REPLY) return null;
    return { proto: h.proto, src: h.src, dst: h.dst, sport: h.icmpId, dport: 0, icmpType: h.tpSrc, icmpCode: h.tpDst };
  }
  return { proto: h.proto, src: h.src, dst: h.dst, sport: 0, dport: 0, icmpType: 0, icmpCode: 0 };
}

/** Whether the tracker keys (and NAT may remap) the protocol's ports. */
export function hasPorts(proto: number): boolean {
  return proto === PROTO_TCP || proto === PROTO_UDP;
}

/** The tuple of the other direction: addresses swapped, and ports, or an echo request's type for its reply's. */
function invert(t: ConnTuple): ConnTuple {
  if (t.proto === PROTO_ICMP) return { ...t, src: t.dst, dst: t.src, icmpType: t.icmpType === ICMP_ECHO_REQUEST ? ICMP_ECHO_REPLY : ICMP_ECHO_REQUEST };
  return { ...t, src: t.dst, dst: t.src, sport: t.dport, dport: t.sport };
}

function keyOf(zone: number, t: ConnTuple): string {
  return `${zone}/${t.proto}/${t.src}/${t.dst}/${t.sport}/${t.dport}/${t.icmpType}/${t.icmpCode}`;
}

function timeoutMs(c: Connection): number {
  const t = conntrackTimeoutsS;
  const proto = c.original.proto;
  const s = proto === PROTO_TCP ? (c.seenReply ? t.tcpEstablished : t.tcpUnreplied) : proto === PROTO_UDP ? (c.seenReply ? t.udpStream : t.udpUnreplied) : proto === PROTO_ICMP ? t.icmp : t.generic;
  return s * 1_000;
}

function withMark(mark: number, set: CtMark): number {
  return ((mark & ~set.mask) | (set.value & set.mask)) >>> 0;
}

function formatAddress(a: number): string {
  return [24, 16, 8, 0].map((s) => (a >>> s) & 0xff).join(".");
}

function formatTuple(t: ConnTuple): string {
  const ends = `src=${formatAddress(t.src)},dst=${formatAddress(t.dst)}`;
  return t.proto === PROTO_ICMP ? `${ends},id=${t.sport},type=${t.icmpType},code=${t.icmpCode}` : `${ends},sport=${t.sport},dport=${t.dport}`;
}
