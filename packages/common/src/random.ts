// Seeded randomness: one seed per run, from which each host, node and process
// derives its own stream by name, so a rerun with the same seed draws the
// same numbers in the same places whatever else runs beside them. Decisions
// about one message (should this fault hit it?) are a pure hash of the seed
// and the message's identity, not a draw, so they do not depend on the order
// messages arrive in. This is the only module (with clock.ts) that may touch
// Math.random or crypto's randomness.

import { randomBytes, randomUUID } from "node:crypto";

/** Seeds are unsigned 32-bit integers. */
export const seedMax = 0xffff_ffff;

/** FNV-1a over a string, 32 bits; the basis of names-to-numbers here. */
export function hashText(text: string, basis = 0x811c9dc5): number {
  let h = basis >>> 0;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** A final avalanche (murmur3's fmix32), so nearby inputs give unrelated outputs. */
export function mix32(x: number): number {
  let h = x >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * A number in [0, 1) that depends only on the seed and the parts, for
 * decisions that must be the same on a rerun whatever the order of events.
 */
export function unitHash(seed: number, ...parts: (string | number)[]): number {
  let h = mix32(seed ^ 0x9e3779b9);
  for (const part of parts) h = mix32(hashText(String(part), h) ^ 0x27d4eb2f);
  return h / 0x1_0000_0000;
}

/** A deterministic stream of numbers (sfc32), seeded from a seed and a name. */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  /**
   * @param seed the run's seed.
   * @param stream a name (a host id, "faults", ...), so each user of the seed
   * gets a stream of its own.
   */
  constructor(
    readonly seed: number,
    readonly stream = "",
  ) {
    this.a = mix32(seed ^ 0x243f6a88);
    this.b = mix32(hashText(stream) ^ 0x85a308d3);
    this.c = mix32(this.a ^ this.b ^ 0x13198a2e);
    this.d = 1;
    // sfc32 needs a few rounds before its output is well mixed.
    for (let i = 0; i < 12; i++) this.nextUint32();
  }

  /** The stream of `name` under the same seed (host-3 of agent-1 -> "agent-1/host-3"). */
  derive(name: string): Rng {
    return new Rng(this.seed, this.stream ? `${this.stream}/${name}` : name);
  }

  nextUint32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  /** A number in [0, 1). */
  next(): number {
    return this.nextUint32() / 0x1_0000_0000;
  }

  /** An integer in [0, n). */
  below(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** A fresh id that is a function of the seed and the stream: 32 hex digits. */
  id(): string {
    let out = "";
    for (let i = 0; i < 4; i++) out += this.nextUint32().toString(16).padStart(8, "0");
    return out;
  }

  /** The function form many callers want: () => a number in [0, 1). */
  get random(): () => number {
    return () => this.next();
  }
}

/** A seed for a run whose user gave none (printed, so the run can be repeated). */
export function freshSeed(): number {
  return randomBytes(4).readUInt32BE(0);
}

/**
 * An id unique across processes and restarts (boot ids, incarnations):
 * never a function of the seed, since two runs with one seed must not share
 * the identities of what they create.
 */
export function uniqueId(): string {
  return randomUUID();
}
