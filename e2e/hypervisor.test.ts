// The hypervisor on a live datacenter (`simdc up`, real processes, real
// NATS), black-box through the CLI: CPU-bound VMs on a contended host show
// ready time in `simdc top`, high shares get more than normal ones, a limit
// holds and shows as %MLMTD; `vm resources` changes a running VM in place;
// a reservation no host can give is refused; the memory fault drives a host
// through its memory states and the balloon, and back.

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { eventually } from "@simdc/testkit";
import { startUp, type UpDatacenter } from "./up-env.js";

interface VmStatsJson {
  vmId: string;
  vcpus: number;
  usedPct?: number;
  readyPct?: number;
  maxLimitedPct?: number;
  lostWorkPct?: number;
  balloonMib?: number;
  workload: string;
}

interface HostSampleJson {
  hostId: string;
  host: { memoryState: string; utilizationPct?: number; balloonMib?: number; freeMib?: number; minFreeMib?: number; sampledAtMs: number };
  vms: VmStatsJson[];
}

let dc: UpDatacenter;

beforeAll(async () => {
  // One 2-core host at 10x: the five CPU-bound vCPUs below contend for it,
  // and a sample (5 s simulated) closes every half second.
  dc = await startUp(["--hosts", "1", "--pcpus", "2", "--memory-mib", "8192", "--time-scale", "10"]);
  await dc.simdc("volume", "create", "boot", "--size-mib", "16");
});

afterAll(async () => {
  await dc?.stop();
});

/** A sample of host-1 taken after `afterMs` (simulated), so it covers what was set before. */
async function sampleAfter(afterMs: number, check: (s: HostSampleJson) => boolean): Promise<HostSampleJson> {
  return eventually(
    "a host-1 sample that shows it",
    async () => {
      const [s] = await dc.json<HostSampleJson[]>("top", "--hosts", "host-1");
      if (!s || s.host.sampledAtMs < afterMs || !check(s)) throw new Error(JSON.stringify(s));
      return s;
    },
    30_000,
    200,
  );
}

const vmOf = (s: HostSampleJson, id: string): VmStatsJson => s.vms.find((v) => v.vmId === id)!;
/** When host-1's last sample closed, in simulated ms. */
async function lastSampleMs(): Promise<number> {
  const [s] = await dc.json<HostSampleJson[]>("top", "--hosts", "host-1");
  return s?.host.sampledAtMs ?? 0;
}

describe("hypervisor on a live datacenter", () => {
  it("top: contended CPU-bound VMs show ready time; high shares get twice normal's; a limit holds as %MLMTD", async () => {
    await dc.simdc("vm", "create", "hi", "--boot-volume", "boot", "--vcpus", "2", "--workload", "batch", "--cpu-shares", "high");
    await dc.simdc("vm", "create", "lo", "--boot-volume", "boot", "--vcpus", "2", "--workload", "batch");
    await dc.simdc("vm", "create", "capped", "--boot-volume", "boot", "--vcpus", "1", "--workload", "batch", "--cpu-limit-mhz", "200");
    for (const id of ["hi", "lo", "capped"]) await dc.simdc("wait", "vm", id, "--for", "running", "--timeout", "30s");
    // A window that starts after every VM runs: the one after next.
    const since = await lastSampleMs();
    const s = await sampleAfter(since + 10_000, (x) => x.vms.length === 3 && x.vms.every((v) => (v.usedPct ?? 0) > 0));
    const [hi, lo, capped] = [vmOf(s, "hi"), vmOf(s, "lo"), vmOf(s, "capped")];
    // 2 cores (200%): capped takes its 10% (200 of 2,000 MHz), hi and lo split the rest 2:1 by shares (4,000 to 2,000).
    expect(capped.usedPct!).toBeLessThanOrEqual(10.5);
    expect(capped.maxLimitedPct!).toBeGreaterThan(80);
    expect(hi.usedPct! / lo.usedPct!).toBeGreaterThan(1.6);
    expect(hi.usedPct! / lo.usedPct!).toBeLessThan(2.4);
    expect(lo.readyPct!).toBeGreaterThan(hi.readyPct!);
    expect(lo.lostWorkPct!).toBeGreaterThan(0);
    expect(s.host.utilizationPct!).toBeGreaterThan(95);
    // The table says the same, sorted by ready time: lo (the most ready) first among the contended.
    const table = await dc.simdc("top", "--hosts", "host-1", "--sort", "ready");
    expect(table).toMatch(/%RDY/);
    expect(table.indexOf("\nlo ")).toBeLessThan(table.indexOf("\nhi "));

    // vm resources: equal shares now, in place (a new generation), and the split evens out.
    const changed = await dc.simdc("vm", "resources", "hi", "--cpu-shares", "normal", "--wait", "hosts");
    expect(changed).toMatch(/cpu normal shares/);
    const after = await lastSampleMs();
    const even = await sampleAfter(after + 10_000, (x) => Math.abs(vmOf(x, "hi").usedPct! - vmOf(x, "lo").usedPct!) < 15);
    expect(vmOf(even, "hi").workload).toBe("batch");
    // Its ring shows both periods: high shares, then normal, oldest first.
    const ring = await dc.json<{ sampledAtMs: number; usedPct?: number }[]>("top", "--vm", "hi");
    expect(ring.length).toBeGreaterThan(2);
    expect(ring.map((x) => x.sampledAtMs)).toEqual([...ring.map((x) => x.sampledAtMs)].sort((a, b) => a - b));
    expect(Math.max(...ring.map((x) => x.usedPct ?? 0))).toBeGreaterThan(vmOf(even, "hi").usedPct! + 20);
  });

  it("placement: a CPU reservation no host can give is refused, and nothing is created", async () => {
    // 2 cores of 2,000 MHz: 4,000 MHz in all.
    await expect(dc.simdc("vm", "create", "greedy", "--boot-volume", "boot", "--vcpus", "2", "--cpu-reservation-mhz", "4001")).rejects.toMatchObject({
      stderr: expect.stringMatching(/RESOURCE_EXHAUSTED: .*CPU reservation: 0\+4001 MHz > 4000 MHz/),
    });
    const list = await dc.simdc("vm", "list");
    expect(list).not.toMatch(/greedy/);
  });

  it("fault memory: pressure takes the host to soft and the balloon inflates; taken away, it deflates and the host is high", async () => {
    // 8 GiB host: minFree is about 450 MiB; leave about half of that free.
    const before = await sampleAfter(0, () => true);
    const pressure = Math.round(before.host.freeMib! - before.host.minFreeMib! * 0.5);
    await dc.simdc("fault", "memory", "host-1", "--pressure-mib", String(pressure));
    const pressed = await sampleAfter(0, (x) => (x.host.balloonMib ?? 0) > 0);
    expect(["soft", "clear"]).toContain(pressed.host.memoryState);
    const events = await dc.simdc("events", "--kind", "memory-state-changed", "--since", "5m");
    expect(events).toMatch(/memory high -> /);
    await dc.simdc("fault", "memory", "host-1", "--pressure-mib", "0");
    const relieved = await sampleAfter(0, (x) => x.host.memoryState === "high" && (x.host.balloonMib ?? 0) === 0);
    expect(relieved.vms.every((v) => (v.balloonMib ?? 0) === 0)).toBe(true);
  });
});
