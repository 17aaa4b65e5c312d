// Proves address management on plain data: CIDRs checked, overlaps found,
// the gateway and the lowest free address given out, a full subnet refused,
// MACs locally administered, unicast and unique.

import { describe, expect, it } from "vitest";
import { Rng } from "@simdc/common";
import { allocateIp, allocateMac, formatCidr, gatewayOf, numberToIp, overlaps, parseCidr } from "./ipam.js";

describe("ipam", () => {
  it("ipam: CIDRs are checked, and overlapping ones are found", () => {
    expect(formatCidr(parseCidr("10.1.0.0/16"))).toBe("10.1.0.0/16");
    expect(() => parseCidr("10.1.0.5/24")).toThrow(/host bits are set \(the network is 10.1.0.0\/24\)/);
    expect(() => parseCidr("10.1.0.0/31")).toThrow(/prefix must be \/8 to \/30/);
    expect(() => parseCidr("10.1.0.0")).toThrow(/not a CIDR/);
    expect(() => parseCidr("10.1.300.0/24")).toThrow(/not an IPv4 address/);
    expect(overlaps(parseCidr("10.0.0.0/16"), parseCidr("10.0.5.0/24"))).toBe(true);
    expect(overlaps(parseCidr("10.0.0.0/24"), parseCidr("10.0.1.0/24"))).toBe(false);
    expect(overlaps(parseCidr("10.0.1.0/24"), parseCidr("10.0.0.0/23"))).toBe(true);
  });

  it("ipam: the gateway is the first address, NICs get the lowest free one, and a full subnet is refused", () => {
    const c = parseCidr("192.168.7.0/30");
    expect(numberToIp(gatewayOf(c))).toBe("192.168.7.1");
    const used = new Set<number>();
    const first = allocateIp(c, used);
    expect(numberToIp(first)).toBe("192.168.7.2");
    used.add(first);
    // /30: network .0, gateway .1, one NIC .2, broadcast .3.
    expect(() => allocateIp(c, used)).toThrow(/192.168.7.0\/30 has no free address/);
    const wide = parseCidr("10.0.0.0/24");
    expect(numberToIp(allocateIp(wide, new Set([wide.base + 2, wide.base + 3])))).toBe("10.0.0.4");
  });

  it("ipam: MACs are locally administered unicast, unique, and the same for the same seed", () => {
    const used = new Set<string>();
    const rng = new Rng(5, "macs");
    for (let i = 0; i < 1_000; i++) used.add(allocateMac(used, () => rng.next()));
    expect(used.size).toBe(1_000);
    for (const mac of used) expect(mac).toMatch(/^02(:[0-9a-f]{2}){5}$/);
    const again = new Rng(5, "macs");
    expect(allocateMac(new Set(), () => again.next())).toBe([...used][0]);
  });
});
