// Address management for logical networks: IPv4 subnets written as CIDRs
// (checked, their host bits zero, never overlapping another), their gateway
// (the first address) and the lowest free address for a new NIC; MAC
// addresses locally administered and unicast (02:xx:...), unique. Pure.

import { invalidArgument, resourceExhausted } from "@simdc/common";

export interface Cidr {
  /** The network address as an unsigned 32-bit number. */
  base: number;
  prefix: number;
}

/** Subnets narrower than /30 leave no room for a gateway and a NIC; wider than /8 is a typo. */
export const prefixMin = 8;
export const prefixMax = 30;

export function ipToNumber(text: string): number {
  const parts = text.split(".");
  if (parts.length !== 4 || parts.some((p) => !/^\d{1,3}$/.test(p) || Number(p) > 255)) throw invalidArgument(`${JSON.stringify(text)} is not an IPv4 address`);
  return parts.reduce((acc, p) => acc * 256 + Number(p), 0);
}

export function numberToIp(value: number): string {
  return [24, 16, 8, 0].map((s) => String(Math.floor(value / 2 ** s) % 256)).join(".");
}

/** "10.0.0.0/24", checked. @throws SimdcError INVALID_ARGUMENT. */
export function parseCidr(text: string): Cidr {
  const m = /^([\d.]+)\/(\d{1,2})$/.exec(text);
  if (!m) throw invalidArgument(`${JSON.stringify(text)} is not a CIDR like 10.0.0.0/24`);
  const prefix = Number(m[2]);
  if (prefix < prefixMin || prefix > prefixMax) throw invalidArgument(`${text}: the prefix must be /${prefixMin} to /${prefixMax}`);
  const base = ipToNumber(m[1]!);
  const size = 2 ** (32 - prefix);
  if (base % size !== 0) throw invalidArgument(`${text}: host bits are set (the network is ${numberToIp(base - (base % size))}/${prefix})`);
  return { base, prefix };
}

export function formatCidr(c: Cidr): string {
  return `${numberToIp(c.base)}/${c.prefix}`;
}

function size(c: Cidr): number {
  return 2 ** (32 - c.prefix);
}

export function overlaps(a: Cidr, b: Cidr): boolean {
  return a.base < b.base + size(b) && b.base < a.base + size(a);
}

export function contains(c: Cidr, ip: number): boolean {
  return ip >= c.base && ip < c.base + size(c);
}

/** The gateway: the first usable address. */
export function gatewayOf(c: Cidr): number {
  return c.base + 1;
}

/**
 * The lowest address of `c` that is not the network, the gateway, the
 * broadcast address or in `used`.
 * @throws SimdcError RESOURCE_EXHAUSTED when the subnet is full.
 */
export function allocateIp(c: Cidr, used: ReadonlySet<number>): number {
  const last = c.base + size(c) - 2;
  for (let ip = c.base + 2; ip <= last; ip++) if (!used.has(ip)) return ip;
  throw resourceExhausted(`subnet ${formatCidr(c)} has no free address`);
}

/** A locally administered unicast MAC (02:...) not in `used`, drawn from `next` (a seeded source). */
export function allocateMac(used: ReadonlySet<string>, next: () => number): string {
  for (let attempt = 0; attempt < 1_000; attempt++) {
    const bytes = [0x02, ...Array.from({ length: 5 }, () => Math.floor(next() * 256))];
    const mac = bytes.map((b) => b.toString(16).padStart(2, "0")).join(":");
    if (!used.has(mac)) return mac;
  }
  throw resourceExhausted("no free MAC address after 1,000 draws");
}
