// Proves the placement filters and weigher on plain data: overcommit ratios
// bound what a host takes, disconnected hosts are skipped, the least loaded
// host wins, and a refusal says why for each host.

import { describe, expect, it } from "vitest";
import { placeVm, rejectionsListedMax, type PlacementHost } from "./placement.js";

const host = (id: string, over: Partial<PlacementHost> = {}): PlacementHost => ({
  id,
  connected: true,
  pcpus: 4,
  memoryMib: 8192,
  allocatedVcpus: 0,
  allocatedMemoryMib: 0,
  vmCount: 0,
  vmsMax: 1024,
  ...over,
});
const ratios = { cpu: 2, memory: 1.5 };

describe("placement", () => {
  it("placement: picks the least loaded host and explains the choice", () => {
    const result = placeVm(
      [host("host-1", { allocatedVcpus: 6 }), host("host-2", { allocatedVcpus: 2 }), host("host-3", { allocatedVcpus: 4 })],
      { vcpus: 1, memoryMib: 1024 },
      ratios,
    );
    expect(result).toMatchObject({ ok: true, hostId: "host-2" });
    expect(result.ok && result.reason).toMatch(/least loaded of 3 fitting hosts/);
  });

  it("placement: the CPU overcommit ratio bounds vCPUs per host", () => {
    expect(placeVm([host("host-1", { allocatedVcpus: 7 })], { vcpus: 1, memoryMib: 1 }, ratios).ok).toBe(true);
    const refused = placeVm([host("host-1", { allocatedVcpus: 8 })], { vcpus: 1, memoryMib: 1 }, ratios);
    expect(refused.ok).toBe(false);
    expect(refused.rejected[0]?.reason).toBe("CPU: 8+1 vCPUs > 8 (4 pCPUs x 2)");
  });

  it("placement: the memory overcommit ratio bounds memory per host", () => {
    expect(placeVm([host("host-1")], { vcpus: 1, memoryMib: 12288 }, ratios).ok).toBe(true);
    const refused = placeVm([host("host-1")], { vcpus: 1, memoryMib: 12289 }, ratios);
    expect(refused.rejected[0]?.reason).toBe("memory: 0+12289 MiB > 12288 MiB (8192 MiB x 1.5)");
  });

  it("placement: reservations are never overcommitted, whatever the ratios", () => {
    // 4 cores of 2,000 MHz: 8,000 MHz to reserve; 8,192 MiB of memory, though the ratio lets 12,288 be allocated.
    const fitted = { coreMhz: 2_000, reservedMhz: 6_000, reservedMib: 8_000 };
    expect(placeVm([host("host-1", fitted)], { vcpus: 1, memoryMib: 1, reservationMhz: 2_000, reservationMib: 192 }, ratios).ok).toBe(true);
    const cpu = placeVm([host("host-1", fitted)], { vcpus: 1, memoryMib: 1, reservationMhz: 2_001 }, ratios);
    expect(cpu.rejected[0]?.reason).toBe("CPU reservation: 6000+2001 MHz > 8000 MHz (4 cores x 2000 MHz)");
    const memory = placeVm([host("host-1", fitted)], { vcpus: 1, memoryMib: 1, reservationMib: 193 }, ratios);
    expect(memory.rejected[0]?.reason).toBe("memory reservation: 8000+193 MiB > 8192 MiB");
    // The host that can give it is chosen, though the other is less loaded.
    const chosen = placeVm([host("host-1", { coreMhz: 1_000 }), host("host-2", { coreMhz: 3_000, allocatedVcpus: 4 })], { vcpus: 1, memoryMib: 1, reservationMhz: 5_000 }, ratios);
    expect(chosen).toMatchObject({ ok: true, hostId: "host-2" });
  });

  it("placement: a VM is never wider than a host's logical CPUs (hyperthreads count)", () => {
    const refused = placeVm([host("host-1")], { vcpus: 5, memoryMib: 1 }, ratios);
    expect(refused.rejected[0]?.reason).toBe("width: 5 vCPUs > 4 logical CPUs");
    expect(placeVm([host("host-1", { threadsPerCore: 2 })], { vcpus: 8, memoryMib: 1 }, { cpu: 4, memory: 1.5 }).ok).toBe(true);
  });

  it("placement: measured demand counts: a host whose cores are busy is more loaded than its allocation says, one in the low memory state takes nothing", () => {
    const busy = host("host-1", { measuredCpuPct: 90, memoryState: "high" });
    const idle = host("host-2", { allocatedVcpus: 4, measuredCpuPct: 10, memoryState: "soft" });
    const chosen = placeVm([busy, idle], { vcpus: 1, memoryMib: 1 }, ratios);
    // By allocation host-1 is emptier (0 of 8 vCPUs against 4 of 8); by measure it is 90% busy.
    expect(chosen).toMatchObject({ ok: true, hostId: "host-2" });
    expect(chosen.ok && chosen.reason).toMatch(/it measured its cores 10% busy, memory soft/);
    const low = placeVm([host("host-1", { measuredCpuPct: 0, memoryState: "low" })], { vcpus: 1, memoryMib: 1 }, ratios);
    expect(low.rejected[0]?.reason).toBe("memory: the host is in the low state (its VMs' allocations block)");
  });

  it("placement: a host at its VM limit takes no more", () => {
    const refused = placeVm([host("host-1", { vmCount: 2, vmsMax: 2 })], { vcpus: 1, memoryMib: 1 }, ratios);
    expect(refused.rejected[0]?.reason).toBe("VMs: holds 2, its limit");
  });

  it("placement: skips disconnected hosts and says so", () => {
    const result = placeVm([host("host-1", { connected: false }), host("host-2", { allocatedVcpus: 7 })], { vcpus: 1, memoryMib: 1 }, ratios);
    expect(result).toMatchObject({ ok: true, hostId: "host-2", rejected: [{ hostId: "host-1", reason: "disconnected" }] });
  });

  it("placement: refuses with a reason when nothing fits or nothing is registered", () => {
    expect(placeVm([], { vcpus: 1, memoryMib: 1 }, ratios)).toMatchObject({ ok: false, reason: expect.stringMatching(/no hosts are registered/) });
    const full = placeVm([host("host-1", { allocatedVcpus: 5 }), host("host-2", { allocatedVcpus: 6 })], { vcpus: 4, memoryMib: 1 }, ratios);
    expect(full).toMatchObject({ ok: false, reason: expect.stringMatching(/^no host fits 4 vCPUs and 1 MiB: all 2 hosts were filtered out$/) });
    expect(full.rejected).toEqual([
      { hostId: "host-1", reason: "CPU: 5+4 vCPUs > 8 (4 pCPUs x 2)" },
      { hostId: "host-2", reason: "CPU: 6+4 vCPUs > 8 (4 pCPUs x 2)" },
    ]);
  });

  it("placement: ties go to the lower id", () => {
    expect(placeVm([host("host-2"), host("host-1")], { vcpus: 1, memoryMib: 1 }, ratios)).toMatchObject({ hostId: "host-1" });
    expect(placeVm([host("host-1"), host("host-2")], { vcpus: 1, memoryMib: 1 }, ratios)).toMatchObject({ hostId: "host-1" });
  });

  it("placement: the tighter resource decides how loaded a host is", () => {
    // host-1 has CPU to spare but little memory left; host-2 is half used on both,
    // and after the VM its CPU (5 of 8 vCPUs) is the tighter resource: 38% free.
    const result = placeVm(
      [host("host-1", { allocatedVcpus: 0, allocatedMemoryMib: 11_000 }), host("host-2", { allocatedVcpus: 4, allocatedMemoryMib: 6144 })],
      { vcpus: 1, memoryMib: 1 },
      ratios,
    );
    expect(result).toMatchObject({ ok: true, hostId: "host-2", reason: expect.stringMatching(/: 38% of its tighter resource stays free$/) });
  });

  it("placement: lists at most rejectionsListedMax rejections however many hosts refuse", () => {
    const hosts = Array.from({ length: rejectionsListedMax + 10 }, (_, i) => host(`host-${i}`, { connected: false }));
    const refused = placeVm(hosts, { vcpus: 1, memoryMib: 1 }, ratios);
    expect(refused).toMatchObject({ ok: false, reason: expect.stringMatching(/all 42 hosts were filtered out/) });
    expect(refused.rejected).toHaveLength(rejectionsListedMax);
  });
});
