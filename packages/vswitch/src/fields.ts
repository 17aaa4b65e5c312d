// The header fields a flow matches and a packet carries, with ovs-ofctl's
// names and value syntax (MACs, dotted IPs with prefixes or masks, decimal or
// 0x hex, ct_state's +flag-flag), and the prerequisites OpenFlow puts on them
// (nw_* needs ip or arp, tp_* needs tcp, udp or icmp). Values are bigints so
// 64-bit fields (metadata, tun_id) need no special case.

import { invalidArgument } from "@simdc/common";

export type FieldKind = "int" | "mac" | "ip";

export interface FieldSpec {
  name: string;
  bits: number;
  kind: FieldKind;
  /** Whether a flow may match it with a mask (value/mask). */
  maskable: boolean;
}

const spec = (name: string, bits: number, kind: FieldKind, maskable: boolean): FieldSpec => ({ name, bits, kind, maskable });

/**
 * Every field, in the order packets and keys list them. vlan_tci is how
 * OpenFlow keeps the 802.1Q tag (present bit 0x1000 | VID); dl_vlan in flows
 * and packets is written in its terms.
 */
export const fields: readonly FieldSpec[] = [
  spec("in_port", 16, "int", false),
  spec("dl_src", 48, "mac", true),
  spec("dl_dst", 48, "mac", true),
  spec("dl_type", 16, "int", false),
  spec("vlan_tci", 16, "int", true),
  spec("nw_src", 32, "ip", true),
  spec("nw_dst", 32, "ip", true),
  spec("nw_proto", 8, "int", false),
  spec("tp_src", 16, "int", true),
  spec("tp_dst", 16, "int", true),
  // simdc's own field, not OVS's: an ICMP echo's identifier, which the
  // connection tracker keys echoes on and NAT remaps, as Linux does. OVS
  // has no match field for it (it tracks echoes from the payload).
  spec("icmp_id", 16, "int", false),
  spec("tun_id", 64, "int", true),
  spec("metadata", 64, "int", true),
  ...Array.from({ length: 8 }, (_, i) => spec(`reg${i}`, 32, "int", true)),
  // The connection tracker's metadata (ovs-fields(7)): 0 until a ct action
  // sets them; only ct(commit,exec(...)) writes ct_mark.
  spec("ct_state", 32, "int", true),
  spec("ct_zone", 16, "int", false),
  spec("ct_mark", 32, "int", true),
];

export type FieldName = string;
export const fieldIndex = new Map(fields.map((f, i) => [f.name, i]));

export const ETH_IP = 0x0800n;
export const ETH_ARP = 0x0806n;
export const VLAN_PRESENT = 0x1000n;
export const VLAN_VID = 0x0fffn;

/** ct_state's flags by bit, as ovs-fields(7) names them (bit 0 first). */
const ctStateFlagNames = ["new", "est", "rel", "rpl", "inv", "trk", "snat", "dnat"] as const;
/** Every flag ct_state has; other bits are refused, as OVS refuses them. */
const CT_STATE_FLAGS = 0xffn;

/**
 * ct_state in any of ovs-ofctl's forms: `+trk+new-est` (the flags named,
 * the others wildcarded), `new|trk` or a number (exactly these flags), or
 * `0x21/0x21`. @throws SimdcError INVALID_ARGUMENT naming the bad flag.
 */
export function parseCtState(text: string): { value: bigint; mask: bigint } {
  const flagBit = (name: string): bigint => {
    const bit = ctStateFlagNames.indexOf(name as (typeof ctStateFlagNames)[number]);
    if (bit < 0) throw invalidArgument(`ct_state=${text}: unknown flag ${JSON.stringify(name)} (flags: ${ctStateFlagNames.join(", ")})`);
    return 1n << BigInt(bit);
  };
  if (text.startsWith("+") || text.startsWith("-")) {
    let value = 0n;
    let mask = 0n;
    for (const [, sign, name] of text.matchAll(/([+-])([^+-]*)/g)) {
      const bit = flagBit(name!);
      if (mask & bit) throw invalidArgument(`ct_state=${text}: ${name} is given twice`);
      mask |= bit;
      if (sign === "+") value |= bit;
    }
    return { value, mask };
  }
  if (/^[a-z|]+$/.test(text)) return { value: text.split("|").reduce((acc, name) => acc | flagBit(name), 0n), mask: CT_STATE_FLAGS };
  const [valueText = "", maskText] = text.split("/");
  const value = parseInt64("ct_state", valueText, 32);
  const mask = maskText === undefined ? CT_STATE_FLAGS : parseInt64("ct_state", maskText, 32);
  if ((value | mask) & ~CT_STATE_FLAGS) throw invalidArgument(`ct_state=${text}: bits beyond the flags (0xff)`);
  return { value: value & mask, mask };
}

