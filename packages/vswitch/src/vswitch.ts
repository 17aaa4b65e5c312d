// A virtual switch with OpenFlow 1.3 semantics as Open vSwitch implements
// them: numbered tables of flows, the highest priority match wins, a miss
// drops; actions run in order (output, in_port, normal, controller,
// resubmit, goto_table, set_field and mod_*, VLAN push/strip, ct and
// ct_clear); outputs to the packet's own in_port are dropped, as OVS does.
// Each table is a tuple-space classifier (flows grouped by mask, groups tried
// from the highest priority down, stopping when no group can beat the best
// match), and an exact-match cache answers a packet seen before until any
// flow or learned MAC changes; a verdict that went through the connection
// tracker depends on its state and is never cached. Pure: no I/O, time from
// the injected clock.

import { invalidArgument } from "@simdc/common";
import { Conntrack, hasPorts, type ConntrackOptions, type ConntrackStats, type CtResult } from "./conntrack.js";
import { fields, fieldIndex, VLAN_PRESENT, VLAN_VID } from "./fields.js";
import { formatFlow, parseFlow, type Action, type FlowSpec, type MatchField, type Packet } from "./flow-syntax.js";
import { fromWords, hashWords, sameWords, toWords, type PacketWords } from "./words.js";

export interface Flow extends FlowSpec {
  nPackets: number;
  nBytes: number;
  installedMs: number;
  lastUsedMs: number;
}

/**
 * A flow as installed: its parsed spec, read through rather than copied (an
 * agent's hosts install the same parsed flow, and a copy of its fields cost
 * about 50 bytes a flow at 900,000 flows), and this vswitch's counters.
 */
class InstalledFlow implements Flow {
  nPackets = 0;
  nBytes = 0;
  lastUsedMs: number;

  constructor(
    private readonly spec: FlowSpec,
    readonly installedMs: number,
  ) {
    this.lastUsedMs = installedMs;
  }

  get table(): number {
    return this.spec.table;
  }
  get priority(): number {
    return this.spec.priority;
  }
  get cookie(): bigint {
    return this.spec.cookie;
  }
  get idleTimeoutS(): number {
    return this.spec.idleTimeoutS;
  }
  get hardTimeoutS(): number {
    return this.spec.hardTimeoutS;
  }
  get match(): MatchField[] {
    return this.spec.match;
  }
  get actions(): Action[] {
    return this.spec.actions;
  }
}

export interface Verdict {
  /** Output port numbers, in order; empty when the packet was dropped. */
  outputs: number[];
  /**
   * The packet's headers after every action; when a ct(table=N) sent a copy
   * on, the last copy's (the one that went through the tracker, NATed).
   */
  packet: Packet;
  /** The flows it matched, in order (the tables it went through). */
  matched: Flow[];
  /** Copies sent to the controller (packet-in). */
  packetIns: number;
  /** The controller connections they went to (controller(id=N)), in order. */
  controllerIds: number[];
}

/** How deep resubmits may nest, as OVS limits them. */
export const resubmitDepthMax = 64;
/** How many times a packet's copies may go through ct(table=N) in turn (OVS's userspace datapath: MAX_RECIRC_DEPTH). */
export const recirculationDepthMax = 8;
/** Copies ct(table=N) may make of one packet in all; more are dropped, so a flow that forks in a loop stays bounded. */
export const recirculationsMax = 64;
const cacheEntriesMax = 65_536;
const field = (name: string): number => fieldIndex.get(name)!;
const IN_PORT = field("in_port");
const DL_SRC = field("dl_src");
const DL_DST = field("dl_dst");
const DL_TYPE = field("dl_type");
const VLAN_TCI = field("vlan_tci");
const NW_SRC = field("nw_src");
const NW_DST = field("nw_dst");
const NW_PROTO = field("nw_proto");
const TP_SRC = field("tp_src");
const TP_DST = field("tp_dst");
const ICMP_ID = field("icmp_id");
const CT_STATE = field("ct_state");
const CT_ZONE = field("ct_zone");
const CT_MARK = field("ct_mark");
const PROTO_ICMP = 1n;

interface CacheEntry {
  generation: number;
  words: PacketWords;
  verdict: Verdict;
  /** Counts not yet folded into the matched flows (OVS keeps datapath stats the same way). */
  packets: number;
  bytes: number;
}

