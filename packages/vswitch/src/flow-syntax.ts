// Flows and packets in ovs-ofctl syntax, so what people know of OVS carries
// over: `table=0,priority=100,in_port=1,dl_dst=02:00:00:00:00:02,actions=output:2`,
// `ip,ct_state=+trk+est,actions=ct(commit,zone=5,nat(src=192.0.2.1)),output:1`
// and `in_port=1,dl_src=...,dl_type=0x0800,nw_src=10.0.0.1,...`. Parsing
// checks what OpenFlow checks (unknown fields, values out of range, missing
// prerequisites) and says what is wrong in one line; formatting writes flows
// back the way ovs-ofctl dump-flows does.

import { invalidArgument } from "@simdc/common";
import { CT_INV, type CtMark, type CtNat, type NatRange } from "./conntrack.js";
import { ETH_ARP, ETH_IP, fieldIndex, fields, formatCtState, formatIp, formatValue, fullMask, parseCtState, parseInt64, parseIp, parseMasked, parseValue, VLAN_PRESENT, VLAN_VID } from "./fields.js";

export type Action =
  | { kind: "output"; port: number }
  | { kind: "in_port" }
  | { kind: "normal" }
  /** A packet-in to the controller connection `id` (0 unless controller(id=N) says). */
  | { kind: "controller"; id: number }
  | { kind: "resubmit"; port: number | null; table: number | null }
  | { kind: "goto_table"; table: number }
  | { kind: "set"; field: number; value: bigint }
  | { kind: "mod_vlan_vid"; vid: bigint }
  | { kind: "strip_vlan" }
  /**
   * Through the connection tracker in `zone` (conntrack.ts). With `table`, a
   * copy carrying the tracker's verdict (ct_* set, NAT applied) resumes there
   * and the packet goes on untracked; without, the packet goes on NATed and
   * untracked.
   */
  | { kind: "ct"; commit: boolean; zone: number; table: number | null; nat: CtNat | null; mark: CtMark | null }
  /** Zeroes ct_state, ct_zone and ct_mark. */
  | { kind: "ct_clear" };

export interface MatchField {
  field: number;
  value: bigint;
  mask: bigint;
}

export interface FlowSpec {
  table: number;
  priority: number;
  cookie: bigint;
  idleTimeoutS: number;
  hardTimeoutS: number;
  match: MatchField[];
  actions: Action[];
}

/** OVS's default flow priority. */
export const defaultPriority = 32_768;
export const tablesMax = 255;

/** A packet: one value per field, in `fields` order. */
export type Packet = bigint[];

const protocols: Record<string, [bigint, bigint | null]> = {
  ip: [ETH_IP, null],
  arp: [ETH_ARP, null],
  tcp: [ETH_IP, 6n],
  udp: [ETH_IP, 17n],
  icmp: [ETH_IP, 1n],
};

/** Splits on commas that are not inside parentheses (resubmit(,2)). */
function splitTop(text: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === "(") depth += 1;
    else if (c === ")") depth -= 1;
    else if (c === "," && depth === 0) {
      out.push(text.slice(start, i));
      start = i + 1;
    }
  }
  out.push(text.slice(start));
  return out.map((s) => s.trim()).filter((s) => s !== "");
}

function smallInt(name: string, text: string, max: number): number {
  if (!/^\d+$/.test(text) || Number(text) > max) throw invalidArgument(`${name}=${text}: a whole number from 0 to ${max}`);
  return Number(text);
}

const I = (name: string): number => fieldIndex.get(name)!;

/** Sets a match field, refusing a second, different value for it. */
function put(match: Map<number, MatchField>, field: number, value: bigint, mask: bigint): void {
  const had = match.get(field);
  if (had && (had.value !== value || had.mask !== mask)) throw invalidArgument(`${fields[field]!.name} is given twice`);
  match.set(field, { field, value, mask });
}

