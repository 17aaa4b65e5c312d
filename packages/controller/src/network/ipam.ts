// Address management for logical networks: IPv4 subnets written as CIDRs
// (checked, their host bits zero, never overlapping another), their gateway
// (the first address) and the lowest free address for a new NIC; MAC
// addresses locally administered and unicast (02:xx:...), unique. Pure.

import { cidrSize, contains, formatCidr, ipToNumber, numberToIp, overlaps, parseCidr as parseAnyCidr, resourceExhausted, type Cidr } from "@simdc/common";

export { contains, formatCidr, ipToNumber, numberToIp, overlaps, type Cidr };

/** Subnets narrower than /30 leave no room for a gateway and a NIC; wider than /8 is a typo. */
export const prefixMin = 8;
export const prefixMax = 30;

/** A subnet's CIDR ("10.0.0.0/24"), checked. @throws SimdcError INVALID_ARGUMENT. */
export function parseCidr(text: string): Cidr {
  return parseAnyCidr(text, prefixMin, prefixMax);
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
export function allocateIp(c: Cidr, used: { has(ip: number): boolean }): number {
  const last = c.base + cidrSize(c) - 2;
  for (let ip = c.base + 2; ip <= last; ip++) if (!used.has(ip)) return ip;
  throw resourceExhausted(`subnet ${formatCidr(c)} has no free address`);
}

/** A locally administered unicast MAC (02:...) not in `used`, drawn from `next` (a seeded source). */
export function allocateMac(used: { has(mac: string): boolean }, next: () => number): string {
  for (let attempt = 0; attempt < 1_000; attempt++) {
    const bytes = [0x02, ...Array.from({ length: 5 }, () => Math.floor(next() * 256))];
    const mac = bytes.map((b) => b.toString(16).padStart(2, "0")).join(":");
    if (!used.has(mac)) return mac;
  }
  throw resourceExhausted("no free MAC address after 1,000 draws");
}