interface MaskGroup {
  /** The fields this group's flows match, and their masks. */
  fieldIds: number[];
  masks: bigint[];
  /** By match key: the one flow, or several of different priorities, highest first (one is the rule: no array for it). */
  flows: Map<string, Flow | Flow[]>;
  maxPriority: number;
}

function keyOf(packet: Packet, fieldIds: number[], masks: bigint[]): string {
  let key = "";
  for (let i = 0; i < fieldIds.length; i++) key += `${(packet[fieldIds[i]!]! & masks[i]!).toString(16)},`;
  return key;
}

/** The shape of a match: which fields, under which masks. */
function shapeOf(fieldIds: number[], masks: bigint[]): string {
  return `${fieldIds.join(",")}/${masks.map((m) => m.toString(16)).join(",")}`;
}

/** One pass of a packet through the pipeline, with what its copies and the caller need to know. */
interface Walk {
  verdict: Verdict;
  /** A live walk learns MACs and changes the connection tracker; a trace changes nothing. */
  live: boolean;
  /** Whether a ct action ran: the verdict then depends on the tracker's state. */
  tracked: boolean;
  /** Copies ct(table=N) sent on, waiting until the current actions are done (OVS recirculates them the same way); null until there is one. */
  recirculations: { packet: Packet; table: number; depth: number }[] | null;
  /** How many times the packet now walking has been through ct(table=N). */
  depth: number;
  /** A ct commit failed: the packet now walking runs no more actions (the kernel datapath drops it). */
  stopped: boolean;
}

/** A match's shape: which fields, under which masks (one object for every match of that shape). */
interface Shape {
  fieldIds: number[];
  masks: bigint[];
  text: string;
}

interface MatchKeys {
  shape: Shape;
  key: string;
}

/** Shapes by their text: a host's thousands of flows have a handful. */
const shapesKeptMax = 10_000;
const shapes = new Map<string, Shape>();

/**
 * A match's shape and key, made once per parsed match: an agent installs
 * the same parsed flow in hundreds of hosts' tables (and an installed Flow
 * shares its spec's match), so building the strings for every install was
 * most of what installing cost. The shape is shared, not copied per match.
 */
const matchKeysOf = new WeakMap<FlowSpec["match"], MatchKeys>();

function keysOf(match: FlowSpec["match"]): MatchKeys {
  let keys = matchKeysOf.get(match);
  if (!keys) {
    const fieldIds = match.map((m) => m.field);
    const masks = match.map((m) => m.mask);
    const text = shapeOf(fieldIds, masks);
    let shape = shapes.get(text);
    if (!shape) {
      shape = { fieldIds, masks, text };
      // Bounded: hand-added flows could make shapes without end.
      if (shapes.size < shapesKeptMax) shapes.set(text, shape);
    }
    keys = { shape, key: match.map((m) => `${m.value.toString(16)},`).join("") };
    matchKeysOf.set(match, keys);
  }
  return keys;
}

const firstOf = (entry: Flow | Flow[]): Flow => (Array.isArray(entry) ? entry[0]! : entry);
const listOf = (entry: Flow | Flow[] | undefined): Flow[] => (entry === undefined ? [] : Array.isArray(entry) ? entry : [entry]);

/** One OpenFlow table: flows grouped by the shape of their match. */
class FlowTable {
  private groups: MaskGroup[] = [];
  /** The same groups by shape: installing or removing a flow finds its group at once, however many there are. */
  private readonly byShape = new Map<string, MaskGroup>();
  readonly flows = new Set<Flow>();
  /** The flows with an idle or hard timeout: expiry looks at these only, not at the whole table every second. */
  readonly timed = new Set<Flow>();