/** dl_vlan=N (a tag with that VID) or dl_vlan=0xffff (no tag), as vlan_tci value and mask. */
function vlanMatch(text: string): { value: bigint; mask: bigint } {
  const vid = parseInt64("dl_vlan", text, 16);
  if (vid === 0xffffn) return { value: 0n, mask: 0xffffn };
  if (vid > VLAN_VID) throw invalidArgument(`dl_vlan=${text}: a VID is 0-4095 (0xffff: no tag)`);
  return { value: VLAN_PRESENT | vid, mask: VLAN_PRESENT | VLAN_VID };
}

/** The protocol-specific names OVS also takes (and wants in packets): tcp_src is tp_src of a TCP packet. */
const portAliases: Record<string, string> = {
  tcp_src: "tp_src",
  tcp_dst: "tp_dst",
  udp_src: "tp_src",
  udp_dst: "tp_dst",
  icmp_type: "tp_src",
  icmp_code: "tp_dst",
  arp_spa: "nw_src",
  arp_tpa: "nw_dst",
  // OpenFlow keeps the ARP opcode where an IP packet has its protocol.
  arp_op: "nw_proto",
};

function parseMatchItem(match: Map<number, MatchField>, item: string): void {
  const eq = item.indexOf("=");
  if (eq < 0) {
    const proto = protocols[item];
    if (!proto) throw invalidArgument(`unknown field or protocol ${JSON.stringify(item)}`);
    put(match, I("dl_type"), proto[0], fullMask(16));
    if (proto[1] !== null) put(match, I("nw_proto"), proto[1], fullMask(8));
    return;
  }
  const name = portAliases[item.slice(0, eq)] ?? item.slice(0, eq);
  const text = item.slice(eq + 1);
  if (name === "dl_vlan") {
    const { value, mask } = vlanMatch(text);
    put(match, I("vlan_tci"), value, mask);
    return;
  }
  const index = fieldIndex.get(name);
  if (index === undefined || name === "vlan_tci") throw invalidArgument(`unknown field ${JSON.stringify(name)}`);
  const { value, mask } = name === "ct_state" ? parseCtState(text) : parseMasked(fields[index]!, text);
  put(match, index, value, mask);
}

/** The value a match gives a field exactly, if it does. */
function exactValue(match: Map<number, MatchField>, name: string): bigint | undefined {
  const m = match.get(I(name));
  return m && m.mask === fullMask(fields[I(name)]!.bits) ? m.value : undefined;
}

/** OpenFlow's prerequisites: what a field needs the match to say first. */
function checkPrerequisites(match: Map<number, MatchField>, uses: number[], what: string): void {
  const dlType = exactValue(match, "dl_type");
  const proto = exactValue(match, "nw_proto");
  for (const field of uses) {
    const name = fields[field]!.name;
    // An ARP packet's addresses match as nw_src/nw_dst, but only an IP header's can be rewritten.
    if ((name === "nw_src" || name === "nw_dst") && what === "setting" && dlType !== ETH_IP) throw invalidArgument(`setting ${name} needs ip (dl_type=0x0800)`);
    if ((name === "nw_src" || name === "nw_dst") && dlType !== ETH_IP && dlType !== ETH_ARP) throw invalidArgument(`${what} ${name} needs ip or arp (dl_type=0x0800 or 0x0806)`);
    if (name === "nw_proto" && what === "setting" && dlType !== ETH_IP) throw invalidArgument("setting nw_proto needs ip (dl_type=0x0800)");
    if (name === "nw_proto" && dlType !== ETH_IP && dlType !== ETH_ARP) throw invalidArgument(`${what} nw_proto (arp_op) needs ip or arp (dl_type=0x0800 or 0x0806)`);
    if ((name === "tp_src" || name === "tp_dst") && (dlType !== ETH_IP || (proto !== 6n && proto !== 17n && proto !== 1n))) {
      throw invalidArgument(`${what} ${name} needs tcp, udp or icmp (ip with nw_proto=6, 17 or 1)`);
    }
    if (name === "icmp_id" && (dlType !== ETH_IP || proto !== 1n)) throw invalidArgument(`${what} icmp_id needs icmp (ip with nw_proto=1)`);
  }
}

