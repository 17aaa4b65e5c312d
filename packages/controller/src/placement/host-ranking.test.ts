// Proves that the ranking the controller places with (a heap kept current as
// allocations change, examined best-first) chooses exactly the host the full
// scan chooses, over many seeded random datacenters and sequences of
// placements, on both of its paths (the ranked walk and the fallback to the
// full scan once rankedExaminedMax hosts in a row do not fit), and that a
// refusal lists a reason per host.

import { describe, expect, it } from "vitest";
import { Rng } from "@simdc/common";
import { HostRanking, rankedExaminedMax } from "./host-ranking.js";
import { placeVm, rejectionsListedMax, type OvercommitRatios, type PlacementHost, type PlacementRequest } from "./placement.js";

const ratios: OvercommitRatios = { cpu: 2, memory: 1.5 };

/** A datacenter of plain data and a ranking over it, as the controller wires them. */
function datacenter(hosts: PlacementHost[]): { hosts: Map<string, PlacementHost>; ranking: HostRanking } {
  const byId = new Map(hosts.map((h) => [h.id, h]));
  const ranking = new HostRanking(
    (id) => {
      const h = byId.get(id);
      return h ? { ...h } : undefined;
    },
    () => [...byId.values()].map((h) => ({ ...h })),
    ratios,
  );
  for (const id of byId.keys()) ranking.update(id);
  return { hosts: byId, ranking };
}

/**
 * A random host; with `crowded`, most hosts are idle but at their VM limit,
 * so the least loaded hosts refuse and a placement walks past
 * rankedExaminedMax of them to the full scan.
 */
function randomHost(rng: Rng, id: string, crowded: boolean): PlacementHost {
  const pcpus = 1 + rng.below(16);
  const memoryMib = 1024 * (1 + rng.below(32));
  const vmsMax = 1 + rng.below(40);
  if (crowded && rng.next() < 0.8) {
    return { id, connected: true, pcpus, memoryMib, allocatedVcpus: rng.below(2), allocatedMemoryMib: 0, vmCount: vmsMax, vmsMax };
  }
  return {
    id,
    connected: rng.next() > 0.1,
    pcpus,
    memoryMib,
    // Some hosts start over what the ratios allow (a ratio lowered since).
    allocatedVcpus: rng.below(Math.floor(pcpus * ratios.cpu) + 3),
    allocatedMemoryMib: rng.below(Math.floor(memoryMib * ratios.memory) + 2048),
    // Roughly a third of the hosts sit at their VM limit: the least loaded of them refuse, which forces long walks.
    vmCount: rng.next() < 0.3 ? vmsMax : rng.below(vmsMax),
    vmsMax,
    // Half the hosts have measured themselves: busy cores weigh, the low memory state refuses.
    ...(rng.next() < 0.5 ? { measuredCpuPct: rng.below(101), memoryState: rng.next() < 0.1 ? "low" : "soft" } : {}),
  };
}

function randomVm(rng: Rng): PlacementRequest {
  return { vcpus: 1 + rng.below(8), memoryMib: 256 * (1 + rng.below(16)) };
}

