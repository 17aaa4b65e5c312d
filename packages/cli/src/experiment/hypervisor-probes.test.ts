// Proves the hypervisor probe's and VM groups' wire mapping on plain
// messages: a host's esxtop sample becomes one reading with the host's and
// each VM's counters under the keys the assertions read, bounded to the
// first VMs by id, timed at its window's end; a group's shares, reservations,
// workload, image and salt become what `vm create` sends, a boot storm's
// workload boots first, and what a group leaves out stays absent.

import { describe, expect, it } from "vitest";
import { hypervisorProbeLimits, vmValueKey } from "@simdc/experiment";
import { simdc } from "@simdc/proto";
import { hostReading, vmResourcesWire } from "./hypervisor-probes.js";

import v1 = simdc.v1;

describe("hypervisor probe", () => {
  it("probe: a host's sample is one reading of its counters and its first VMs' by id, the rest counted", () => {
    const vms = Array.from({ length: hypervisorProbeLimits.vmsPerHostMax + 2 }, (_, i) => ({ vmId: `vm-${String(i).padStart(3, "0")}`, vcpus: 2, usedPct: 150, readyPct: 40, costopPct: 10, lostWorkPct: 20, balloonMib: 64 }));
    const reading = hostReading({
      hostId: "host-1",
      host: { sampledAtMs: 123_000, windowMs: 5_000, utilizationPct: 99, memoryState: "hard", freeMib: 150, minFreeMib: 614, sharedSavedMib: 30, sharedSavedBetweenVmsMib: 12, balloonMib: 300, compressedMib: 40, swappedMib: 20, pressureMib: 1820 },
      vms: [...vms].reverse(),
    });
    expect(reading.label).toBe("host-1");
    expect(reading.timeMs).toBe(123_000);
    expect(reading.values).toMatchObject({ utilization: 99, memoryState: 3, free: 150, sharedSaved: 30, sharedSavedBetweenVms: 12, balloon: 300, compressed: 40, swapped: 20, pressure: 1820, windowMs: 5_000, vms: 64, vmsOmitted: 2 });
    expect(reading.values[vmValueKey("vm-000", "ready")]).toBe(40);
    expect(reading.values[vmValueKey("vm-063", "vcpus")]).toBe(2);
    expect(reading.values[vmValueKey("vm-064", "used")]).toBeUndefined();
  });

  it("probe: a VM group's fields are what vm create sends; a boot storm boots first; what a group leaves out stays out", () => {
    expect(vmResourcesWire({})).toEqual({});
    const wire = vmResourcesWire(
      { cpu: { shares: "high", reservationMhz: 3000 }, memory: { shares: 5000 }, workload: { kind: "vdi", params: { cpuMean: 0.2 }, phases: [{ kind: "web", for: "1m" }] }, image: "win10", shareSalt: "pool" },
      40_000,
    );
    expect(wire.cpu).toEqual({ sharesLevel: v1.SharesLevel.SHARES_LEVEL_HIGH, shares: 0, reservation: 3000, limit: 0 });
    expect(wire.memory).toEqual({ sharesLevel: v1.SharesLevel.SHARES_LEVEL_CUSTOM, shares: 5000, reservation: 0 });
    expect(wire.workload).toEqual({
      kind: "vdi",
      params: { cpuMean: 0.2 },
      phases: [
        { kind: "boot", durationMs: 40_000, params: {} },
        { kind: "web", durationMs: 60_000, params: {} },
      ],
      image: "win10",
      shareSalt: "pool",
    });
    // A storm of idle guests still boots first.
    expect(vmResourcesWire({}, 5_000).workload).toMatchObject({ kind: "idle", phases: [{ kind: "boot", durationMs: 5_000 }] });
  });
});