const setFieldNames: Record<string, string> = {
  mod_dl_src: "dl_src",
  mod_dl_dst: "dl_dst",
  mod_nw_src: "nw_src",
  mod_nw_dst: "nw_dst",
  mod_tp_src: "tp_src",
  mod_tp_dst: "tp_dst",
  set_tunnel: "tun_id",
};

/** set_field names that differ from the match names. */
const setFieldAliases: Record<string, string> = { eth_src: "dl_src", eth_dst: "dl_dst", ip_src: "nw_src", ip_dst: "nw_dst", tcp_src: "tp_src", tcp_dst: "tp_dst", udp_src: "tp_src", udp_dst: "tp_dst" };

/** The argument of nat(src=...) or nat(dst=...): IP[-IP][:PORT[-PORT]]. */
function parseNatRange(text: string): NatRange {
  const m = /^([\d.]+)(?:-([\d.]+))?(?::(\d+)(?:-(\d+))?)?$/.exec(text);
  if (!m) throw invalidArgument(`nat range ${JSON.stringify(text)}: write IP[-IP][:PORT[-PORT]]`);
  const addressMin = Number(parseIp(m[1]!));
  const addressMax = m[2] === undefined ? addressMin : Number(parseIp(m[2]));
  if (addressMax < addressMin) throw invalidArgument(`nat range ${text}: the last address is below the first`);
  if (m[3] === undefined) return { addressMin, addressMax, ports: null };
  const min = smallInt("nat port", m[3], 0xffff);
  const max = m[4] === undefined ? min : smallInt("nat port", m[4], 0xffff);
  if (min === 0 || max < min) throw invalidArgument(`nat range ${text}: ports go from 1 to 65535, the last not below the first`);
  return { addressMin, addressMax, ports: { min, max } };
}

/** ct's nat argument: `nat`, `nat(src=RANGE)` or `nat(dst=RANGE)` (the text inside the parentheses). */
function parseNat(text: string): CtNat {
  let nat: CtNat = { manip: null };
  for (const item of splitTop(text)) {
    const eq = item.indexOf("=");
    const key = eq < 0 ? item : item.slice(0, eq);
    if (key === "persistent" || key === "hash" || key === "random") throw invalidArgument(`nat: simdc does not model ${key}`);
    if (key !== "src" && key !== "dst") throw invalidArgument(`nat: unknown argument ${JSON.stringify(item)}`);
    if (nat.manip) throw invalidArgument("nat: give one of src or dst");
    if (eq < 0) throw invalidArgument(`nat(${key}) needs a range: nat(${key}=IP[-IP][:PORT[-PORT]])`);
    nat = { manip: key, range: parseNatRange(item.slice(eq + 1)) };
  }
  return nat;
}

/** exec(...) inside ct: only set_field:VALUE[/MASK]->ct_mark, the only write OVS allows there besides ct_label. */
function parseCtExec(text: string): CtMark | null {
  let value = 0;
  let mask = 0;
  for (const item of splitTop(text)) {
    const m = /^set_field:([^/]+?)(?:\/(.+))?->ct_mark$/.exec(item);
    if (!m) throw invalidArgument(`ct exec: simdc takes only set_field:VALUE[/MASK]->ct_mark, not ${JSON.stringify(item)}`);
    const v = Number(parseInt64("ct_mark", m[1]!, 32));
    const k = m[2] === undefined ? 0xffff_ffff : Number(parseInt64("ct_mark", m[2], 32));
    value = ((value & ~k) | (v & k)) >>> 0;
    mask = (mask | k) >>> 0;
  }
  return mask ? { value, mask } : null;
}

