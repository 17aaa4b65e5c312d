// Proves the hypervisor runs inside a real agent, driven and read over the
// bus only: VMs of a document get CPU and memory from their host's models on
// the simulated clock; a host whose memory is overcommitted step by step
// (the memory pressure fault) starts page sharing, then ballooning, then
// compression and swapping, in that order, reports the VMs' lost work and
// its memory states as events, and gives everything back when the pressure
// goes. A real nats-server, a stand-in controller and SAN node, a ManualClock.

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect, type NatsConnection } from "nats";
import { simdc } from "@simdc/proto";
import { endpoint, hostAgentService, hostScope, hostService, sanNodeService, type Bucket, type Bus } from "@simdc/bus";
import { createLogger, ManualClock, Rng } from "@simdc/common";
import { connectTestBus, eventually, startTestNats, type TestNats } from "@simdc/testkit";
import { HostAgent, hypervisorSettingsOf } from "./mod.js";

import v1 = simdc.v1;

const prefix = "hv";
const agentId = "agent-hv";
const hostId = "host-1";
const hostMemoryMib = 32_768;
const vmCount = 6;
const scope = hostScope(agentId, hostId);

let nats: TestNats;
let peers: Bus;
let agentBus: Bus;
let raw: NatsConnection;
let agent: HostAgent;
let docs: Bucket<v1.HostDocument>;
const clock = new ManualClock();
const events: v1.Event[] = [];
const statuses: v1.VmStatus[] = [];

beforeAll(async () => {
  nats = await startTestNats();
  peers = await connectTestBus(nats.url, { prefix, processId: "hv-peers" });
  await peers.serve({ role: "controller", description: "stand-in controller" }, [
    // Another interval than the agent starts with (as a controller of another configuration names): adopting it must not stop the hypervisors.
    endpoint(hostService.RegisterHost, (req) => ({ host: { id: req.hostId, agentId: req.agentId }, heartbeatIntervalMs: 2_000, heartbeatMissesMax: 3, metricsIntervalMs: 10_000 })),
  ]);
  await peers.serve({ role: "san-node", scopeId: "san-1", description: "stand-in SAN node" }, [
    endpoint(sanNodeService.ReadBlocks, (req) => ({ data: new Uint8Array(req.blockCount * 4096) })),
  ]);
  docs = await peers.bucket("docs", v1.HostDocument, { fenced: { epochOf: () => 1 } });
  raw = await connect({ servers: nats.url });
  raw.subscribe(`${prefix}.evt.host.${hostId}.memory-state`, { callback: (_err, msg) => void events.push(v1.Event.decode(msg.data)) });
  raw.subscribe(`${prefix}.evt.host.${hostId}.vm`, { callback: (_err, msg) => void statuses.push(v1.VmStatus.decode(msg.data)) });
  await raw.flush();
  agentBus = await connectTestBus(nats.url, { prefix, processId: agentId });
  agent = await HostAgent.start({
    bus: agentBus,
    logger: createLogger({ service: "host-agent", id: agentId, level: process.env["LOG_LEVEL"] ?? "silent" }),
    clock,
    rng: new Rng(7, agentId),
    config: {
      agentId,
      hostIds: [hostId],
      capacity: { pcpus: 16, memoryMib: hostMemoryMib, nics: 1 },
      hypervisor: hypervisorSettingsOf(16, hostMemoryMib),
      timing: { bootBlocks: 1, bootTimeMs: 300, stopTimeMs: 100, bootRetryMs: 30_000 },
      heartbeatIntervalMs: 1_000,
      testFaults: false,
      failMode: "secure",
      inactivityProbeMs: 5_000,
      uplinks: [{ name: "nic0", bandwidthMbps: 10_000, queueBytes: 1 << 20, latencyMs: 0.05 }],
    },
  });
});

afterAll(async () => {
  await agent?.stop();
  await agentBus?.close();
  await raw?.close();
  await peers?.close();
  await nats?.dispose();
});

/** Desktops cloned from one image, with one salt so their pages may be shared. */
function desktop(i: number, spec: Partial<v1.IVmSpec> = {}): v1.IDesiredVm {
  return {
    vmId: `vdi-${i}`,
    incarnation: "i1",
    spec: { vcpus: 2, memoryMib: 4_096, bootVolume: "vol-boot", workload: { kind: "vdi", image: "win10", shareSalt: "pool-a" }, ...spec },
    powerState: v1.PowerState.POWER_STATE_ON,
    generation: 1,
    bootVolume: { volumeId: "vol-boot", sanNodeId: "san-1" },
  };
}