  add(flow: Flow): Flow | undefined {
    const {
      shape: { fieldIds, masks, text: shape },
      key,
    } = keysOf(flow.match);
    let group = this.byShape.get(shape);
    if (!group) {
      group = { fieldIds, masks, flows: new Map(), maxPriority: -1 };
      this.groups.push(group);
      this.byShape.set(shape, group);
    }
    const same = listOf(group.flows.get(key));
    // A flow with the same match and priority replaces the one there (ovs-ofctl add-flow).
    const replaced = same.find((f) => f.priority === flow.priority);
    const kept = same.filter((f) => f !== replaced);
    kept.push(flow);
    kept.sort((a, b) => b.priority - a.priority);
    group.flows.set(key, kept.length === 1 ? flow : kept);
    if (replaced) {
      this.flows.delete(replaced);
      this.timed.delete(replaced);
    }
    this.flows.add(flow);
    if (flow.idleTimeoutS || flow.hardTimeoutS) this.timed.add(flow);
    // Installing a flow costs its group, not the table: the maximum only grows here (a replaced flow had the same priority).
    if (flow.priority > group.maxPriority) {
      group.maxPriority = flow.priority;
      this.sortGroups();
    }
    return replaced;
  }

  /** The flow with exactly this priority and match. */
  find(spec: FlowSpec): Flow | undefined {
    const {
      shape: { text: shape },
      key,
    } = keysOf(spec.match);
    return listOf(this.byShape.get(shape)?.flows.get(key)).find((f) => f.priority === spec.priority);
  }

  remove(flow: Flow): void {
    if (!this.flows.delete(flow)) return;
    this.timed.delete(flow);
    const {
      shape: { text: shape },
      key,
    } = keysOf(flow.match);
    const group = this.byShape.get(shape);
    const list = listOf(group?.flows.get(key));
    if (!group || !list.includes(flow)) return;
    const rest = list.filter((f) => f !== flow);
    if (rest.length) group.flows.set(key, rest.length === 1 ? rest[0]! : rest);
    else group.flows.delete(key);
    if (group.flows.size === 0) {
      this.byShape.delete(shape);
      this.groups = this.groups.filter((g) => g !== group);
    } else if (flow.priority === group.maxPriority) {
      let max = -1;
      for (const entry of group.flows.values()) max = Math.max(max, firstOf(entry).priority);
      group.maxPriority = max;
      this.sortGroups();
    }
  }

  private sortGroups(): void {
    this.groups.sort((a, b) => b.maxPriority - a.maxPriority);
  }

  lookup(packet: Packet): Flow | undefined {
    let best: Flow | undefined;
    for (const g of this.groups) {
      if (best && g.maxPriority <= best.priority) break;
      const entry = g.flows.get(keyOf(packet, g.fieldIds, g.masks));
      const hit = entry === undefined ? undefined : firstOf(entry);
      if (hit && (!best || hit.priority > best.priority)) best = hit;
    }
    return best;
  }
}

export interface VswitchOptions {
  /** The switch's port numbers (where normal floods). */
  ports: number[];
  /** Simulated time in ms. */
  now: () => number;
  /** The connection tracker's size and NAT policy. */
  conntrack?: ConntrackOptions;
}

export class Vswitch {
  private readonly tables = new Map<number, FlowTable>();
  /** MAC learning for the normal action: address -> port. */
  private readonly learned = new Map<bigint, number>();
  /** The exact-match cache: verdicts by the hash of the packet's words (collisions kept apart by comparing them). */
  private readonly cache = new Map<number, CacheEntry[]>();
  private cached = 0;
  /** Bumped on every change that can change a verdict (flows, learned MACs). */
  private generation = 0;
  private readonly conntrack: Conntrack;
  cacheHits = 0;
  cacheMisses = 0;

  constructor(private readonly options: VswitchOptions) {
    this.conntrack = new Conntrack(options.conntrack);
  }

  /** Adds (or replaces) a flow given in ovs-ofctl syntax or parsed. @throws SimdcError INVALID_ARGUMENT. */
  addFlow(flow: string | FlowSpec): Flow {
    const spec = typeof flow === "string" ? parseFlow(flow) : flow;
    const now = this.options.now();
    const installed = new InstalledFlow(spec, now);
    let table = this.tables.get(spec.table);
    if (!table) {
      table = new FlowTable();
      this.tables.set(spec.table, table);
    }
    table.add(installed);
    this.generation += 1;
    return installed;
  }

  /**
   * Removes the one flow with exactly this table, priority and match
   * (del-flows --strict). @returns whether there was one.
   */
  deleteFlowStrict(spec: FlowSpec): boolean {
    const table = this.tables.get(spec.table);
    const flow = table?.find(spec);
    if (!table || !flow) return false;
    table.remove(flow);
    this.generation += 1;
    return true;
  }

