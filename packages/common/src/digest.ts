// Order-independent digests of sets, so two processes can tell whether they
// hold the same set (a host's VM states, as its heartbeat says and as the
// controller heard) by comparing one number, without sending the set.

import { hashText, mix32 } from "./random.js";

/** The digest of one member of a set, from its parts. */
export function memberDigest(...parts: (string | number)[]): number {
  let h = 0x811c9dc5;
  for (const part of parts) h = mix32(hashText(String(part), h));
  return h;
}

/**
 * A set's digest is the sum of its members' digests modulo 2^32, so it can
 * be kept current by adding and subtracting one member at a time.
 */
export function addToDigest(digest: number, member: number): number {
  return (digest + member) >>> 0;
}

export function removeFromDigest(digest: number, member: number): number {
  return (digest - member) >>> 0;
}

/** FNV-1a over bytes with a final avalanche: the digest of one encoded message. */
export function bytesDigest(bytes: Uint8Array): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < bytes.length; i++) {
    h ^= bytes[i]!;
    h = Math.imul(h, 0x01000193);
  }
  return mix32(h);
}