describe("host ranking", () => {
  it("host ranking: places every VM where the full scan would, over random datacenters and allocations", () => {
    const rng = new Rng(20240611, "host-ranking");
    let ranked = 0;
    let fallbacks = 0;
    let refusals = 0;
    for (let trial = 0; trial < 300; trial++) {
      // Mostly small datacenters, some larger than the walk limit so the fallback is exercised.
      const crowded = trial % 10 === 0;
      const hostCount = crowded ? rankedExaminedMax * 2 + rng.below(200) : 1 + rng.below(40);
      const { hosts, ranking } = datacenter(Array.from({ length: hostCount }, (_, i) => randomHost(rng, `host-${String(i).padStart(3, "0")}`, crowded)));
      for (let step = 0; step < 30; step++) {
        const vm = randomVm(rng);
        const expected = placeVm([...hosts.values()], vm, ratios);
        const got = ranking.place(vm);
        expect(got.ok, `trial ${trial} step ${step}`).toBe(expected.ok);
        if (!got.ok || !expected.ok) {
          refusals += 1;
          expect(got.reason).toBe(expected.reason);
          continue;
        }
        expect(got.hostId, `trial ${trial} step ${step}`).toBe(expected.hostId);
        // The explanation names the same share of the tighter resource left free.
        const share = (reason: string) => /(\d+)% of its tighter resource stays free/.exec(reason)?.[1];
        expect(share(got.reason)).toBeDefined();
        expect(share(got.reason)).toBe(share(expected.reason));
        if (/examined\)/.test(got.reason)) ranked += 1;
        else fallbacks += 1;
        // The VM lands; the controller then re-ranks that host (and sometimes a host drops out or comes back).
        const chosen = hosts.get(got.hostId)!;
        chosen.allocatedVcpus += vm.vcpus;
        chosen.allocatedMemoryMib += vm.memoryMib;
        chosen.vmCount += 1;
        ranking.update(chosen.id);
        if (rng.next() < 0.1) {
          const flipped = hosts.get(`host-${String(rng.below(hostCount)).padStart(3, "0")}`)!;
          flipped.connected = !flipped.connected;
          ranking.update(flipped.id);
        }
      }
    }
    // Every path was taken many times, so the equality above was checked on each.
    expect(ranked).toBeGreaterThan(1000);
    expect(fallbacks).toBeGreaterThan(10);
    expect(refusals).toBeGreaterThan(10);
  });

  it("host ranking: explains a choice by the hosts it passed over", () => {
    const { ranking } = datacenter([
      { id: "host-1", connected: true, pcpus: 8, memoryMib: 8192, allocatedVcpus: 0, allocatedMemoryMib: 0, vmCount: 4, vmsMax: 4 },
      { id: "host-2", connected: true, pcpus: 8, memoryMib: 8192, allocatedVcpus: 8, allocatedMemoryMib: 0, vmCount: 1, vmsMax: 10 },
      { id: "host-3", connected: false, pcpus: 64, memoryMib: 65536, allocatedVcpus: 0, allocatedMemoryMib: 0, vmCount: 0, vmsMax: 10 },
    ]);
    const result = ranking.place({ vcpus: 2, memoryMib: 1024 });
    expect(result).toEqual({
      ok: true,
      hostId: "host-2",
      reason: "least loaded of 2 connected hosts (2 examined): 38% of its tighter resource stays free",
      rejected: [{ hostId: "host-1", reason: "VMs: holds 4, its limit" }],
    });
  });

  it("host ranking: a refusal lists a reason for every host, disconnected ones included", () => {
    const hosts: PlacementHost[] = Array.from({ length: 5 }, (_, i) => ({
      id: `host-${i}`,
      connected: i !== 4,
      pcpus: 2,
      memoryMib: 1024,
      allocatedVcpus: i + 3,
      allocatedMemoryMib: 0,
      vmCount: 0,
      vmsMax: 10,
    }));
    const { ranking } = datacenter(hosts);
    const result = ranking.place({ vcpus: 2, memoryMib: 64 });
    expect(result).toEqual({
      ok: false,
      reason: "no host fits 2 vCPUs and 64 MiB: all 5 hosts were filtered out",
      rejected: [
        { hostId: "host-0", reason: "CPU: 3+2 vCPUs > 4 (2 pCPUs x 2)" },
        { hostId: "host-1", reason: "CPU: 4+2 vCPUs > 4 (2 pCPUs x 2)" },
        { hostId: "host-2", reason: "CPU: 5+2 vCPUs > 4 (2 pCPUs x 2)" },
        { hostId: "host-3", reason: "CPU: 6+2 vCPUs > 4 (2 pCPUs x 2)" },
        { hostId: "host-4", reason: "disconnected" },
      ],
    });
  });

  it("host ranking: a host that goes away or disconnects is never chosen, and one that comes back is", () => {
    const { hosts, ranking } = datacenter([
      { id: "host-1", connected: true, pcpus: 8, memoryMib: 8192, allocatedVcpus: 0, allocatedMemoryMib: 0, vmCount: 0, vmsMax: 10 },
      { id: "host-2", connected: true, pcpus: 8, memoryMib: 8192, allocatedVcpus: 8, allocatedMemoryMib: 0, vmCount: 1, vmsMax: 10 },
    ]);
    const vm = { vcpus: 1, memoryMib: 1 };
    expect(ranking.place(vm)).toMatchObject({ ok: true, hostId: "host-1" });
    hosts.get("host-1")!.connected = false;
    ranking.update("host-1");
    expect(ranking.size).toBe(1);
    expect(ranking.place(vm)).toMatchObject({ ok: true, hostId: "host-2" });
    hosts.delete("host-2");
    ranking.update("host-2");
    expect(ranking.place(vm)).toMatchObject({ ok: false, rejected: [{ hostId: "host-1", reason: "disconnected" }] });
    hosts.get("host-1")!.connected = true;
    ranking.update("host-1");
    expect(ranking.place(vm)).toMatchObject({ ok: true, hostId: "host-1" });
  });

  it("host ranking: a refusal over many hosts lists at most rejectionsListedMax of them", () => {
    const { ranking } = datacenter(
      Array.from({ length: rankedExaminedMax * 2 }, (_, i) => ({
        id: `host-${String(i).padStart(3, "0")}`,
        connected: true,
        pcpus: 1,
        memoryMib: 1024,
        allocatedVcpus: 0,
        allocatedMemoryMib: 0,
        vmCount: 0,
        vmsMax: 10,
      })),
    );
    const result = ranking.place({ vcpus: 3, memoryMib: 1 });
    expect(result).toMatchObject({ ok: false, reason: expect.stringMatching(/all 256 hosts were filtered out/) });
    expect(result.rejected).toHaveLength(rejectionsListedMax);
  });
});