/** ct_state as ovs-ofctl writes it: `new|trk` when every flag is matched (0 for none), `+new+trk-est` when some are, `0/0` when none. */
export function formatCtState(value: bigint, mask = CT_STATE_FLAGS): string {
  if (mask === 0n) return "0/0";
  const named = ctStateFlagNames.map((name, bit) => ({ name, bit: 1n << BigInt(bit) })).filter((f) => mask & f.bit);
  if (mask === CT_STATE_FLAGS) return named.filter((f) => value & f.bit).map((f) => f.name).join("|") || "0";
  return named.map((f) => `${value & f.bit ? "+" : "-"}${f.name}`).join("");
}

/** All-ones masks by width, made once: every exact match holds one, and a bigint made for each cost a vswitch 24 bytes a match. */
const fullMasks = Array.from({ length: 129 }, (_, bits) => (1n << BigInt(bits)) - 1n);

export function fullMask(bits: number): bigint {
  return fullMasks[bits] ?? (1n << BigInt(bits)) - 1n;
}

export function parseMac(text: string): bigint {
  if (!/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/.test(text)) throw invalidArgument(`${JSON.stringify(text)} is not a MAC address (xx:xx:xx:xx:xx:xx)`);
  return BigInt(`0x${text.replaceAll(":", "")}`);
}

export function formatMac(value: bigint): string {
  return value.toString(16).padStart(12, "0").match(/../g)!.join(":");
}

export function parseIp(text: string): bigint {
  const parts = text.split(".");
  if (parts.length !== 4 || parts.some((p) => !/^\d{1,3}$/.test(p) || Number(p) > 255)) throw invalidArgument(`${JSON.stringify(text)} is not an IPv4 address`);
  return parts.reduce((acc, p) => (acc << 8n) | BigInt(p), 0n);
}

export function formatIp(value: bigint): string {
  return [24n, 16n, 8n, 0n].map((s) => String((value >> s) & 0xffn)).join(".");
}

export function parseInt64(name: string, text: string, bits: number): bigint {
  if (!/^(0x[0-9a-fA-F]+|\d+)$/.test(text)) throw invalidArgument(`${name}=${text}: not a number`);
  const value = BigInt(text);
  if (value > fullMask(bits)) throw invalidArgument(`${name}=${text}: more than ${bits} bits`);
  return value;
}

/** A field's value in its own syntax. */
export function parseValue(f: FieldSpec, text: string): bigint {
  if (f.kind === "mac") return parseMac(text);
  if (f.kind === "ip") return parseIp(text);
  return parseInt64(f.name, text, f.bits);
}

export function formatValue(f: FieldSpec, value: bigint): string {
  if (f.kind === "mac") return formatMac(value);
  if (f.kind === "ip") return formatIp(value);
  return f.bits > 16 || f.name === "dl_type" ? `0x${value.toString(16)}` : String(value);
}

/** "value" or "value/mask" (an IP may take a prefix length: 10.0.0.0/8). */
export function parseMasked(f: FieldSpec, text: string): { value: bigint; mask: bigint } {
  const slash = text.indexOf("/");
  if (slash < 0) return { value: parseValue(f, text), mask: fullMask(f.bits) };
  if (!f.maskable) throw invalidArgument(`${f.name} takes no mask`);
  const valueText = text.slice(0, slash);
  const maskText = text.slice(slash + 1);
  let mask: bigint;
  if (f.kind === "ip" && /^\d{1,2}$/.test(maskText)) {
    const prefix = Number(maskText);
    if (prefix > 32) throw invalidArgument(`${f.name}=${text}: a prefix is at most 32`);
    mask = prefix === 0 ? 0n : (fullMask(32) << BigInt(32 - prefix)) & fullMask(32);
  } else mask = parseValue(f, maskText);
  return { value: parseValue(f, valueText) & mask, mask };
}