  /** The ports normal floods to (they change as NICs and tunnels come and go). */
  setPorts(ports: number[]): void {
    this.options.ports = ports;
    this.generation += 1;
  }

  /** Removes flows: all, those of one table, or those whose cookie matches under the mask. @returns how many. */
  deleteFlows(filter: { table?: number; cookie?: bigint; cookieMask?: bigint } = {}): number {
    let removed = 0;
    for (const [id, table] of this.tables) {
      if (filter.table !== undefined && filter.table !== id) continue;
      for (const flow of [...table.flows]) {
        if (filter.cookie !== undefined && (flow.cookie & (filter.cookieMask ?? -1n)) !== (filter.cookie & (filter.cookieMask ?? -1n))) continue;
        table.remove(flow);
        removed += 1;
      }
    }
    if (removed) this.generation += 1;
    return removed;
  }

  /** Adds the counts the cache holds to the flows they belong to. */
  private foldStats(): void {
    const now = this.options.now();
    for (const bucket of this.cache.values()) for (const entry of bucket) fold(entry, now);
  }

  /** Every flow, by table then priority (highest first), as ovs-ofctl dump-flows lists them, with current counters. */
  flows(): Flow[] {
    this.foldStats();
    return [...this.tables.entries()].sort((a, b) => a[0] - b[0]).flatMap(([, t]) => [...t.flows].sort((a, b) => b.priority - a.priority));
  }

  /** As ovs-ofctl dump-flows prints them: every flow, or one table's. */
  dumpFlows(table?: number): string[] {
    return this.flows()
      .filter((f) => table === undefined || f.table === table)
      .map((f) => `n_packets=${f.nPackets}, n_bytes=${f.nBytes}, ${formatFlow(f)}`);
  }

  /** How many flows have an idle or hard timeout (none: nothing for expiry to do). */
  get timedFlowCount(): number {
    let n = 0;
    for (const table of this.tables.values()) n += table.timed.size;
    return n;
  }

  /** Removes the flows whose idle or hard timeout has passed. @returns them (flow-removed). */
  expire(): { flow: Flow; reason: "idle" | "hard" }[] {
    if (this.timedFlowCount === 0) return [];
    this.foldStats();
    const now = this.options.now();
    const out: { flow: Flow; reason: "idle" | "hard" }[] = [];
    for (const table of this.tables.values()) {
      for (const flow of [...table.timed]) {
        const reason = flow.hardTimeoutS && now - flow.installedMs >= flow.hardTimeoutS * 1000 ? "hard" : flow.idleTimeoutS && now - flow.lastUsedMs >= flow.idleTimeoutS * 1000 ? "idle" : null;
        if (!reason) continue;
        table.remove(flow);
        out.push({ flow, reason });
      }
    }
    if (out.length) this.generation += 1;
    return out;
  }

  /**
   * Removes the connections whose idle timeout has passed (the agent calls
   * it every second; a lookup also treats an expired connection as gone).
   * @returns how many.
   */
  expireConnections(): number {
    return this.conntrack.expire(this.options.now());
  }

  /** The tracked connections, one a line, as `ovs-appctl dpctl/dump-conntrack` prints them. */
  dumpConntrack(): string[] {
    return this.conntrack.dump(this.options.now());
  }

  /** The connection tracker's counters. */
  conntrackStats(): ConntrackStats {
    return this.conntrack.stats();
  }

  /**
   * What the pipeline does with `packet`, changing nothing (ofproto/trace):
   * not the flows' counters, the learned MACs or the connection tracker. The
   * packet's ct_* fields are taken as given, as ofproto/trace takes them.
   */
  trace(packet: Packet): Verdict {
    return this.walk(packet, false).verdict;
  }

  /** Forwards `packet` (of `bytes` bytes): the verdict, with flow counters and MAC learning. */
  process(packet: Packet, bytes = 64): Verdict {
    return this.processWords(toWords(packet), bytes);
  }