/** ct(...)'s arguments (ovs-actions(7)), refusing those simdc does not model (force, alg, a zone taken from a field). */
function parseCt(text: string): Action {
  const ct: Extract<Action, { kind: "ct" }> = { kind: "ct", commit: false, zone: 0, table: null, nat: null, mark: null };
  const given = new Set<string>();
  for (const arg of splitTop(text)) {
    const key = /^[a-z_]*/.exec(arg)![0];
    const rest = arg.slice(key.length);
    if (given.has(key)) throw invalidArgument(`ct: ${key} is given twice`);
    given.add(key);
    if (arg === "commit") ct.commit = true;
    else if (key === "zone" && rest.startsWith("=")) ct.zone = smallInt("ct zone", rest.slice(1), 0xffff);
    // Table 255 is OpenFlow's "no table" (NX_CT_RECIRC_NONE).
    else if (key === "table" && rest.startsWith("=")) ct.table = smallInt("ct table", rest.slice(1), tablesMax - 1);
    else if (key === "nat" && (rest === "" || (rest.startsWith("(") && rest.endsWith(")")))) ct.nat = parseNat(rest.slice(1, -1));
    else if (key === "exec" && rest.startsWith("(") && rest.endsWith(")")) ct.mark = parseCtExec(rest.slice(1, -1));
    else if (key === "force" || key === "alg") throw invalidArgument(`ct: simdc does not model ${key}`);
    else throw invalidArgument(`ct: unknown argument ${JSON.stringify(arg)}`);
  }
  if (ct.nat?.manip && !ct.commit) throw invalidArgument("ct: nat with a range sets up a new connection's binding, which needs commit");
  if (ct.mark && !ct.commit) throw invalidArgument("ct: exec writes the connection's ct_mark, which needs commit");
  return ct;
}

function parseAction(text: string): Action {
  if (text === "drop") throw invalidArgument("drop must be the only action");
  if (text === "in_port") return { kind: "in_port" };
  if (text === "ct_clear") return { kind: "ct_clear" };
  if (text === "ct") return parseCt("");
  if (text === "normal" || text === "NORMAL") return { kind: "normal" };
  if (text === "controller" || text.startsWith("controller:")) return { kind: "controller", id: 0 };
  if (text.startsWith("controller(") && text.endsWith(")")) {
    let id = 0;
    for (const arg of text.slice("controller(".length, -1).split(",").filter(Boolean)) {
      const [key, value = ""] = arg.split("=");
      // OVS's other arguments (reason, max_len, userdata, pause) change nothing here.
      if (key === "id") id = smallInt("controller id", value, 0xffff);
    }
    return { kind: "controller", id };
  }
  if (text === "strip_vlan") return { kind: "strip_vlan" };
  if (/^\d+$/.test(text)) return { kind: "output", port: smallInt("output", text, 0xffff) };
  const colon = text.indexOf(":");
  const paren = text.indexOf("(");
  if (paren > 0 && text.endsWith(")") && (colon < 0 || paren < colon)) {
    const name = text.slice(0, paren);
    if (name === "ct") return parseCt(text.slice(paren + 1, -1));
    const args = text.slice(paren + 1, -1).split(",");
    if (name !== "resubmit" || args.length < 1 || args.length > 2) throw invalidArgument(`unknown action ${JSON.stringify(text)}`);
    const port = args[0] ? smallInt("resubmit port", args[0], 0xffff) : null;
    const table = args[1] ? smallInt("resubmit table", args[1], tablesMax) : null;
    return { kind: "resubmit", port, table };
  }
  if (colon < 0) throw invalidArgument(`unknown action ${JSON.stringify(text)}`);
  const name = text.slice(0, colon);
  const arg = text.slice(colon + 1);
  switch (name) {
    case "output":
      return { kind: "output", port: smallInt("output", arg, 0xffff) };
    case "resubmit":
      return { kind: "resubmit", port: smallInt("resubmit", arg, 0xffff), table: null };
    case "goto_table":
      return { kind: "goto_table", table: smallInt("goto_table", arg, tablesMax) };
    case "mod_vlan_vid": {
      const vid = parseInt64("mod_vlan_vid", arg, 12);
      return { kind: "mod_vlan_vid", vid };
    }
    case "set_field": {
      const arrow = arg.indexOf("->");
      if (arrow < 0) throw invalidArgument(`set_field:${arg}: write set_field:VALUE->FIELD`);
      const target = setFieldAliases[arg.slice(arrow + 2)] ?? arg.slice(arrow + 2);
      const field = fieldIndex.get(target);
      if (field === undefined || target === "in_port" || target === "dl_type" || target === "vlan_tci") throw invalidArgument(`set_field cannot set ${JSON.stringify(target)}`);
      if (target === "ct_state" || target === "ct_zone") throw invalidArgument(`set_field cannot set ${target}: only the ct action does`);
      if (target === "ct_mark") throw invalidArgument("set_field cannot set ct_mark outside ct: write ct(commit,exec(set_field:VALUE->ct_mark))");
      return { kind: "set", field, value: parseValue(fields[field]!, arg.slice(0, arrow)) };
    }
    default: {
      const target = setFieldNames[name];
      if (!target) throw invalidArgument(`unknown action ${JSON.stringify(name)}`);
      const field = I(target);
      return { kind: "set", field, value: parseValue(fields[field]!, arg) };
    }
  }
}

