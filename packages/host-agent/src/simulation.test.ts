// Proves that a host agent runs on simulated time: on a ManualClock, with a
// real nats-server and stand-in controller and SAN node, ten hosts run for a
// simulated hour in seconds of wall time (about half a second alone). Every host beats
// exactly once per interval in a slot of its own, publishes metrics exactly
// every metrics interval (both intervals taken from the registration reply),
// boots its VM on the simulated clock, and reports a document realized while
// the clock stands still at once.

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { performance } from "node:perf_hooks";
import { connect, type NatsConnection } from "nats";
import { simdc } from "@simdc/proto";
import { endpoint, hostService, sanNodeService, type Bucket, type Bus } from "@simdc/bus";
import { createLogger, ManualClock, Rng } from "@simdc/common";
import { connectTestBus, eventually, startTestNats, type TestNats } from "@simdc/testkit";
import { HostAgent, hypervisorSettingsOf } from "./mod.js";

import v1 = simdc.v1;

const prefix = "sim";
const agentId = "agent-sim";
const hostIds = Array.from({ length: 10 }, (_, i) => `host-${i + 1}`);
/** What the stand-in controller answers; the agent starts at 5000 ms until then. */
const heartbeatIntervalMs = 1_000;
const metricsIntervalMs = 10_000;
const hourMs = 3_600_000;
/** Simulated time per clock.advance; the test yields to I/O between steps. */
const stepMs = 60_000;

let nats: TestNats;
let peers: Bus;
let agentBus: Bus;
let raw: NatsConnection;
let agent: HostAgent;
let docs: Bucket<v1.HostDocument>;
const clock = new ManualClock();
/** Raw messages as they came; decoded after the timed part, so decoding does not count in it. */
const received: { subject: string; data: Uint8Array }[] = [];