  /**
   * Forwards a packet in the data plane's word form: the hot path. A packet
   * seen since the last change of flows or learned MACs is answered from the
   * cache without touching the classifier.
   */
  processWords(words: PacketWords, bytes = 64): Verdict {
    const hash = hashWords(words);
    const bucket = this.cache.get(hash);
    let hit: CacheEntry | undefined;
    if (bucket) {
      for (const entry of bucket) {
        if (entry.generation === this.generation && sameWords(entry.words, words)) {
          hit = entry;
          break;
        }
      }
    }
    if (hit) {
      this.cacheHits += 1;
      // No clock read a hit: the flows' last use is stamped when the counts are folded into them.
      hit.packets += 1;
      hit.bytes += bytes;
      return hit.verdict;
    }
    this.cacheMisses += 1;
    const { verdict, tracked } = this.walk(fromWords(words), true);
    if (tracked) {
      // The tracker's state decided this verdict, and it changes with every packet: it is counted now and never cached.
      const now = this.options.now();
      for (const flow of verdict.matched) {
        flow.nPackets += 1;
        flow.nBytes += bytes;
        flow.lastUsedMs = Math.max(flow.lastUsedMs, now);
      }
      return verdict;
    }
    if (this.cached >= cacheEntriesMax) {
      this.foldStats();
      this.cache.clear();
      this.cached = 0;
    }
    // Entries of an older generation in this bucket are dead: their counts go to their flows, and the new one replaces them.
    const live: CacheEntry[] = [];
    for (const e of bucket ?? []) {
      if (e.generation === this.generation) live.push(e);
      else fold(e, this.options.now());
    }
    live.push({ generation: this.generation, words: words.slice(), verdict, packets: 1, bytes });
    this.cached += live.length - (bucket?.length ?? 0);
    this.cache.set(hash, live);
    return verdict;
  }

  private walk(input: Packet, live: boolean): Walk {
    const packet = [...input];
    // A packet arrives at a port untracked, whatever its words say (a tunnel's sender may not have cleared them).
    if (live) packet[CT_STATE] = packet[CT_ZONE] = packet[CT_MARK] = 0n;
    const verdict: Verdict = { outputs: [], packet, matched: [], packetIns: 0, controllerIds: [] };
    const walk: Walk = { verdict, live, tracked: false, recirculations: null, depth: 0, stopped: false };
    this.visit(0, packet, walk, 0);
    for (let i = 0; walk.recirculations && i < walk.recirculations.length; i++) {
      const copy = walk.recirculations[i]!;
      walk.depth = copy.depth;
      walk.stopped = false;
      verdict.packet = copy.packet;
      this.visit(copy.table, copy.packet, walk, 0);
    }
    return walk;
  }

  private visit(tableId: number, packet: Packet, walk: Walk, depth: number): void {
    if (depth > resubmitDepthMax) return;
    const flow = this.tables.get(tableId)?.lookup(packet);
    if (!flow) return;
    const verdict = walk.verdict;
    verdict.matched.push(flow);
    const inPort = Number(packet[IN_PORT]);
    for (const action of flow.actions) {
      switch (action.kind) {
        case "output":
          if (action.port !== inPort) verdict.outputs.push(action.port);
          break;
        case "in_port":
          verdict.outputs.push(inPort);
          break;
        case "controller":
          verdict.packetIns += 1;
          verdict.controllerIds.push(action.id);
          break;
        case "normal":
          this.normal(packet, inPort, verdict, walk.live);
          break;
        case "resubmit": {
          const saved = packet[IN_PORT]!;
          if (action.port !== null) packet[IN_PORT] = BigInt(action.port);
          this.visit(action.table ?? tableId, packet, walk, depth + 1);
          packet[IN_PORT] = saved;
          break;
        }
        case "goto_table":
          this.visit(action.table, packet, walk, depth + 1);
          break;
        case "set":
          packet[action.field] = action.value;
          break;
        case "mod_vlan_vid":
          // Sets the VID, pushing a tag when there is none (priority bits kept).
          packet[VLAN_TCI] = (packet[VLAN_TCI]! & ~(VLAN_PRESENT | VLAN_VID)) | VLAN_PRESENT | action.vid;
          break;
        case "strip_vlan":
          packet[VLAN_TCI] = 0n;
          break;
        case "ct":
          this.track(action, packet, walk);
          break;
        case "ct_clear":
          packet[CT_STATE] = packet[CT_ZONE] = packet[CT_MARK] = 0n;
          break;
      }
      if (walk.stopped) return;
    }
  }

