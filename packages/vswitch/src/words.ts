// Packets as the data plane carries them: every header field in 32-bit
// words (48-bit MACs and 64-bit fields in two), so a packet is hashed and
// compared without BigInt arithmetic. The exact-match cache is keyed by this
// form; flows are matched on the bigint form, converted once per cache miss.

import { fields } from "./fields.js";
import type { Packet } from "./flow-syntax.js";

/** Words per field: fields wider than 32 bits take two (high, then low). */
const widths = fields.map((f) => (f.bits > 32 ? 2 : 1));
export const packetWords = widths.reduce((a, b) => a + b, 0);

export type PacketWords = Uint32Array;

/** Where a field starts among a packet's words (a field wider than 32 bits takes that word and the next). */
export function wordOffset(name: string): number {
  const index = fields.findIndex((f) => f.name === name);
  if (index < 0) throw new Error(`no field ${name}`);
  return widths.slice(0, index).reduce((a, b) => a + b, 0);
}

const MASK32 = 0xffffffffn;

export function toWords(packet: Packet): PacketWords {
  const words = new Uint32Array(packetWords);
  let w = 0;
  for (let i = 0; i < fields.length; i++) {
    const v = packet[i]!;
    if (widths[i] === 2) {
      words[w++] = Number((v >> 32n) & MASK32);
      words[w++] = Number(v & MASK32);
    } else words[w++] = Number(v & MASK32);
  }
  return words;
}

export function fromWords(words: PacketWords): Packet {
  const packet: Packet = new Array<bigint>(fields.length);
  let w = 0;
  for (let i = 0; i < fields.length; i++) {
    if (widths[i] === 2) {
      packet[i] = (BigInt(words[w]!) << 32n) | BigInt(words[w + 1]!);
      w += 2;
    } else packet[i] = BigInt(words[w++]!);
  }
  return packet;
}

/** A 32-bit hash of the words (FNV-1a over each word, then mixed). */
export function hashWords(words: PacketWords): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < words.length; i++) {
    h = Math.imul(h ^ words[i]!, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  return h >>> 0;
}

export function sameWords(a: PacketWords, b: PacketWords): boolean {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