beforeAll(async () => {
  nats = await startTestNats();
  peers = await connectTestBus(nats.url, { prefix, processId: "sim-peers" });
  await peers.serve({ role: "controller", description: "stand-in controller" }, [
    endpoint(hostService.RegisterHost, (req) => ({ host: { id: req.hostId, agentId: req.agentId }, heartbeatIntervalMs, heartbeatMissesMax: 3, metricsIntervalMs })),
  ]);
  await peers.serve({ role: "san-node", scopeId: "san-1", description: "stand-in SAN node" }, [
    endpoint(sanNodeService.ReadBlocks, (req) => ({ data: new Uint8Array(req.blockCount * 4096) })),
  ]);
  docs = await peers.bucket("docs", v1.HostDocument, { fenced: { epochOf: () => 1 } });
  raw = await connect({ servers: nats.url });
  raw.subscribe(`${prefix}.evt.host.>`, { callback: (_err, msg) => void received.push({ subject: msg.subject, data: msg.data }) });
  // The agent's batches of heartbeats, each beat recorded as if it had come alone on its host's subject.
  raw.subscribe(`${prefix}.evt.agent.>`, {
    callback: (_err, msg) => {
      for (const beat of v1.HostHeartbeats.decode(msg.data).beats) {
        received.push({ subject: `${prefix}.evt.host.${beat.hostId}.heartbeat`, data: v1.HostHeartbeat.encode(beat).finish() });
      }
    },
  });
  await raw.flush();
  agentBus = await connectTestBus(nats.url, { prefix, processId: agentId });
  agent = await HostAgent.start({
    bus: agentBus,
    logger: createLogger({ service: "host-agent", id: agentId, level: process.env["LOG_LEVEL"] ?? "silent" }),
    clock,
    rng: new Rng(11, agentId),
    config: {
      agentId,
      hostIds,
      capacity: { pcpus: 16, memoryMib: 65_536, nics: 2 },
      hypervisor: hypervisorSettingsOf(16, 65_536),
      timing: { bootBlocks: 8, bootTimeMs: 300, stopTimeMs: 100, bootRetryMs: 30_000 },
      heartbeatIntervalMs: 5_000,
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

const kindOf = (subject: string): string => subject.split(".").at(-1)!;
const hostOf = (subject: string): string => subject.split(".").at(-2)!;

describe("simulation", () => {
  it("simulation: an agent runs its hosts for a simulated hour on the manual clock, in seconds of wall time", async () => {
    // Simulated time is the only time the agent reads: nothing beats while
    // the clock stands still except the report of a realized document, and
    // an hour of it costs a fraction of a second, with every heartbeat and
    // metrics sample where the intervals put it.
    // First registrations are spread over the agent's first interval, on its clock.
    await eventually("every host registered", async () => {
      await clock.advanceAsync(500);
      return agent.health().details["hostsRegistered"] === hostIds.length ? true : undefined;
    });
    // What the hosts said while registering is not part of the hour.
    await agentBus.flush();
    await raw.flush();
    received.length = 0;
    const startMs = clock.nowMs();
    for (const hostId of hostIds) {
      await docs.put(`${agentId}.${hostId}.0`, {
        hostId,
        generation: 1,
        epoch: 1,
        stateId: "state-sim",
        chunkIndex: 0,
        chunkCount: 1,
        vms: [
          {
            vmId: `vm-${hostId}`,
            incarnation: "i1",
            spec: { vcpus: 2, memoryMib: 2_048, bootVolume: "vol-boot" },
            powerState: v1.PowerState.POWER_STATE_ON,
            generation: 1,
            bootVolume: { volumeId: "vol-boot", sanNodeId: "san-1" },
          },
        ],
      });
    }
    const beatsBeforeHour = await eventually("the immediate report of every host", () => {
      const beats = received.filter((m) => kindOf(m.subject) === "heartbeat").map((m) => v1.HostHeartbeat.decode(m.data));
      return hostIds.every((h) => beats.some((b) => b.hostId === h && b.realizedGeneration === 1)) ? beats : undefined;
    });
    // The clock stood still: one beat per host, each the report of its document.
    expect(clock.nowMs()).toBe(startMs);
    expect(beatsBeforeHour.map((b) => b.hostId).sort()).toEqual([...hostIds].sort());
    expect(beatsBeforeHour.every((b) => b.sentAtMs === startMs)).toBe(true);

    const wallStartMs = performance.now();
    for (let elapsedMs = 0; elapsedMs < hourMs; elapsedMs += stepMs) {
      clock.advance(stepMs);
      // Heartbeats are published synchronously as the timers fire; yielding lets
      // the connection write them and the VMs' boot reads come back.
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
    const wallMs = performance.now() - wallStartMs;
    expect(clock.nowMs()).toBe(startMs + hourMs);

    const inHour = (atMs: number): boolean => atMs > startMs && atMs <= startMs + hourMs;
    const beatsPerHost = hourMs / heartbeatIntervalMs;
    const metricsPerHost = hourMs / metricsIntervalMs;
    await agentBus.flush();
    await eventually("every heartbeat and metrics sample of the hour", () =>
      received.length >= beatsBeforeHour.length + hostIds.length * (beatsPerHost + metricsPerHost) ? true : undefined,
    );
    const beats = new Map<string, v1.HostHeartbeat[]>(hostIds.map((h) => [h, []]));
    const metrics = new Map<string, v1.HostMetrics[]>(hostIds.map((h) => [h, []]));
    const statuses: v1.VmStatus[] = [];
    for (const m of received) {
      if (kindOf(m.subject) === "heartbeat") beats.get(hostOf(m.subject))!.push(v1.HostHeartbeat.decode(m.data));
      if (kindOf(m.subject) === "metrics") metrics.get(hostOf(m.subject))!.push(v1.HostMetrics.decode(m.data));
      if (kindOf(m.subject) === "vm") statuses.push(v1.VmStatus.decode(m.data));
    }

    const offsets = new Set<number>();
    for (const hostId of hostIds) {
      const mine = beats.get(hostId)!.filter((b) => inHour(b.sentAtMs));
      expect(mine, hostId).toHaveLength(beatsPerHost);
      for (let i = 1; i < mine.length; i++) {
        expect(mine[i]!.seq).toBe(mine[i - 1]!.seq + 1);
        expect(mine[i]!.sentAtMs - mine[i - 1]!.sentAtMs).toBe(heartbeatIntervalMs);
      }
      offsets.add((mine[0]!.sentAtMs - startMs) % heartbeatIntervalMs);
      expect(mine.at(-1)).toMatchObject({ realizedGeneration: 1, vmCount: 1 });

      const samples = metrics.get(hostId)!.filter((m) => inHour(m.sampledAtMs));
      expect(samples, hostId).toHaveLength(metricsPerHost);
      for (let i = 1; i < samples.length; i++) expect(samples[i]!.sampledAtMs - samples[i - 1]!.sampledAtMs).toBe(metricsIntervalMs);
      expect(samples.at(-1)).toMatchObject({ vmCount: 1, vmsRunning: 1, vcpusRunning: 2, memoryMibRunning: 2_048, realizedGeneration: 1 });

      const vm = statuses.filter((s) => s.vmId === `vm-${hostId}`).map((s) => v1.VmState[s.state]);
      expect(vm).toEqual(["VM_STATE_DEFINED", "VM_STATE_STARTING", "VM_STATE_RUNNING"]);
    }
    // Ten slots a tenth of an interval apart: the hosts' beats spread over the interval.
    expect([...offsets].sort((a, b) => a - b)).toEqual(Array.from({ length: 10 }, (_, i) => i * 100));
    // Decoupled from wall time, not a speed figure: an hour that waited on real
    // timers anywhere would take an hour. Alone it takes about half a second;
    // the bound leaves room for a CI machine running other files beside it.
    expect(wallMs, `advancing the hour took ${Math.round(wallMs)} ms of wall time`).toBeLessThan(15_000);
  });
});