async function stats(): Promise<v1.GetHostStatsResponse> {
  return peers.call(hostAgentService.GetHostStats, {}, { scopeId: scope });
}

async function advance(ms: number): Promise<void> {
  // In slices, so the agent's timers and the bus interleave as they would.
  for (let done = 0; done < ms; done += 5_000) await clock.advanceAsync(Math.min(5_000, ms - done));
}

describe("hypervisor in the agent", () => {
  it("hypervisor: overcommitting a host's memory step by step brings sharing, then the balloon, then compression and swap; lost work shows; all comes back", async () => {
    await eventually("the host registered", async () => {
      await clock.advanceAsync(200);
      return agent.health().details["hostsRegistered"] === 1 ? true : undefined;
    });
    await docs.put(`${agentId}.${hostId}.0`, {
      hostId,
      generation: 1,
      epoch: 1,
      stateId: "state-hv",
      chunkIndex: 0,
      chunkCount: 1,
      vms: Array.from({ length: vmCount }, (_, i) => desktop(i + 1)),
    });
    await eventually("every VM sampled", async () => {
      await advance(5_000);
      const s = await stats();
      return s.vms.length === vmCount ? s : undefined;
    });
    const first = await stats();
    expect(first.host?.memoryState).toBe("high");
    expect(first.vms.every((vm) => vm.workload === "vdi" && vm.lostWorkPct === 0)).toBe(true);

    // Pressure rises by 500 MiB every two simulated minutes; each mechanism's first sighting is kept.
    const started: Record<"sharing" | "balloon" | "compression" | "swap" | "swapWait", number | null> = { sharing: null, balloon: null, compression: null, swap: null, swapWait: null };
    let lostWhileSwapping = 0;
    let firstSwap = { compressedMib: 0, swappedMib: 0 };
    let pressureMib = 0;
    for (let round = 0; started.swap === null && round < 80; round++) {
      pressureMib += 500;
      await peers.call(hostAgentService.SetMemoryPressure, { pressureMib }, { scopeId: scope });
      for (let t = 0; t < 4; t++) {
        await advance(30_000);
        const s = await stats();
        const h = s.host!;
        const atMs = clock.nowMs();
        if (started.sharing === null && (h.sharedSavedMib ?? 0) > 0) started.sharing = atMs;
        if (started.balloon === null && (h.balloonMib ?? 0) > 0) started.balloon = atMs;
        if (started.compression === null && (h.compressedMib ?? 0) > 0) started.compression = atMs;
        if (started.swap === null && (h.swappedMib ?? 0) > 0) {
          started.swap = atMs;
          firstSwap = { compressedMib: h.compressedMib ?? 0, swappedMib: h.swappedMib ?? 0 };
        }
      }
    }
    expect(started.swap, `no swapping up to ${pressureMib} MiB of pressure`).not.toBeNull();
    // Held there for ten minutes: swapped pages the guests touch stall them, and the work they lose shows.
    for (let t = 0; t < 20; t++) {
      await advance(30_000);
      const s = await stats();
      if (started.swapWait === null && s.vms.some((vm) => (vm.swapWaitPct ?? 0) > 0)) started.swapWait = clock.nowMs();
      lostWhileSwapping = Math.max(lostWhileSwapping, ...s.vms.map((vm) => vm.lostWorkPct ?? 0));
    }
    const order = `sharing ${started.sharing}, balloon ${started.balloon}, compression ${started.compression}, swap ${started.swap}`;
    expect(started.sharing, order).not.toBeNull();
    expect(started.balloon, order).not.toBeNull();
    expect(started.compression, order).not.toBeNull();
    expect(started.sharing!, order).toBeLessThan(started.balloon!);
    expect(started.balloon!, order).toBeLessThan(started.compression!);
    // Compression takes the candidates that fit 2 KB and swap the rest, so they may start in one step, never swap first;
    // when they do, compression has taken more (most candidates compress).
    expect(started.compression!, order).toBeLessThanOrEqual(started.swap!);
    if (started.compression === started.swap) expect(firstSwap.compressedMib, JSON.stringify(firstSwap)).toBeGreaterThan(firstSwap.swappedMib);
    expect(started.swapWait, "no VM waited on swap-in").not.toBeNull();
    expect(lostWhileSwapping).toBeGreaterThan(0);
    // The states were reported as events, through soft on the way down.
    const states = events.map((e) => e.message);
    expect(states.some((m) => m.includes("-> soft")), states.join("; ")).toBe(true);
    expect(states.some((m) => m.includes("-> hard") || m.includes("-> low")), states.join("; ")).toBe(true);

    // Pressure gone: ballooned, compressed and swapped memory comes back, and the host is high again.
    await peers.call(hostAgentService.SetMemoryPressure, { pressureMib: 0 }, { scopeId: scope });
    const back = await eventually("everything given back", async () => {
      await advance(60_000);
      const s = await stats();
      const h = s.host!;
      return h.memoryState === "high" && h.balloonMib === 0 && h.compressedMib === 0 && h.swappedMib === 0 ? s : undefined;
    }, 30_000);
    expect(back.vms.every((vm) => vm.balloonMib === 0 && vm.swappedMib === 0 && vm.compressedMib === 0)).toBe(true);
    expect(events.at(-1)?.message).toContain("-> high");

    // The rings: the host's last ten minutes and a VM's last five, oldest first, the newest being the current sample.
    const rings = await peers.call(hostAgentService.GetHostStats, { history: true, vmId: "vdi-1" }, { scopeId: scope });
    expect(rings.history).toHaveLength(120);
    expect(rings.vmHistory).toHaveLength(60);
    const times = rings.vmHistory.map((x) => x.sampledAtMs);
    expect(times).toEqual([...times].sort((a, b) => a! - b!));
    expect(rings.vmHistory.at(-1)).toMatchObject({ sampledAtMs: rings.host?.sampledAtMs, usedPct: rings.vms.find((vm) => vm.vmId === "vdi-1")?.usedPct });
    expect(rings.history.at(-1)?.sampledAtMs).toBe(rings.host?.sampledAtMs);
  });

  it("hypervisor: admission control fails a VM whose reservation the host has no more of, and the others run on", async () => {
    // 16 cores of 2,000 MHz: 32,000 MHz, so two VMs cannot both reserve 20,000; the
    // controller would refuse the second, a document may still ask it.
    await docs.put(`${agentId}.${hostId}.0`, {
      hostId,
      generation: 2,
      epoch: 1,
      stateId: "state-hv",
      chunkIndex: 0,
      chunkCount: 1,
      vms: [
        ...Array.from({ length: vmCount }, (_, i) => desktop(i + 1)),
        { ...desktop(98, { vcpus: 16, cpu: { reservation: 20_000 } }), vmId: "greedy-1" },
        { ...desktop(99, { vcpus: 16, cpu: { reservation: 20_000 } }), vmId: "greedy-2" },
      ],
    });
    const failed = await eventually("the greedy VM failed", async () => {
      await clock.advanceAsync(100);
      return statuses.find((st) => st.vmId.startsWith("greedy") && st.state === v1.VmState.VM_STATE_FAILED);
    });
    expect(failed.reason?.code).toBe(v1.ErrorCode.ERROR_CODE_RESOURCE_EXHAUSTED);
    expect(failed.reason?.message).toMatch(/reserv/);
    await advance(5_000);
    const s = await stats();
    const admitted = failed.vmId === "greedy-1" ? "greedy-2" : "greedy-1";
    expect(s.vms.map((vm) => vm.vmId).sort()).toEqual([admitted, ...Array.from({ length: vmCount }, (_, i) => `vdi-${i + 1}`)].sort());
  });

  it("hypervisor: bad input to the memory fault is a typed error and changes nothing", async () => {
    await advance(5_000);
    const before = (await stats()).host?.pressureMib;
    await expect(peers.call(hostAgentService.SetMemoryPressure, { pressureMib: hostMemoryMib + 1 }, { scopeId: scope })).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
    await expect(peers.call(hostAgentService.GetHostStats, {}, { scopeId: hostScope(agentId, "host-9") })).rejects.toMatchObject({ code: "NOT_FOUND" });
    await expect(peers.call(hostAgentService.GetHostStats, { vmId: "vm-404" }, { scopeId: scope })).rejects.toMatchObject({ code: "NOT_FOUND" });
    await expect(peers.call(hostAgentService.GetHostStats, { vmId: "a.b" }, { scopeId: scope })).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
    await advance(5_000);
    expect((await stats()).host?.pressureMib).toBe(before);
  });
});