/**
 * One flow in ovs-ofctl add-flow syntax.
 * @throws SimdcError INVALID_ARGUMENT naming what is wrong.
 */
export function parseFlow(line: string): FlowSpec {
  const text = line.trim();
  const at = text.search(/(^|[,\s])\s*actions=/);
  if (at < 0) throw invalidArgument(`no actions= in ${JSON.stringify(text)}`);
  const head = text.slice(0, at);
  const actionsText = text.slice(text.indexOf("actions=", at) + "actions=".length);
  const flow: FlowSpec = { table: 0, priority: defaultPriority, cookie: 0n, idleTimeoutS: 0, hardTimeoutS: 0, match: [], actions: [] };
  const match = new Map<number, MatchField>();
  for (const item of splitTop(head)) {
    const eq = item.indexOf("=");
    const key = eq < 0 ? item : item.slice(0, eq);
    const value = item.slice(eq + 1);
    if (key === "table") flow.table = smallInt("table", value, tablesMax);
    else if (key === "priority") flow.priority = smallInt("priority", value, 65_535);
    else if (key === "cookie") flow.cookie = parseInt64("cookie", value.split("/")[0]!, 64);
    else if (key === "idle_timeout") flow.idleTimeoutS = smallInt("idle_timeout", value, 65_535);
    else if (key === "hard_timeout") flow.hardTimeoutS = smallInt("hard_timeout", value, 65_535);
    else parseMatchItem(match, item);
  }
  checkPrerequisites(match, [...match.keys()], "matching");
  const items = splitTop(actionsText);
  if (items.length === 1 && items[0] === "drop") flow.actions = [];
  else flow.actions = items.map(parseAction);
  for (const [i, a] of flow.actions.entries()) {
    if (a.kind === "goto_table") {
      if (i !== flow.actions.length - 1) throw invalidArgument("goto_table must be the last action");
      if (a.table <= flow.table) throw invalidArgument(`goto_table:${a.table} must go to a later table than ${flow.table}`);
    }
    if (a.kind === "set") checkPrerequisites(match, [a.field], "setting");
    if (a.kind === "ct") {
      // OVS refuses these at flow-mod time (check_CT): the datapath could not install them.
      if (exactValue(match, "dl_type") !== ETH_IP) throw invalidArgument("ct needs ip (dl_type=0x0800)");
      const state = match.get(I("ct_state"));
      if (a.commit && state && state.value & BigInt(CT_INV)) throw invalidArgument("ct(commit) on a flow matching ct_state=+inv: an invalid packet cannot be committed");
    }
  }
  flow.match = [...match.values()].sort((a, b) => a.field - b.field);
  return flow;
}