  /**
   * The ct action. The packet goes on untracked (OVS clears the ct_* fields
   * after ct: they exist only for the copy), NATed when there is no table; a
   * ct(table=N) copy carries the tracker's verdict and NAT and waits its turn.
   * A failed commit stops the packet (so it never leaves un-NATed); its copy
   * still goes on, +trk+inv, for the pipeline to see.
   */
  private track(action: Extract<Action, { kind: "ct" }>, packet: Packet, walk: Walk): void {
    walk.tracked = true;
    const result = this.conntrack.track(
      { dlType: Number(packet[DL_TYPE]), proto: Number(packet[NW_PROTO]), src: Number(packet[NW_SRC]), dst: Number(packet[NW_DST]), tpSrc: Number(packet[TP_SRC]), tpDst: Number(packet[TP_DST]), icmpId: Number(packet[ICMP_ID]) },
      action,
      this.options.now(),
      !walk.live,
    );
    if (action.table === null) translate(packet, result);
    else if (walk.depth < recirculationDepthMax && (walk.recirculations?.length ?? 0) < recirculationsMax) {
      const copy = [...packet];
      translate(copy, result);
      copy[CT_STATE] = BigInt(result.state);
      copy[CT_ZONE] = BigInt(result.zone);
      copy[CT_MARK] = BigInt(result.mark);
      (walk.recirculations ??= []).push({ packet: copy, table: action.table, depth: walk.depth + 1 });
    }
    packet[CT_STATE] = packet[CT_ZONE] = packet[CT_MARK] = 0n;
    if (result.refused) walk.stopped = true;
  }

  /** The normal action: learn where the source is, send to where the destination is, or flood. */
  private normal(packet: Packet, inPort: number, verdict: Verdict, learn: boolean): void {
    const src = packet[DL_SRC]!;
    if (learn && (src & 0x010000000000n) === 0n && this.learned.get(src) !== inPort) {
      this.learned.set(src, inPort);
      this.generation += 1;
    }
    const dst = packet[DL_DST]!;
    const known = (dst & 0x010000000000n) === 0n ? this.learned.get(dst) : undefined;
    if (known !== undefined) {
      if (known !== inPort) verdict.outputs.push(known);
      return;
    }
    for (const port of this.options.ports) if (port !== inPort) verdict.outputs.push(port);
  }
}

/** Rewrites a packet's addresses and ports (an echo's identifier; no more for a protocol without ports) to the tuple the tracker translated it to. */
function translate(packet: Packet, result: CtResult): void {
  const t = result.translated;
  if (!t) return;
  packet[NW_SRC] = BigInt(t.src);
  packet[NW_DST] = BigInt(t.dst);
  if (packet[NW_PROTO] === PROTO_ICMP) packet[ICMP_ID] = BigInt(t.sport);
  else if (hasPorts(t.proto)) {
    packet[TP_SRC] = BigInt(t.sport);
    packet[TP_DST] = BigInt(t.dport);
  }
}

/**
 * Adds an entry's counts to its flows; a flow with new counts was used by
 * `nowMs` (as OVS's revalidators stamp a megaflow's use when they pull its
 * stats), so an idle timeout is judged to within the interval of the folds.
 */
function fold(entry: CacheEntry, nowMs: number): void {
  if (entry.packets === 0) return;
  for (const flow of entry.verdict.matched) {
    flow.nPackets += entry.packets;
    flow.nBytes += entry.bytes;
    if (nowMs > flow.lastUsedMs) flow.lastUsedMs = nowMs;
  }
  entry.packets = 0;
  entry.bytes = 0;
}

/** Parses a whole flow file (one flow a line; blank lines and # comments skipped). @throws naming the line. */
export function parseFlowFile(text: string): FlowSpec[] {
  const out: FlowSpec[] = [];
  for (const [i, raw] of text.split("\n").entries()) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    try {
      out.push(parseFlow(line));
    } catch (err) {
      throw invalidArgument(`line ${i + 1}: ${(err as Error).message}`);
    }
  }
  return out;
}

export { fields };
