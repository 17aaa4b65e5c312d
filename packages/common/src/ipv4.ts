// IPv4 addresses and CIDRs as the API writes them ("10.0.0.0/24"), held as
// unsigned 32-bit numbers. Shared by the controller (address management,
// security rules) and the CLI (what a reachability policy allows).

import { invalidArgument } from "./errors.js";

export interface Cidr {
  /** The network address as an unsigned 32-bit number. */
  base: number;
  prefix: number;
}

export function ipToNumber(text: string): number {
  const parts = text.split(".");
  if (parts.length !== 4 || parts.some((p) => !/^\d{1,3}$/.test(p) || Number(p) > 255)) throw invalidArgument(`${JSON.stringify(text)} is not an IPv4 address`);
  return parts.reduce((acc, p) => acc * 256 + Number(p), 0);
}

export function numberToIp(value: number): string {
  return [24, 16, 8, 0].map((s) => String(Math.floor(value / 2 ** s) % 256)).join(".");
}

/**
 * "10.0.0.0/24", checked, with a prefix from `prefixMin` to `prefixMax`.
 * @throws SimdcError INVALID_ARGUMENT.
 */
export function parseCidr(text: string, prefixMin = 0, prefixMax = 32): Cidr {
  const m = /^([\d.]+)\/(\d{1,2})$/.exec(text);
  if (!m) throw invalidArgument(`${JSON.stringify(text)} is not a CIDR like 10.0.0.0/24`);
  const prefix = Number(m[2]);
  if (prefix < prefixMin || prefix > prefixMax) throw invalidArgument(`${text}: the prefix must be /${prefixMin} to /${prefixMax}`);
  const base = ipToNumber(m[1]!);
  const size = cidrSize({ base, prefix });
  if (base % size !== 0) throw invalidArgument(`${text}: host bits are set (the network is ${numberToIp(base - (base % size))}/${prefix})`);
  return { base, prefix };
}

export function formatCidr(c: Cidr): string {
  return `${numberToIp(c.base)}/${c.prefix}`;
}

/** How many addresses the CIDR holds. */
export function cidrSize(c: Cidr): number {
  return 2 ** (32 - c.prefix);
}

export function overlaps(a: Cidr, b: Cidr): boolean {
  return a.base < b.base + cidrSize(b) && b.base < a.base + cidrSize(a);
}

export function contains(c: Cidr, ip: number): boolean {
  return ip >= c.base && ip < c.base + cidrSize(c);
}