/** A packet in ovs-ofctl field syntax; unnamed fields are 0 (no VLAN tag). */
export function parsePacket(line: string): Packet {
  const packet: Packet = fields.map(() => 0n);
  const match = new Map<number, MatchField>();
  for (const item of splitTop(line.trim())) {
    const eq = item.indexOf("=");
    if (eq > 0 && item.slice(eq + 1).includes("/")) throw invalidArgument(`a packet has values, not masks: ${item}`);
    parseMatchItem(match, item);
  }
  for (const m of match.values()) packet[m.field] = m.value;
  return packet;
}

/** A packet's fields by their ovs-ofctl names (dl_vlan: the VID, 0xffff when untagged). */
export function packetFields(packet: Packet): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [i, f] of fields.entries()) {
    if (f.name === "vlan_tci") {
      const tci = packet[i]!;
      out["dl_vlan"] = (tci & VLAN_PRESENT) !== 0n ? String(tci & VLAN_VID) : "0xffff";
      continue;
    }
    out[f.name] = f.name === "ct_state" ? formatCtState(packet[i]!) : formatValue(f, packet[i]!);
  }
  return out;
}

function formatNat(nat: CtNat): string {
  if (!nat.manip) return "nat";
  const { addressMin, addressMax, ports } = nat.range;
  let range = formatIp(BigInt(addressMin));
  if (addressMax !== addressMin) range += `-${formatIp(BigInt(addressMax))}`;
  if (ports) range += ports.max !== ports.min ? `:${ports.min}-${ports.max}` : `:${ports.min}`;
  return `nat(${nat.manip}=${range})`;
}

/** ct(...) as ovs-ofctl writes it: commit, table, zone, nat, exec, in that order. */
function formatCt(a: Extract<Action, { kind: "ct" }>): string {
  const args: string[] = [];
  if (a.commit) args.push("commit");
  if (a.table !== null) args.push(`table=${a.table}`);
  if (a.zone) args.push(`zone=${a.zone}`);
  if (a.nat) args.push(formatNat(a.nat));
  if (a.mark) args.push(`exec(set_field:0x${a.mark.value.toString(16)}${a.mark.mask === 0xffff_ffff ? "" : `/0x${a.mark.mask.toString(16)}`}->ct_mark)`);
  return `ct(${args.join(",")})`;
}

function formatAction(a: Action): string {
  switch (a.kind) {
    case "output":
      return `output:${a.port}`;
    case "resubmit":
      return `resubmit(${a.port ?? ""},${a.table ?? ""})`;
    case "goto_table":
      return `goto_table:${a.table}`;
    case "set":
      return `set_field:${formatValue(fields[a.field]!, a.value)}->${fields[a.field]!.name}`;
    case "mod_vlan_vid":
      return `mod_vlan_vid:${a.vid}`;
    case "controller":
      return a.id ? `controller(id=${a.id})` : "controller";
    case "ct":
      return formatCt(a);
    default:
      return a.kind;
  }
}

/** A flow as ovs-ofctl dump-flows writes it (the match and actions; counters are the caller's). */
export function formatFlow(flow: FlowSpec): string {
  const parts = [`table=${flow.table}`, `priority=${flow.priority}`];
  if (flow.cookie) parts.unshift(`cookie=0x${flow.cookie.toString(16)}`);
  if (flow.idleTimeoutS) parts.push(`idle_timeout=${flow.idleTimeoutS}`);
  if (flow.hardTimeoutS) parts.push(`hard_timeout=${flow.hardTimeoutS}`);
  for (const m of flow.match) {
    const f = fields[m.field]!;
    if (f.name === "vlan_tci") parts.push(m.value === 0n ? "dl_vlan=0xffff" : `dl_vlan=${m.value & VLAN_VID}`);
    else if (f.name === "ct_state") parts.push(`ct_state=${formatCtState(m.value, m.mask)}`);
    else parts.push(m.mask === fullMask(f.bits) ? `${f.name}=${formatValue(f, m.value)}` : `${f.name}=${formatValue(f, m.value)}/${formatValue(f, m.mask)}`);
  }
  return `${parts.join(",")} actions=${flow.actions.length ? flow.actions.map(formatAction).join(",") : "drop"}`;
}
