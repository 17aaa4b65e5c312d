// Proves the host agent in-process against a real nats-server, with the
// controller and the SAN nodes played by test peers: the test writes each
// host's document into the docs bucket as the controller does, serves
// RegisterHost and ReadBlocks, and watches what the hosts publish. Covered:
// registration per host; documents applied whole, only forward and only by
// the host they name; the VM lifecycle (boot from the node the document
// names, stop, failures with reasons, removal, incarnations); deposed
// controllers; the heartbeat digest; the VM limit; bad documents and bad
// requests refused without effect; re-registration and eviction; hosts that
// run on without a controller and come back after a restart; security
// groups' documents expanded, reported, and held back while the vswitch has
// lost its controller; and fault rules that cut one host of a multi-host
// agent.

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect, type NatsConnection } from "nats";
import { simdc } from "@simdc/proto";
import {
  addFaultRule,
  clearFaultRules,
  endpoint,
  hostAgentService,
  hostScope,
  hostService,
  sanNodeService,
  type Bucket,
  type Bus,
} from "@simdc/bus";
import { createLogger, failedPrecondition, memberDigest, notFound, Rng, unavailable, wallClock } from "@simdc/common";
import { connectTestBus, eventually, startTestNats, type TestNats } from "@simdc/testkit";
import { HostAgent, bootAttemptsMax, hypervisorSettingsOf, memoryMibPerVmMax, vcpusPerVmMax, vmsPerHostMax, type AgentConfig } from "./mod.js";

import v1 = simdc.v1;

const { VM_STATE_DEFINED, VM_STATE_STARTING, VM_STATE_RUNNING, VM_STATE_STOPPING, VM_STATE_STOPPED, VM_STATE_FAILED, VM_STATE_REMOVED } =
  v1.VmState;
const { POWER_STATE_ON, POWER_STATE_OFF } = v1.PowerState;

/** What the stand-in controller answers in every registration reply. */
const heartbeatIntervalMs = 200;
const metricsIntervalMs = 400;
const bootBlocks = 8;
const stateId = "state-1";
/** The lease epoch of the stand-in controller's documents. */
const epoch = 3;

type Service = Awaited<ReturnType<Bus["serve"]>>;

/** Everything a stage's hosts published on `<prefix>.evt.host.>`, in arrival order (one subscription, so in publish order). */
type Seen =
  | { kind: "heartbeat"; hostId: string; beat: v1.HostHeartbeat; bytes: number }
  | { kind: "vm"; hostId: string; status: v1.VmStatus }
  | { kind: "metrics"; hostId: string; metrics: v1.HostMetrics }
  | { kind: "refused"; hostId: string; event: v1.Event };

interface VmOptions {
  power?: "on" | "off";
  generation?: number;
  incarnation?: string;
  volume?: string;
  /** The SAN node the document names for the boot volume; "" when the controller does not know the volume. */
  node?: string;
}

/** One VM as the controller puts it into a document. */
function desiredVm(vmId: string, options: VmOptions = {}): v1.DesiredVm.$Properties {
  const volume = options.volume ?? "vol-boot";
  return {
    vmId,
    incarnation: options.incarnation ?? `${vmId}-i1`,
    spec: { vcpus: 2, memoryMib: 1024, bootVolume: volume },
    powerState: options.power === "off" ? POWER_STATE_OFF : POWER_STATE_ON,
    generation: options.generation ?? 1,
    bootVolume: { volumeId: volume, sanNodeId: options.node ?? "san-1" },
  };
}

function agentConfig(agentId: string, hostIds: string[], testFaults = false, inactivityProbeMs = 5_000): AgentConfig {
  return {
    testFaults,
    agentId,
    hostIds,
    capacity: { pcpus: 16, memoryMib: 65_536, nics: 2 },
    hypervisor: hypervisorSettingsOf(16, 65_536),
    // A boot retries an unreachable node for 600 ms here (30 s by default).
    timing: { bootBlocks, bootTimeMs: 100, stopTimeMs: 50, bootRetryMs: 600 },
    // The stand-in controller answers heartbeatIntervalMs; this is only the start value.
    heartbeatIntervalMs: 1_000,
    failMode: "secure",
    inactivityProbeMs,
    uplinks: [{ name: "nic0", bandwidthMbps: 10_000, queueBytes: 1 << 20, latencyMs: 0.05 }],
  };
}

/**
 * One simulated datacenter under its own prefix: a stand-in controller
 * (RegisterHost, and the documents it writes), stand-in SAN nodes
 * (ReadBlocks), a client, and a record of everything the hosts publish.
 */
class Stage {
  readonly registrations: { subjectId: string; request: v1.RegisterHostRequest }[] = [];
  /** Hosts the controller refuses with FAILED_PRECONDITION: another live agent holds their id. */
  readonly heldElsewhere = new Set<string>();
  readonly reads: { nodeId: string; volumeId: string; lba: number; blockCount: number; atMs: number }[] = [];
  readonly seen: Seen[] = [];
  /** ReadBlocks of san-flaky fail UNAVAILABLE this many more times. */
  flakyFailuresLeft = 2;
  /** Reads of vol-slow wait for this gate. */
  slowGate = gate();
  /** Every document generation written so far; the next is one higher (the controller's nb_cfg). */
  generation = 0;
  docs!: Bucket<v1.HostDocument>;
  peers!: Bus;
  client!: Bus;
  private raw!: NatsConnection;
  private controller: Service | null = null;
  private writerEpoch = epoch;
  private readonly agents: { agent: HostAgent; bus: Bus }[] = [];

  private constructor(
    readonly nats: TestNats,
    readonly prefix: string,
  ) {}

  static async open(nats: TestNats, prefix: string, options: { followFaultRules?: boolean } = {}): Promise<Stage> {
    const stage = new Stage(nats, prefix);
    stage.peers = await connectTestBus(nats.url, { prefix, processId: `${prefix}-peers` });
    if (options.followFaultRules) await stage.peers.followFaultRules();
    stage.client = await connectTestBus(nats.url, { prefix, processId: `${prefix}-client` });
    stage.raw = await connect({ servers: nats.url });
    stage.raw.subscribe(`${prefix}.evt.host.>`, { callback: (_err, msg) => stage.record(msg.subject, msg.data) });
    stage.raw.subscribe(`${prefix}.evt.agent.>`, { callback: (_err, msg) => stage.record(msg.subject, msg.data) });
    await stage.raw.flush();
    await stage.serveController();
    const sanVolumes: Record<string, string[]> = { "san-1": ["vol-boot", "vol-slow"], "san-flaky": ["vol-flaky"], "san-busy": ["vol-busy"] };
    for (const [nodeId, volumes] of Object.entries(sanVolumes)) {
      await stage.peers.serve({ role: "san-node", scopeId: nodeId, description: "stand-in SAN node" }, [
        endpoint(sanNodeService.ReadBlocks, async (req) => {
          stage.reads.push({ nodeId, volumeId: req.volumeId, lba: req.lba, blockCount: req.blockCount, atMs: Date.now() });
          if (nodeId === "san-busy") throw unavailable("disk offline");
          if (nodeId === "san-flaky" && stage.flakyFailuresLeft > 0) {
            stage.flakyFailuresLeft -= 1;
            throw unavailable("disk busy");
          }
          if (!volumes.includes(req.volumeId)) throw notFound(`volume ${req.volumeId} not found`);
          if (req.volumeId === "vol-slow") await stage.slowGate.promise;
          return { data: new Uint8Array(req.blockCount * 4096) };
        }),
      ]);
    }
    // The controller creates the bucket; agents only bind to it.
    stage.docs = await stage.peers.bucket("docs", v1.HostDocument, { fenced: { epochOf: () => stage.writerEpoch } });
    await stage.peers.flush();
    return stage;
  }

  private record(subject: string, data: Uint8Array): void {
    const hostId = subject.split(".").at(-2)!;
    switch (subject.split(".").at(-1)) {
      case "heartbeat":
        this.seen.push({ kind: "heartbeat", hostId, beat: v1.HostHeartbeat.decode(data), bytes: data.length });
        return;
      case "heartbeats":
        // An agent's batch: each beat as if it had come alone.
        for (const beat of v1.HostHeartbeats.decode(data).beats as v1.HostHeartbeat[]) {
          this.seen.push({ kind: "heartbeat", hostId: beat.hostId, beat, bytes: v1.HostHeartbeat.encode(beat).finish().length });
        }
        return;
      case "vm":
        this.seen.push({ kind: "vm", hostId, status: v1.VmStatus.decode(data) });
        return;
      case "metrics":
        this.seen.push({ kind: "metrics", hostId, metrics: v1.HostMetrics.decode(data) });
        return;
      case "refused":
        this.seen.push({ kind: "refused", hostId, event: v1.Event.decode(data) });
        return;
    }
  }

  /** Serves RegisterHost unless it is served already. */
  async serveController(): Promise<void> {
    if (this.controller) return;
    this.controller = await this.peers.serve({ role: "controller", description: "stand-in controller" }, [
      endpoint(hostService.RegisterHost, (req, msg) => {
        // The controller takes the id from the subject.
        const subjectId = msg.subject.split(".").at(-1)!;
        this.registrations.push({ subjectId, request: req });
        if (this.heldElsewhere.has(subjectId)) throw failedPrecondition(`host ${subjectId} is held by another live agent`);
        return { host: { id: subjectId, agentId: req.agentId }, heartbeatIntervalMs, heartbeatMissesMax: 3, metricsIntervalMs };
      }),
    ]);
    await this.peers.flush();
  }

  async stopController(): Promise<void> {
    await this.controller?.stop();
    this.controller = null;
  }

  async startAgent(
    agentId: string,
    hostIds: string[],
    options: { vmsPerHostMax?: number; bus?: Bus; followFaultRules?: boolean; testFaults?: boolean; inactivityProbeMs?: number } = {},
  ): Promise<{ agent: HostAgent; bus: Bus }> {
    const bus = options.bus ?? (await connectTestBus(this.nats.url, { prefix: this.prefix, processId: agentId }));
    if (options.followFaultRules) await bus.followFaultRules();
    const logger = createLogger({ service: "host-agent", id: agentId, level: process.env["LOG_LEVEL"] ?? "silent" });
    const agent = await HostAgent.start({
      bus,
      logger,
      clock: wallClock,
      rng: new Rng(7, agentId),
      config: agentConfig(agentId, hostIds, options.testFaults, options.inactivityProbeMs),
      ...(options.vmsPerHostMax !== undefined ? { vmsPerHostMax: options.vmsPerHostMax } : {}),
    });
    this.agents.push({ agent, bus });
    return { agent, bus };
  }

  /** Writes one chunk of a host's document under `<agentId>.<hostId>.<chunkIndex>`, as the controller does. */
  async writeChunk(agentId: string, doc: v1.HostDocument.$Properties & { hostId: string; chunkIndex: number }): Promise<void> {
    const full = { epoch, stateId, chunkCount: 1, ...doc };
    // The record's writer epoch is the document's: one controller wrote both.
    this.writerEpoch = full.epoch ?? epoch;
    await this.docs.put(`${agentId}.${doc.hostId}.${doc.chunkIndex}`, full);
  }

  /** Writes a host's whole document as one chunk under the next generation (or the one given); returns the generation. */
  async writeDocument(
    agentId: string,
    hostId: string,
    vms: v1.DesiredVm.$Properties[],
    options: { generation?: number; epoch?: number; stateId?: string } = {},
  ): Promise<number> {
    const generation = options.generation ?? ++this.generation;
    await this.writeChunk(agentId, { hostId, chunkIndex: 0, chunkCount: 1, generation, vms, ...withoutUndefined({ epoch: options.epoch, stateId: options.stateId }) });
    return generation;
  }

  /** Writes raw bytes under a document key, past the bucket's encoding (what a broken writer would leave). */
  async writeRaw(key: string, data: Uint8Array): Promise<void> {
    const kv = await this.raw.jetstream().views.kv(`${this.prefix}-docs`, { bindOnly: true });
    await kv.put(key, data);
  }

  hostState(agentId: string, hostId: string, timeoutMs?: number): Promise<v1.GetHostStateResponse> {
    return this.client.call(hostAgentService.GetHostState, {}, { scopeId: hostScope(agentId, hostId), ...(timeoutMs ? { timeoutMs } : {}) });
  }

  /**
   * Waits until the host reports `generation` as realized in a heartbeat
   * (the agent beats at once after realizing), looking from index `mark` of `seen`.
   */
  async waitRealized(hostId: string, generation: number, mark = 0): Promise<v1.HostHeartbeat> {
    return eventually(`${hostId} realized generation ${generation}`, () => {
      for (const s of this.seen.slice(mark)) if (s.kind === "heartbeat" && s.hostId === hostId && s.beat.realizedGeneration === generation) return s.beat;
      return undefined;
    });
  }

  /** The first heartbeat of `hostId` recorded at or after index `mark` of `seen`, with its size on the wire. */
  async heartbeatAfter(hostId: string, mark: number): Promise<{ beat: v1.HostHeartbeat; bytes: number }> {
    return eventually(`a heartbeat of ${hostId}`, () => {
      for (const s of this.seen.slice(mark)) if (s.kind === "heartbeat" && s.hostId === hostId) return { beat: s.beat, bytes: s.bytes };
      return undefined;
    });
  }

  heartbeats(hostId: string): v1.HostHeartbeat[] {
    return this.seen.flatMap((s) => (s.kind === "heartbeat" && s.hostId === hostId ? [s.beat] : []));
  }

  statuses(vmId: string): v1.VmStatus[] {
    return this.seen.flatMap((s) => (s.kind === "vm" && s.status.vmId === vmId ? [s.status] : []));
  }

  /** The (state, observedGeneration) pairs published for a VM so far. */
  trail(vmId: string): [v1.VmState, number][] {
    return this.statuses(vmId).map((s) => [s.state, s.observedGeneration]);
  }

  async waitForState(vmId: string, state: v1.VmState, options: { incarnation?: string; generation?: number } = {}): Promise<v1.VmStatus> {
    return eventually(`${vmId} in ${v1.VmState[state]}`, () =>
      this.statuses(vmId).find(
        (s) =>
          s.state === state &&
          (options.incarnation === undefined || s.incarnation === options.incarnation) &&
          (options.generation === undefined || s.observedGeneration === options.generation),
      ),
    );
  }

  /** Resolves once the agent has handled every document written before this call (its watch sees writes in order). */
  async documentsHandled(agentId: string, syncHostId: string): Promise<void> {
    const generation = await this.writeDocument(agentId, syncHostId, []);
    await this.waitRealized(syncHostId, generation);
  }

  async close(): Promise<void> {
    for (const { agent, bus } of this.agents) {
      await agent.stop();
      await bus.close();
    }
    this.slowGate.release();
    await this.client?.close();
    await this.peers?.close();
    await this.raw?.close();
  }
}

function gate(): { promise: Promise<void>; release(): void } {
  let release!: () => void;
  const promise = new Promise<void>((resolve) => (release = resolve));
  return { promise, release };
}

function withoutUndefined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** A host's VMs as GetHostState reports them, sorted by id. */
function vmsOf(state: v1.GetHostStateResponse): { vmId: string; incarnation: string; state: v1.VmState; observedGeneration: number }[] {
  return state.vms
    .map((r) => ({
      vmId: r.status?.vmId ?? "",
      incarnation: r.status?.incarnation ?? "",
      state: r.status?.state ?? VM_STATE_DEFINED,
      observedGeneration: r.status?.observedGeneration ?? 0,
    }))
    .sort((a, b) => a.vmId.localeCompare(b.vmId));
}

/** The count and digest of a host's VMs as its status events say: the last status of each VM, REMOVED ones left out. */
function digestOfStatuses(statuses: Iterable<v1.VmStatus>): { vmCount: number; vmDigest: number } {
  const last = new Map<string, v1.VmStatus>();
  for (const s of statuses) last.set(s.vmId, s);
  let vmCount = 0;
  let vmDigest = 0;
  for (const s of last.values()) {
    if (s.state === VM_STATE_REMOVED) continue;
    vmCount += 1;
    vmDigest = (vmDigest + memberDigest(s.vmId, s.incarnation, s.state, s.observedGeneration)) % 2 ** 32;
  }
  return { vmCount, vmDigest };
}

let nats: TestNats;

beforeAll(async () => {
  nats = await startTestNats();
});

afterAll(async () => {
  await nats?.dispose();
});

describe("one agent, many hosts", () => {
  const agentId = "agent-t";
  /** One host per concern, so each test reads a host's whole story. */
  const hostIds = [
    "host-boot",
    "host-stop",
    "host-same",
    "host-turn",
    "host-missing",
    "host-unreachable",
    "host-flaky",
    "host-removal",
    "host-deleted",
    "host-own-1",
    "host-own-2",
    "host-chunks",
    "host-incarnation",
    "host-deposed",
    "host-digest",
    "host-bad",
    "host-rereg",
    "host-evicted",
    "host-sync",
  ];
  let stage: Stage;
  let agent: HostAgent;
  const write = (hostId: string, vms: v1.DesiredVm.$Properties[], options?: { generation?: number; epoch?: number; stateId?: string }): Promise<number> =>
    stage.writeDocument(agentId, hostId, vms, options);
  const hostState = (hostId: string): Promise<v1.GetHostStateResponse> => stage.hostState(agentId, hostId);
  const documentsHandled = (): Promise<void> => stage.documentsHandled(agentId, "host-sync");

  beforeAll(async () => {
    stage = await Stage.open(nats, "ha");
    ({ agent } = await stage.startAgent(agentId, hostIds));
  });

  afterAll(async () => {
    await stage?.close();
  });

  describe("registration", () => {
    it("registration: each host registers once, under its own id, with its capacity and a boot id of its own", async () => {
      // Every host is its own machine to the controller: one registration
      // each, on its own subject, with its own boot id, which its heartbeats
      // carry too; and it does not register again while it runs.
      await eventually("every host registered", () => (new Set(stage.registrations.map((r) => r.subjectId)).size === hostIds.length ? true : undefined));
      // Three more heartbeats of every host: time enough for any second registration to show.
      const beatsBefore = new Map(hostIds.map((h) => [h, stage.heartbeats(h).length]));
      await eventually("three more heartbeats of every host", () =>
        hostIds.every((h) => stage.heartbeats(h).length >= beatsBefore.get(h)! + 3) ? true : undefined,
      );
      expect(stage.registrations.map((r) => r.subjectId).sort()).toEqual([...hostIds].sort());
      for (const { subjectId, request } of stage.registrations) {
        expect(request.hostId).toBe(subjectId);
        expect(request.agentId).toBe(agentId);
        expect(request.capacity).toMatchObject({ pcpus: 16, memoryMib: 65_536, nics: 2, vmsMax: vmsPerHostMax });
        expect(request.bootId).toMatch(/^[0-9a-f-]{36}$/);
        const beats = stage.heartbeats(subjectId);
        expect(beats.length).toBeGreaterThan(0);
        expect(beats.every((b) => b.bootId === request.bootId && b.agentId === agentId && b.hostId === subjectId)).toBe(true);
      }
      expect(new Set(stage.registrations.map((r) => r.request.bootId)).size).toBe(hostIds.length);
      expect(agent.health().details).toMatchObject({ hosts: hostIds.length, hostsRegistered: hostIds.length });
    });

    it("registration: every host adopts the heartbeat and metrics intervals from the reply", async () => {
      // Configured at 1000 ms; the stand-in controller answered 200 ms for
      // heartbeats and 400 ms for metrics. No document was written yet, so
      // every heartbeat so far is a scheduled one.
      for (const hostId of ["host-boot", "host-sync", "host-evicted"]) {
        const beats = await eventually(`12 heartbeats of ${hostId}`, () => {
          const all = stage.heartbeats(hostId);
          return all.length >= 12 ? all : undefined;
        });
        const recent = beats.slice(-10);
        for (let i = 1; i < recent.length; i++) expect(recent[i]!.seq).toBe(recent[i - 1]!.seq + 1);
        const gaps = recent.slice(1).map((b, i) => b.sentAtMs - recent[i]!.sentAtMs).sort((a, b) => a - b);
        expect(gaps[Math.floor(gaps.length / 2)]).toBeGreaterThanOrEqual(150);
        expect(gaps[Math.floor(gaps.length / 2)]).toBeLessThanOrEqual(260);
        const metrics = await eventually(`5 metrics of ${hostId}`, () => {
          const all = stage.seen.flatMap((s) => (s.kind === "metrics" && s.hostId === hostId ? [s.metrics] : []));
          return all.length >= 5 ? all : undefined;
        });
        const lastMetrics = metrics.slice(-5);
        const metricGaps = lastMetrics.slice(1).map((m, i) => m.sampledAtMs - lastMetrics[i]!.sampledAtMs).sort((a, b) => a - b);
        expect(metricGaps[Math.floor(metricGaps.length / 2)]).toBeGreaterThanOrEqual(350);
        expect(metricGaps[Math.floor(metricGaps.length / 2)]).toBeLessThanOrEqual(460);
      }
    });
  });

  describe("documents", () => {
    it("documents: a multi-chunk document is applied only once every chunk of one generation is there, as one step", async () => {
      // A host must never run half a document: chunks of a newer generation
      // wait (beside a stale chunk of the older one) until the last arrives;
      // then the VMs it drops and the VMs it adds change together, and the
      // heartbeat that follows at once reports the whole of it.
      const first = await write("host-chunks", [desiredVm("vm-c-old", { power: "off" })]);
      await stage.waitForState("vm-c-old", VM_STATE_STOPPED);
      const second = ++stage.generation;
      const chunk = (chunkIndex: number, vmId: string, generation = second): Promise<void> =>
        stage.writeChunk(agentId, { hostId: "host-chunks", generation, chunkIndex, chunkCount: 3, vms: [desiredVm(vmId, { power: "off" })] });
      await chunk(2, "vm-c-stale", first);
      await chunk(0, "vm-c1");
      await chunk(1, "vm-c2");
      await documentsHandled();
      for (const vmId of ["vm-c1", "vm-c2", "vm-c-stale"]) expect(stage.statuses(vmId)).toEqual([]);
      expect(stage.trail("vm-c-old").at(-1)).toEqual([VM_STATE_STOPPED, 1]);
      expect((await hostState("host-chunks")).realizedGeneration).toBe(first);
      expect(stage.heartbeats("host-chunks").every((b) => b.realizedGeneration <= first)).toBe(true);

      const mark = stage.seen.length;
      await chunk(2, "vm-c3");
      await stage.waitRealized("host-chunks", second);
      // Statuses and heartbeats only (a metrics sample may fall anywhere), leaving out beats that still report the first document.
      const after = stage.seen
        .slice(mark)
        .filter((s) => s.hostId === "host-chunks" && (s.kind === "vm" || (s.kind === "heartbeat" && s.beat.realizedGeneration !== first)));
      // The step's four status changes come together, then the heartbeat that reports it.
      const step = after.slice(0, 5);
      expect(
        step
          .slice(0, 4)
          .map((s) => (s.kind === "vm" ? `${s.status.vmId}:${v1.VmState[s.status.state]}` : s.kind))
          .sort(),
      ).toEqual(["vm-c-old:VM_STATE_REMOVED", "vm-c1:VM_STATE_DEFINED", "vm-c2:VM_STATE_DEFINED", "vm-c3:VM_STATE_DEFINED"]);
      expect(step[4]).toMatchObject({ kind: "heartbeat", beat: { realizedGeneration: second, vmCount: 3 } });
      for (const vmId of ["vm-c1", "vm-c2", "vm-c3"]) await stage.waitForState(vmId, VM_STATE_STOPPED);
      expect(vmsOf(await hostState("host-chunks")).map((v) => v.vmId)).toEqual(["vm-c1", "vm-c2", "vm-c3"]);
      expect(stage.statuses("vm-c-stale")).toEqual([]);
    });

    it("documents: a deleted chunk is no instruction, the host runs its last document", async () => {
      // The controller deletes chunks it no longer needs (and a KV purge may
      // delete any); a host that took a deletion for "run nothing" would kill
      // its VMs on a storage hiccup.
      const generation = await write("host-deleted", [desiredVm("vm-del-1"), desiredVm("vm-del-2", { power: "off" })]);
      await stage.waitForState("vm-del-1", VM_STATE_RUNNING);
      await stage.waitForState("vm-del-2", VM_STATE_STOPPED);
      const events = stage.statuses("vm-del-1").length + stage.statuses("vm-del-2").length;
      await stage.docs.delete(`${agentId}.host-deleted.0`);
      await documentsHandled();
      expect(stage.statuses("vm-del-1").length + stage.statuses("vm-del-2").length).toBe(events);
      const state = await hostState("host-deleted");
      expect(state.realizedGeneration).toBe(generation);
      expect(vmsOf(state)).toEqual([
        { vmId: "vm-del-1", incarnation: "vm-del-1-i1", state: VM_STATE_RUNNING, observedGeneration: 1 },
        { vmId: "vm-del-2", incarnation: "vm-del-2-i1", state: VM_STATE_STOPPED, observedGeneration: 1 },
      ]);
    });

    it("documents: a document of the same or an older generation, or a VM of the same or an older generation, changes nothing", async () => {
      // Generations only move forward: a document rewritten at its generation
      // or an older one left behind is not applied again, and a newer
      // document that carries a VM at a generation the host has realized
      // does not move that VM.
      const g1 = await write("host-same", [desiredVm("vm-same")]);
      await stage.waitForState("vm-same", VM_STATE_RUNNING, { generation: 1 });
      const g2 = await write("host-same", [desiredVm("vm-same", { generation: 2 })]);
      await stage.waitForState("vm-same", VM_STATE_RUNNING, { generation: 2 });
      const events = stage.statuses("vm-same").length;
      const reads = stage.reads.length;

      await write("host-same", [desiredVm("vm-same", { power: "off", generation: 3 })], { generation: g2 });
      await write("host-same", [desiredVm("vm-same", { power: "off", generation: 3 })], { generation: g1 });
      await documentsHandled();
      expect((await hostState("host-same")).realizedGeneration).toBe(g2);
      const g3 = await write("host-same", [desiredVm("vm-same", { power: "off", generation: 2 })]);
      const g4 = await write("host-same", [desiredVm("vm-same", { power: "off", generation: 1 })]);
      await stage.waitRealized("host-same", g4);
      await documentsHandled();

      expect(g3).toBeLessThan(g4);
      expect(stage.statuses("vm-same")).toHaveLength(events);
      expect(stage.reads).toHaveLength(reads);
      const state = await hostState("host-same");
      expect(state.realizedGeneration).toBe(g4);
      expect(vmsOf(state)).toEqual([{ vmId: "vm-same", incarnation: "vm-same-i1", state: VM_STATE_RUNNING, observedGeneration: 2 }]);
      expect(state.vms[0]?.desired).toMatchObject({ powerState: POWER_STATE_ON, generation: 2 });
    });

    it("documents: each host holds only its own VMs, and documents of other hosts or agents reach none of them", async () => {
      // One process, many machines: a host realizes the document under its
      // own key only, reports its VMs under its own subject, and a document
      // keyed to another agent or to a host this agent does not run changes
      // nothing here.
      await write("host-own-1", [desiredVm("vm-own-1", { power: "off" })]);
      await write("host-own-2", [desiredVm("vm-own-2", { power: "off" }), desiredVm("vm-own-3", { power: "off" })]);
      for (const vmId of ["vm-own-1", "vm-own-2", "vm-own-3"]) await stage.waitForState(vmId, VM_STATE_STOPPED);
      const refused = agent.documentsRefused;
      await stage.writeDocument("agent-other", "host-own-1", [desiredVm("vm-intruder", { power: "off" })]);
      await stage.writeDocument(agentId, "host-elsewhere", [desiredVm("vm-intruder", { power: "off" })]);
      await documentsHandled();

      expect(vmsOf(await hostState("host-own-1")).map((v) => v.vmId)).toEqual(["vm-own-1"]);
      expect(vmsOf(await hostState("host-own-2")).map((v) => v.vmId)).toEqual(["vm-own-2", "vm-own-3"]);
      expect(stage.statuses("vm-intruder")).toEqual([]);
      expect(agent.documentsRefused).toBe(refused);
      // Every status so far names the host whose subject it came on.
      for (const s of stage.seen) if (s.kind === "vm") expect(s.status.hostId).toBe(s.hostId);
      expect(stage.statuses("vm-own-1").every((s) => s.hostId === "host-own-1")).toBe(true);
      expect(stage.statuses("vm-own-2").every((s) => s.hostId === "host-own-2")).toBe(true);
    });
  });

  describe("vm lifecycle", () => {
    it("vm lifecycle: a VM that is ON goes STARTING then RUNNING after reading its boot volume from the node the document names", async () => {
      // The host boots without the controller: the document says which SAN
      // node holds the boot volume, and the host reads its first blocks there.
      const generation = await write("host-boot", [desiredVm("vm-on")]);
      await stage.waitForState("vm-on", VM_STATE_RUNNING);
      expect(stage.trail("vm-on")).toEqual([
        [VM_STATE_DEFINED, 0],
        [VM_STATE_STARTING, 0],
        [VM_STATE_RUNNING, 1],
      ]);
      expect(stage.statuses("vm-on").every((s) => s.hostId === "host-boot" && s.incarnation === "vm-on-i1" && s.reason === null)).toBe(true);
      const seqs = stage.statuses("vm-on").map((s) => s.reportSeq);
      expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
      expect(stage.reads.filter((r) => r.volumeId === "vol-boot" && r.nodeId !== "san-1")).toEqual([]);
      expect(stage.reads).toContainEqual(expect.objectContaining({ nodeId: "san-1", volumeId: "vol-boot", lba: 0, blockCount: bootBlocks }));
      const state = await hostState("host-boot");
      expect(state).toMatchObject({ hostId: "host-boot", realizedGeneration: generation, documentEpoch: epoch, stateId });
      expect(vmsOf(state)).toEqual([{ vmId: "vm-on", incarnation: "vm-on-i1", state: VM_STATE_RUNNING, observedGeneration: 1 }]);
      expect(state.vms[0]?.desired).toMatchObject({ vmId: "vm-on", generation: 1, powerState: POWER_STATE_ON });
    });

    it("vm lifecycle: OFF with a newer generation goes STOPPING then STOPPED; a VM created OFF is STOPPED without booting", async () => {
      // Stopping realizes the new generation only once the VM is down; a VM
      // that was never on has nothing to stop and reads nothing.
      await write("host-stop", [desiredVm("vm-off")]);
      await stage.waitForState("vm-off", VM_STATE_RUNNING);
      await write("host-stop", [desiredVm("vm-off", { power: "off", generation: 2 }), desiredVm("vm-cold", { power: "off", volume: "vol-cold" })]);
      await stage.waitForState("vm-off", VM_STATE_STOPPED);
      expect(stage.trail("vm-off")).toEqual([
        [VM_STATE_DEFINED, 0],
        [VM_STATE_STARTING, 0],
        [VM_STATE_RUNNING, 1],
        [VM_STATE_STOPPING, 1],
        [VM_STATE_STOPPED, 2],
      ]);
      await stage.waitForState("vm-cold", VM_STATE_STOPPED);
      expect(stage.trail("vm-cold")).toEqual([
        [VM_STATE_DEFINED, 0],
        [VM_STATE_STOPPED, 1],
      ]);
      expect(stage.reads.some((r) => r.volumeId === "vol-cold")).toBe(false);
    });

    it("vm lifecycle: a newer generation that arrives during boot is driven to after the boot step", async () => {
      // The host takes a newer document while a VM boots (its boot read is
      // held by the SAN node); the driver finishes the boot, then stops.
      await write("host-turn", [desiredVm("vm-turn", { volume: "vol-slow" })]);
      await stage.waitForState("vm-turn", VM_STATE_STARTING);
      await eventually("the boot read of vm-turn", () => (stage.reads.some((r) => r.volumeId === "vol-slow") ? true : undefined));
      const generation = await write("host-turn", [desiredVm("vm-turn", { power: "off", generation: 2, volume: "vol-slow" })]);
      await stage.waitRealized("host-turn", generation);
      const state = await hostState("host-turn");
      expect(vmsOf(state)).toEqual([{ vmId: "vm-turn", incarnation: "vm-turn-i1", state: VM_STATE_STARTING, observedGeneration: 0 }]);
      expect(state.vms[0]?.desired).toMatchObject({ powerState: POWER_STATE_OFF, generation: 2 });
      stage.slowGate.release();
      await stage.waitForState("vm-turn", VM_STATE_STOPPED);
      expect(stage.trail("vm-turn")).toEqual([
        [VM_STATE_DEFINED, 0],
        [VM_STATE_STARTING, 0],
        [VM_STATE_RUNNING, 1],
        [VM_STATE_STOPPING, 1],
        [VM_STATE_STOPPED, 2],
      ]);
      expect(stage.reads.filter((r) => r.volumeId === "vol-slow")).toHaveLength(1);
    });

    it("vm lifecycle: a missing boot volume fails the VM with NOT_FOUND naming the volume, and a newer generation boots it", async () => {
      // Two ways a volume is missing: the controller did not know it (no
      // node in the document, so nothing is read), or the node does not hold
      // it. Either way the VM fails for good at that generation and says
      // which volume; a newer generation that names a volume that exists boots.
      await write("host-missing", [desiredVm("vm-nonode", { volume: "vol-nowhere", node: "" }), desiredVm("vm-notheld", { volume: "vol-gone" })]);
      for (const [vmId, volume] of [
        ["vm-nonode", "vol-nowhere"],
        ["vm-notheld", "vol-gone"],
      ] as const) {
        const failed = await stage.waitForState(vmId, VM_STATE_FAILED);
        expect(failed.observedGeneration).toBe(1);
        expect(failed.reason).toMatchObject({ code: v1.ErrorCode.ERROR_CODE_NOT_FOUND, message: `boot volume ${volume} not found` });
        expect(stage.trail(vmId).map(([state]) => state)).toEqual([VM_STATE_DEFINED, VM_STATE_STARTING, VM_STATE_FAILED]);
      }
      expect(stage.reads.some((r) => r.volumeId === "vol-nowhere")).toBe(false);
      // The node said NOT_FOUND: asking again would not help.
      expect(stage.reads.filter((r) => r.volumeId === "vol-gone")).toHaveLength(1);

      await write("host-missing", [desiredVm("vm-nonode", { generation: 2 }), desiredVm("vm-notheld", { volume: "vol-gone" })]);
      const running = await stage.waitForState("vm-nonode", VM_STATE_RUNNING);
      expect(running.observedGeneration).toBe(2);
      expect(running.reason).toBeNull();
    });

    it("vm lifecycle: an unreachable or unavailable SAN node is retried for the retry window, then the VM fails UNAVAILABLE", async () => {
      // A node nobody serves and a node that answers UNAVAILABLE are both
      // worth more tries with backoff, for the boot retry window (and at
      // least bootAttemptsMax tries); then the VM fails with the reason.
      await write("host-unreachable", [desiredVm("vm-dead", { volume: "vol-dead", node: "san-dead" }), desiredVm("vm-busy", { volume: "vol-busy", node: "san-busy" })]);
      const dead = await stage.waitForState("vm-dead", VM_STATE_FAILED);
      expect(dead.reason?.code).toBe(v1.ErrorCode.ERROR_CODE_UNAVAILABLE);
      expect(dead.reason?.message).toMatch(/ReadBlocks/);
      const busy = await stage.waitForState("vm-busy", VM_STATE_FAILED);
      expect(busy.reason).toMatchObject({ code: v1.ErrorCode.ERROR_CODE_UNAVAILABLE, message: "disk offline" });
      const attempts = stage.reads.filter((r) => r.volumeId === "vol-busy");
      expect(attempts.length).toBeGreaterThanOrEqual(bootAttemptsMax);
      // The last try comes once the 600 ms window has passed, and no later than one backoff after it.
      const spanMs = attempts.at(-1)!.atMs - attempts[0]!.atMs;
      expect(spanMs).toBeGreaterThanOrEqual(550);
      expect(spanMs).toBeLessThan(600 + 2_500);
      // Backoff: the first retry waits at least half of 100 ms.
      for (let i = 1; i < attempts.length; i++) expect(attempts[i]!.atMs - attempts[i - 1]!.atMs).toBeGreaterThanOrEqual(45);
      for (const vmId of ["vm-dead", "vm-busy"]) expect(stage.trail(vmId).map(([state]) => state)).toEqual([VM_STATE_DEFINED, VM_STATE_STARTING, VM_STATE_FAILED]);
    });

    it("vm lifecycle: a SAN node that recovers within the retries boots the VM", async () => {
      // Two UNAVAILABLE answers, then data: the third read boots the VM.
      stage.flakyFailuresLeft = 2;
      await write("host-flaky", [desiredVm("vm-flaky", { volume: "vol-flaky", node: "san-flaky" })]);
      await stage.waitForState("vm-flaky", VM_STATE_RUNNING);
      expect(stage.reads.filter((r) => r.volumeId === "vol-flaky")).toHaveLength(3);
      expect(stage.trail("vm-flaky").map(([state]) => state)).toEqual([VM_STATE_DEFINED, VM_STATE_STARTING, VM_STATE_RUNNING]);
    });

    it("vm lifecycle: a VM the document no longer names is removed: REMOVED status, gone from the host's state", async () => {
      // Removal is the document's absence, not a call that can get lost; the
      // VMs that stay are not touched.
      await write("host-removal", [desiredVm("vm-stays"), desiredVm("vm-drop")]);
      await stage.waitForState("vm-stays", VM_STATE_RUNNING);
      await stage.waitForState("vm-drop", VM_STATE_RUNNING);
      const staysEvents = stage.statuses("vm-stays").length;
      const generation = await write("host-removal", [desiredVm("vm-stays")]);
      const removed = await stage.waitForState("vm-drop", VM_STATE_REMOVED);
      expect(removed).toMatchObject({ hostId: "host-removal", incarnation: "vm-drop-i1" });
      expect(stage.trail("vm-drop").map(([state]) => state)).toEqual([VM_STATE_DEFINED, VM_STATE_STARTING, VM_STATE_RUNNING, VM_STATE_REMOVED]);
      const beat = await stage.waitRealized("host-removal", generation);
      expect(beat.vmCount).toBe(1);
      expect(vmsOf(await hostState("host-removal")).map((v) => v.vmId)).toEqual(["vm-stays"]);
      expect(stage.statuses("vm-stays")).toHaveLength(staysEvents);
    });

    it("vm lifecycle: a VM named again with a new incarnation replaces the old one, whatever the generations", async () => {
      // The bug of old: a RemoveVm lost, then a VM created under the same
      // name, and the host took the new VM (generation 1) for an old update
      // of the one it ran (generation 3). Incarnations tell them apart: the
      // old one is REMOVED and the new one boots.
      await write("host-incarnation", [desiredVm("vm-inc", { incarnation: "inc-a" })]);
      await write("host-incarnation", [desiredVm("vm-inc", { incarnation: "inc-a", generation: 3 })]);
      await stage.waitForState("vm-inc", VM_STATE_RUNNING, { incarnation: "inc-a", generation: 3 });
      const reads = stage.reads.length;
      const mark = stage.statuses("vm-inc").length;
      await write("host-incarnation", [desiredVm("vm-inc", { incarnation: "inc-b", generation: 1 })]);
      await stage.waitForState("vm-inc", VM_STATE_RUNNING, { incarnation: "inc-b" });
      expect(stage.statuses("vm-inc").slice(mark).map((s) => `${s.incarnation}:${v1.VmState[s.state]}:${s.observedGeneration}`)).toEqual([
        "inc-a:VM_STATE_REMOVED:3",
        "inc-b:VM_STATE_DEFINED:0",
        "inc-b:VM_STATE_STARTING:0",
        "inc-b:VM_STATE_RUNNING:1",
      ]);
      expect(stage.reads.length).toBe(reads + 1);
      expect(vmsOf(await hostState("host-incarnation"))).toEqual([{ vmId: "vm-inc", incarnation: "inc-b", state: VM_STATE_RUNNING, observedGeneration: 1 }]);
    });
  });

  describe("deposed controller", () => {
    it("deposed controller: a document of an older epoch of the same state is refused, counted, reported and changes nothing; another state is taken whatever its epoch", async () => {
      // A controller that lost its lease may still write; the host knows the
      // newest epoch it applied and refuses the older one, even at a newer
      // generation. A new stateId means the stored state started afresh, so
      // its epochs start afresh too.
      const g1 = await write("host-deposed", [desiredVm("vm-dep")], { epoch: 5 });
      await stage.waitForState("vm-dep", VM_STATE_RUNNING);
      const refused = agent.documentsRefused;
      const events = stage.statuses("vm-dep").length;

      await write("host-deposed", [desiredVm("vm-dep", { power: "off", generation: 2 }), desiredVm("vm-dep-extra")], { epoch: 4 });
      await eventually("the refusal counted", () => (agent.documentsRefused === refused + 1 ? true : undefined));
      const event = await eventually("the refusal event", () =>
        stage.seen.flatMap((s) => (s.kind === "refused" && s.hostId === "host-deposed" ? [s.event] : [])).at(0),
      );
      expect(event).toMatchObject({ kind: v1.EventKind.EVENT_KIND_MESSAGE_REFUSED, objectId: "host-deposed", source: agentId });
      expect(event.message).toMatch(/epoch 4.*epoch 5/);
      expect(agent.health().details).toMatchObject({ documentsRefused: refused + 1 });
      await documentsHandled();
      expect(stage.statuses("vm-dep")).toHaveLength(events);
      expect(stage.statuses("vm-dep-extra")).toEqual([]);
      const state = await hostState("host-deposed");
      expect(state).toMatchObject({ realizedGeneration: g1, documentEpoch: 5, stateId });
      expect(vmsOf(state)).toEqual([{ vmId: "vm-dep", incarnation: "vm-dep-i1", state: VM_STATE_RUNNING, observedGeneration: 1 }]);
      expect(stage.heartbeats("host-deposed").at(-1)).toMatchObject({ realizedGeneration: g1, documentEpoch: 5, stateId });

      await write("host-deposed", [desiredVm("vm-dep-new", { power: "off" })], { epoch: 2, stateId: "state-2", generation: 1 });
      const beat = await eventually("the document of state-2 realized", () =>
        stage.heartbeats("host-deposed").find((b) => b.stateId === "state-2" && b.realizedGeneration === 1),
      );
      expect(beat).toMatchObject({ documentEpoch: 2, vmCount: 1 });
      await stage.waitForState("vm-dep", VM_STATE_REMOVED);
      await stage.waitForState("vm-dep-new", VM_STATE_STOPPED);
      expect(agent.documentsRefused).toBe(refused + 1);
    });
  });

  describe("heartbeat", () => {
    it("heartbeat: vmCount and vmDigest say what the status events said, and the heartbeat does not grow with the VMs", async () => {
      // The controller compares one number with the statuses it heard, so
      // every heartbeat must cover exactly the statuses published before it;
      // and liveness must cost the same with 1 VM as with 200.
      await write("host-digest", [desiredVm("vm-d000")]);
      await stage.waitForState("vm-d000", VM_STATE_RUNNING);
      const one = await stage.heartbeatAfter("host-digest", stage.seen.length);

      const vms = Array.from({ length: 200 }, (_, i) => {
        const vmId = `vm-d${String(i).padStart(3, "0")}`;
        if (i === 199) return desiredVm(vmId, { volume: "vol-unknown", node: "" });
        return desiredVm(vmId, { power: i % 10 === 0 ? "on" : "off" });
      });
      await write("host-digest", vms);
      await eventually("all 200 VMs settled", () => {
        const settled = vms.every((vm) => {
          const state = stage.statuses(vm.vmId ?? "").at(-1)?.state;
          return state === VM_STATE_RUNNING || state === VM_STATE_STOPPED || state === VM_STATE_FAILED;
        });
        return settled ? true : undefined;
      });
      const many = await stage.heartbeatAfter("host-digest", stage.seen.length);
      expect(many.beat.vmCount).toBe(200);

      // Every heartbeat of the host, against the statuses that came before it.
      const statuses: v1.VmStatus[] = [];
      let checked = 0;
      for (const s of stage.seen) {
        if (s.hostId !== "host-digest") continue;
        if (s.kind === "vm") statuses.push(s.status);
        if (s.kind !== "heartbeat") continue;
        expect({ vmCount: s.beat.vmCount, vmDigest: s.beat.vmDigest }, `heartbeat ${s.beat.seq}`).toEqual(digestOfStatuses(statuses));
        checked += 1;
      }
      expect(checked).toBeGreaterThan(5);
      expect(one.beat.vmCount).toBe(1);
      // A few bytes of varint growth (the count, the digest), never a per-VM list.
      expect(many.bytes - one.bytes).toBeLessThanOrEqual(8);
    });
  });

  describe("limits", () => {
    it("limits: a VM beyond the host's limit is FAILED RESOURCE_EXHAUSTED; the VMs within it run, and a VM that takes a dropped one's place is taken", async () => {
      // The limit bounds what a host holds; the document's VMs are taken in
      // order until it is reached. A document that drops one VM and adds
      // another at the limit fits, since the host holds the document's VMs,
      // not the ones it drops.
      const small = await stage.startAgent("agent-small", ["host-small"], { vmsPerHostMax: 2 });
      const writeSmall = (vms: v1.DesiredVm.$Properties[]): Promise<number> => stage.writeDocument("agent-small", "host-small", vms);
      await eventually("host-small registered", () => stage.registrations.find((r) => r.subjectId === "host-small"));
      expect(stage.registrations.find((r) => r.subjectId === "host-small")?.request.capacity?.vmsMax).toBe(2);

      await writeSmall([desiredVm("vm-s1", { power: "off" }), desiredVm("vm-s2", { power: "off" }), desiredVm("vm-s3", { volume: "vol-s3" })]);
      const refused = await stage.waitForState("vm-s3", VM_STATE_FAILED);
      expect(refused.reason?.code).toBe(v1.ErrorCode.ERROR_CODE_RESOURCE_EXHAUSTED);
      expect(refused.reason?.message).toMatch(/2 VMs/);
      expect(stage.reads.some((r) => r.volumeId === "vol-s3")).toBe(false);
      await stage.waitForState("vm-s1", VM_STATE_STOPPED);
      await stage.waitForState("vm-s2", VM_STATE_STOPPED);

      await writeSmall([desiredVm("vm-s1", { power: "off" }), desiredVm("vm-s2", { generation: 2 }), desiredVm("vm-s3", { volume: "vol-s3" })]);
      await stage.waitForState("vm-s2", VM_STATE_RUNNING, { generation: 2 });

      await writeSmall([desiredVm("vm-s1", { power: "off" }), desiredVm("vm-s4")]);
      const s4 = await eventually("vm-s4 settled", () => stage.statuses("vm-s4").find((s) => s.state === VM_STATE_RUNNING || s.state === VM_STATE_FAILED));
      expect(s4).toMatchObject({ state: VM_STATE_RUNNING, reason: null });
      expect(vmsOf(await stage.hostState("agent-small", "host-small")).map((v) => `${v.vmId}:${v1.VmState[v.state]}`)).toEqual([
        "vm-s1:VM_STATE_STOPPED",
        "vm-s4:VM_STATE_RUNNING",
      ]);
      expect(small.agent.health().details).toMatchObject({ vms: 2 });
    });
  });

  describe("bad input", () => {
    // Every document names vm-keep, which runs, at a newer generation and
    // OFF, so a document that slipped past the checks would stop it.
    const keepOff = desiredVm("vm-keep", { power: "off", generation: 2 });
    const withVm = (fields: Partial<v1.DesiredVm.$Properties>): v1.DesiredVm.$Properties[] => [{ ...keepOff, ...fields }];
    const goodSpec = keepOff.spec!;
    const garbage = new Uint8Array([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01]);

    type Case = { name: string; raw?: Uint8Array; doc?: { generation?: number; chunkCount?: number; vms?: v1.DesiredVm.$Properties[]; network?: v1.IHostNetwork } };
    const port = { ofport: 1, vmId: "vm-keep", networkId: "n", segmentId: 1, mac: "02:00:00:00:00:01", ip: "10.0.0.2", prefixLength: 24 };
    const withNetwork = (network: v1.IHostNetwork) => ({ vms: [keepOff], network: { ports: [port], controllerTables: 40, ...network } });
    const cases: Case[] = [
      { name: "bytes that are no stored record", raw: garbage },
      { name: "a truncated stored record", raw: new Uint8Array([0x12, 0x09, 0x01]) },
      { name: "a stored record holding no document", raw: v1.StoredRecord.encode({ writerEpoch: epoch, message: garbage }).finish() },
      { name: "an empty document", raw: v1.StoredRecord.encode({ writerEpoch: epoch, message: new Uint8Array(0) }).finish() },
      { name: "document generation 0", doc: { generation: 0, vms: [keepOff] } },
      { name: "chunk count 0", doc: { chunkCount: 0, vms: [keepOff] } },
      ...["vm.keep", "*", ">", "vm-keep.>", "VM-KEEP", "-vm", "vm keep", "x".repeat(64), ""].map((vmId) => ({
        name: `vm_id ${JSON.stringify(vmId)}`,
        doc: { vms: withVm({ vmId }) },
      })),
      { name: "no incarnation", doc: { vms: withVm({ incarnation: "" }) } },
      { name: "an incarnation of 65 characters", doc: { vms: withVm({ incarnation: "i".repeat(65) }) } },
      { name: "no spec", doc: { vms: withVm({ spec: null }) } },
      { name: "vcpus 0", doc: { vms: withVm({ spec: { ...goodSpec, vcpus: 0 } }) } },
      { name: "vcpus over the limit", doc: { vms: withVm({ spec: { ...goodSpec, vcpus: vcpusPerVmMax + 1 } }) } },
      { name: "memory 0", doc: { vms: withVm({ spec: { ...goodSpec, memoryMib: 0 } }) } },
      { name: "memory over the limit", doc: { vms: withVm({ spec: { ...goodSpec, memoryMib: memoryMibPerVmMax + 1 } }) } },
      ...["vol.boot", "*", ">", ""].map((bootVolume) => ({
        name: `boot_volume ${JSON.stringify(bootVolume)}`,
        doc: { vms: withVm({ spec: { ...goodSpec, bootVolume } }) },
      })),
      ...["san.1", "SAN-1", ">"].map((sanNodeId) => ({
        name: `san_node_id ${JSON.stringify(sanNodeId)}`,
        doc: { vms: withVm({ bootVolume: { volumeId: "vol-boot", sanNodeId } }) },
      })),
      { name: "power state unspecified", doc: { vms: withVm({ powerState: 0 as v1.PowerState }) } },
      { name: "power state unknown", doc: { vms: withVm({ powerState: 99 as v1.PowerState }) } },
      { name: "vm generation 0", doc: { vms: withVm({ generation: 0 }) } },
      { name: "a VM named twice", doc: { vms: [keepOff, keepOff] } },
      { name: "a flow in bad syntax", doc: withNetwork({ flows: ["table=0,in_port=1,actions=output:port2"] }) },
      { name: "a flow with a missing prerequisite", doc: withNetwork({ flows: ["table=0,tp_dst=80,actions=drop"] }) },
      { name: "a port numbered 0", doc: withNetwork({ ports: [{ ...port, ofport: 0 }] }) },
      { name: "two ports on one ofport", doc: withNetwork({ ports: [port, { ...port, vmId: "vm-other" }] }) },
      { name: "a port with a bad MAC", doc: withNetwork({ ports: [{ ...port, mac: "02:00:00:00:00" }] }) },
      { name: "a port with a bad address", doc: withNetwork({ ports: [{ ...port, ip: "10.0.0.256" }] }) },
      { name: "a port with prefix 0", doc: withNetwork({ ports: [{ ...port, prefixLength: 0 }] }) },
      { name: "a tunnel in the VM port range", doc: withNetwork({ tunnels: [{ ofport: 2, hostId: "host-x", agentId: "agent-x" }] }) },
      { name: "a tunnel to a bad host id", doc: withNetwork({ tunnels: [{ ofport: 0xf000, hostId: "host.x", agentId: "agent-x" }] }) },
      { name: "a neighbor with a bad MAC", doc: withNetwork({ neighbors: [{ segmentId: 1, ip: "10.0.0.3", mac: "zz" }] }) },
    ];

    it("bad input: a malformed document chunk or a bad field is refused, counted, reported, and changes nothing", async () => {
      // Documents are checked at the edge, field by field; a bad one is
      // refused whole (no VM of it is taken), and the host runs on with the
      // document it had, then takes the next good one.
      const realized = await write("host-bad", [desiredVm("vm-keep")]);
      await stage.waitForState("vm-keep", VM_STATE_RUNNING);
      const before = await hostState("host-bad");
      const refused = agent.documentsRefused;
      const mark = stage.seen.length;

      for (const [i, c] of cases.entries()) {
        if (c.raw) await stage.writeRaw(`${agentId}.host-bad.0`, c.raw);
        else await stage.writeChunk(agentId, { hostId: "host-bad", chunkIndex: 0, generation: ++stage.generation, ...c.doc });
        await eventually(`${c.name} refused`, () => (agent.documentsRefused === refused + i + 1 ? true : undefined));
      }

      await documentsHandled();
      const after = stage.seen.slice(mark).filter((s) => s.hostId === "host-bad");
      expect(after.filter((s) => s.kind === "vm")).toEqual([]);
      expect(after.filter((s) => s.kind === "heartbeat").every((s) => s.kind === "heartbeat" && s.beat.realizedGeneration === realized)).toBe(true);
      // Refusals are reported as events, at most one per host and minute (all are counted).
      const events = after.flatMap((s) => (s.kind === "refused" ? [s.event] : []));
      expect(events).toHaveLength(1);
      expect(events[0]).toMatchObject({ kind: v1.EventKind.EVENT_KIND_MESSAGE_REFUSED, objectId: "host-bad", source: agentId });
      expect(await hostState("host-bad")).toEqual(before);

      // The host still takes a good document, which shows the bad ones would have stopped vm-keep.
      await write("host-bad", [keepOff]);
      await stage.waitForState("vm-keep", VM_STATE_STOPPED, { generation: 2 });
      expect(agent.documentsRefused).toBe(refused + cases.length);
    });

    it("bad input: the endpoints answer typed errors for unknown hosts and malformed requests", async () => {
      // The one service of the agent answers for its hosts only; anything
      // else is a typed error the caller can act on, never a timeout.
      await expect(stage.hostState(agentId, "host-unknown")).rejects.toMatchObject({ code: "NOT_FOUND" });
      await expect(
        stage.client.call(hostAgentService.Reregister, {}, { scopeId: hostScope(agentId, "host-unknown") }),
      ).rejects.toMatchObject({ code: "NOT_FOUND" });
      // Another agent's hosts are not served here at all.
      await expect(stage.hostState("agent-nobody", "host-boot", 1_000)).rejects.toMatchObject({ code: "UNAVAILABLE" });
      const raw = await connect({ servers: nats.url });
      try {
        for (const method of ["GetHostState", "Reregister"]) {
          const reply = await raw.request(`ha.host.${agentId}.host-boot.${method}`, new Uint8Array([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01]), { timeout: 5_000 });
          expect(reply.headers?.get("Nats-Service-Error-Code"), method).toBe("400");
          expect(reply.headers?.get("Nats-Service-Error"), method).toMatch(/^INVALID_ARGUMENT: /);
          const unknown = await raw.request(`ha.host.${agentId}.host-unknown.${method}`, new Uint8Array(0), { timeout: 5_000 });
          expect(unknown.headers?.get("Nats-Service-Error-Code"), method).toBe("404");
          expect(unknown.headers?.get("Nats-Service-Error"), method).toMatch(/^NOT_FOUND: .*host-unknown/);
        }
      } finally {
        await raw.close();
      }
      // A host that is known answers.
      expect((await hostState("host-boot")).hostId).toBe("host-boot");
    });

    it("bad input: the vswitch endpoints refuse what is malformed, unknown or not allowed, and change nothing", async () => {
      const on = { scopeId: hostScope(agentId, "host-boot") };
      const flows = async () => (await stage.client.call(hostAgentService.DumpFlows, { table: -1 }, on)).flows;
      const nics = async () => (await stage.client.call(hostAgentService.DumpPorts, {}, on)).nics;
      const before = await flows();
      const nicsBefore = await nics();
      const cases: [Promise<unknown>, string, RegExp][] = [
        [stage.client.call(hostAgentService.DumpFlows, { table: 255 }, on), "INVALID_ARGUMENT", /table/],
        [stage.client.call(hostAgentService.DumpFlows, {}, { scopeId: hostScope(agentId, "host-unknown") }), "NOT_FOUND", /host-unknown/],
        [stage.client.call(hostAgentService.DumpConntrack, {}, { scopeId: hostScope(agentId, "host-unknown") }), "NOT_FOUND", /host-unknown/],
        [stage.client.call(hostAgentService.SetNic, { nic: "nic9", queueBytes: 4_096 }, on), "NOT_FOUND", /has no NIC nic9/],
        [stage.client.call(hostAgentService.SetNic, { nic: "nic0" }, on), "INVALID_ARGUMENT", /give a bandwidth or a queue size/],
        [stage.client.call(hostAgentService.SetNic, { nic: "nic0", queueBytes: 100 }, on), "INVALID_ARGUMENT", /queue_bytes/],
        [stage.client.call(hostAgentService.SetNic, { nic: "nic0", bandwidthMbps: 500_000 }, on), "INVALID_ARGUMENT", /bandwidth_mbps/],
        [stage.client.call(hostAgentService.SetNic, { nic: "NIC 0", queueBytes: 4_096 }, on), "INVALID_ARGUMENT", /nic/],
        [stage.client.call(hostAgentService.ModFlows, { flows: ["table=60,priority=1,ip,actions=ct(zone=70000)"] }, on), "INVALID_ARGUMENT", /zone/],
        [stage.client.call(hostAgentService.ModFlows, { flows: ["table=60,priority=1,arp,actions=ct(commit)"] }, on), "INVALID_ARGUMENT", /ip/],
        [stage.client.call(hostAgentService.ModFlows, { flows: ["table=60,priority=1,actions=output:x"] }, on), "INVALID_ARGUMENT", /flow 1/],
        [stage.client.call(hostAgentService.ModFlows, { flows: ["table=60,actions=drop", "priority=70000,actions=drop"] }, on), "INVALID_ARGUMENT", /flow 2: priority/],
        [stage.client.call(hostAgentService.ModFlows, { flows: ["cookie=x"], delete: true }, on), "INVALID_ARGUMENT", /del-flows filter/],
        [stage.client.call(hostAgentService.Ping, { vmId: "vm-none", targetIp: "10.0.0.1" }, on), "NOT_FOUND", /vm-none has no NIC/],
        [stage.client.call(hostAgentService.Ping, { vmId: "vm-none", targetIp: "10.0.0.300" }, on), "INVALID_ARGUMENT", /10.0.0.300/],
        [stage.client.call(hostAgentService.Ping, { vmId: "VM NONE", targetIp: "10.0.0.1" }, on), "INVALID_ARGUMENT", /vm_id/],
        [stage.client.call(hostAgentService.Ping, { vmId: "vm-none", targetIp: "10.0.0.1", count: 10_001 }, on), "INVALID_ARGUMENT", /count/],
        [stage.client.call(hostAgentService.Ping, { vmId: "vm-none", targetIp: "10.0.0.1", intervalMs: 5 }, on), "INVALID_ARGUMENT", /interval_ms/],
        [stage.client.call(hostAgentService.StartTraffic, { vmId: "vm-none", targetIp: "10.0.0.1", ratePps: 10 }, on), "NOT_FOUND", /vm-none has no NIC/],
        [stage.client.call(hostAgentService.StartTraffic, { vmId: "vm-none", targetIp: "10.0.0.1", ratePps: 10, sizeBytes: 20 }, on), "INVALID_ARGUMENT", /size_bytes/],
        [stage.client.call(hostAgentService.StartTraffic, { vmId: "vm-none", targetIp: "nowhere", ratePps: 10 }, on), "INVALID_ARGUMENT", /nowhere/],
        [stage.client.call(hostAgentService.StopTraffic, { flowId: 42 }, on), "NOT_FOUND", /no traffic flow 42/],
        [stage.client.call(hostAgentService.Trace, { packet: "in_port=1,colour=red" }, on), "INVALID_ARGUMENT", /colour/],
        [stage.client.call(hostAgentService.Trace, { packet: "in_port=1", fromHost: "host-x" }, on), "NOT_FOUND", /no tunnel from host-x/],
        [stage.client.call(hostAgentService.Trace, { packet: "in_port=1", fromHost: "host.x" }, on), "INVALID_ARGUMENT", /from_host/],
      ];
      for (const [call, code, message] of cases) await expect(call).rejects.toMatchObject({ code, message: expect.stringMatching(message) });
      expect(await flows()).toEqual(before);
      expect(await nics()).toEqual(nicsBefore);
    });
  });

  describe("re-registration", () => {
    it("re-registration: Reregister makes the host register again, with the same boot id", async () => {
      // The controller asks when it does not know this boot (it restarted);
      // the host registers again at once, as the same boot.
      const mine = (): v1.RegisterHostRequest[] => stage.registrations.filter((r) => r.subjectId === "host-rereg").map((r) => r.request);
      await eventually("host-rereg registered", () => (mine().length === 1 ? true : undefined));
      await stage.client.call(hostAgentService.Reregister, {}, { scopeId: hostScope(agentId, "host-rereg") });
      await eventually("host-rereg registered again", () => (mine().length === 2 ? true : undefined));
      expect(mine()[1]!.bootId).toBe(mine()[0]!.bootId);
      expect((await hostState("host-rereg")).bootId).toBe(mine()[0]!.bootId);
    });

    it("re-registration: a registration refused with FAILED_PRECONDITION stops the host: no more heartbeats, NOT_FOUND to requests", async () => {
      // Another live agent holds this host id; two machines must not be one
      // host, so this one goes quiet for good while its siblings run on.
      await write("host-evicted", [desiredVm("vm-evicted", { power: "off" })]);
      await stage.waitForState("vm-evicted", VM_STATE_STOPPED);
      stage.heldElsewhere.add("host-evicted");
      await stage.client.call(hostAgentService.Reregister, {}, { scopeId: hostScope(agentId, "host-evicted") });
      await eventually("host-evicted gone", async () => {
        try {
          await hostState("host-evicted");
          return undefined;
        } catch (err) {
          return (err as { code?: string }).code === "NOT_FOUND" ? true : undefined;
        }
      });
      // Heartbeats of one agent arrive in the order they were sent, so once
      // a sibling's later beat is here, every beat host-evicted sent is here.
      const siblingBeats = stage.heartbeats("host-rereg").length;
      await eventually("a later beat of a sibling", () => (stage.heartbeats("host-rereg").length > siblingBeats ? true : undefined));
      const evictedBeats = stage.heartbeats("host-evicted").length;
      const mark = stage.seen.length;
      await eventually("five more beats of a sibling", () => (stage.heartbeats("host-rereg").length > siblingBeats + 6 ? true : undefined));
      expect(stage.heartbeats("host-evicted")).toHaveLength(evictedBeats);
      await expect(stage.client.call(hostAgentService.Reregister, {}, { scopeId: hostScope(agentId, "host-evicted") })).rejects.toMatchObject({
        code: "NOT_FOUND",
      });
      // Nor does it take documents any more.
      await write("host-evicted", [desiredVm("vm-evicted-2", { power: "off" })]);
      await documentsHandled();
      expect(stage.seen.slice(mark).filter((s) => s.hostId === "host-evicted")).toEqual([]);
      expect(stage.registrations.filter((r) => r.subjectId === "host-evicted")).toHaveLength(2);
    });
  });
});

/** A stage of a describe block's own, with a stand-in controller serving it, open for the block's tests. */
function servedStage(prefix: string): { readonly stage: Stage } {
  const held = {} as { stage: Stage };
  beforeAll(async () => {
    held.stage = await Stage.open(nats, prefix);
    await held.stage.serveController();
  });
  afterAll(async () => {
    await held.stage?.close();
  });
  return held;
}

describe("test faults", () => {
  const staged = servedStage("tf");

  it("test faults: a stray VM starts on a second host only where test faults are served, and the next document removes it", async () => {
    const { stage } = staged;
    await stage.startAgent("agent-t1", ["host-t1"]);
    await stage.startAgent("agent-t2", ["host-t2"], { testFaults: true });
    await stage.startAgent("agent-t3", ["host-t3"]);
    await stage.writeDocument("agent-t1", "host-t1", [desiredVm("vm-t1")]);
    await stage.waitForState("vm-t1", VM_STATE_RUNNING);
    const held = (await stage.hostState("agent-t1", "host-t1")).vms[0]!.desired!;
    const stray = (agentId: string, hostId: string) =>
      stage.client.call(hostAgentService.StartStrayVm, { vm: held }, { scopeId: hostScope(agentId, hostId) });
    await expect(stray("agent-t3", "host-t3")).rejects.toMatchObject({ code: "PERMISSION_DENIED", message: expect.stringMatching(/--test-faults/) });
    expect(vmsOf(await stage.hostState("agent-t3", "host-t3"))).toEqual([]);
    await stray("agent-t2", "host-t2");
    await eventually("vm-t1 running on host-t2 too", () =>
      stage.seen.find((s) => s.kind === "vm" && s.hostId === "host-t2" && s.status.vmId === "vm-t1" && s.status.state === VM_STATE_RUNNING),
    );
    await expect(stray("agent-t2", "host-t2")).rejects.toMatchObject({ code: "FAILED_PRECONDITION" });
    await expect(stage.client.call(hostAgentService.StartStrayVm, {}, { scopeId: hostScope("agent-t2", "host-t2") })).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
    await stage.writeDocument("agent-t2", "host-t2", []);
    await eventually("the stray removed by host-t2's next document", async () => (vmsOf(await stage.hostState("agent-t2", "host-t2")).length === 0 ? true : undefined));
  });
});

describe("security group documents", () => {
  const staged = servedStage("sg");

  it("groups: a host expands its NIC's group and reports the group's generation; with its controller lost it holds a new one back, and installs and reports it once the controller answers", async () => {
    const { stage } = staged;
    const probes = { answering: true };
    await stage.peers.serve({ role: "controller", description: "stand-in controller probes" }, [
      endpoint(hostService.ProbeController, () => {
        if (!probes.answering) throw unavailable("controller away");
        return { controllerId: "controller-1", epoch };
      }),
    ]);
    const groupDocs = await stage.peers.bucket("group-docs", v1.GroupDocument, { fenced: { epochOf: () => epoch } });
    await groupDocs.put("web", { groupId: "web", generation: 2, epoch, stateId, admissions: ["tcp,tp_dst=80"] });
    // A controller's takeover mark in the bucket is no group: not refused, not counted.
    await groupDocs.writeBarrier();
    const { agent } = await stage.startAgent("agent-sg", ["host-sg"], { inactivityProbeMs: 200 });
    const network = {
      ports: [{ ofport: 1, vmId: "vm-sg", networkId: "blue", segmentId: 1, mac: "02:00:00:00:00:51", ip: "10.1.0.5", prefixLength: 24, leaseS: 3600, securityGroups: ["web"] }],
      flows: ["table=35,priority=0 actions=drop"],
      controllerTables: 40,
    };
    await stage.writeChunk("agent-sg", { hostId: "host-sg", chunkIndex: 0, generation: 3, vms: [desiredVm("vm-sg")], network });
    const groupsIn = (beat: v1.HostHeartbeat) => beat.groupsRealized.map((g) => `${g.groupId}:${g.generation}`);
    const beatWith = (what: string, mark: number) =>
      eventually(`host-sg reporting ${what}`, () => stage.seen.slice(mark).find((x) => x.kind === "heartbeat" && x.hostId === "host-sg" && groupsIn(x.beat).includes(what)));
    await beatWith("web:2", 0);
    expect(agent.documentsRefused).toBe(0);
    const admissions = async () => (await stage.client.call(hostAgentService.DumpFlows, { table: 35 }, { scopeId: hostScope("agent-sg", "host-sg") })).flows.filter((f) => f.includes("priority=100"));
    expect((await admissions()).join("\n")).toMatch(/nw_proto=6,tp_dst=80,reg6=0x1,ct_state=\+new\+trk actions=ct\(commit,zone=1\),output:1/);

    // The controller stops answering: the vswitch holds the group's new document back, and says it has the old one.
    probes.answering = false;
    await eventually("host-sg's vswitch without its controller", async () => {
      const ports = await stage.client.call(hostAgentService.DumpPorts, {}, { scopeId: hostScope("agent-sg", "host-sg") });
      return ports.controllerConnected ? undefined : true;
    });
    await groupDocs.put("web", { groupId: "web", generation: 4, epoch, stateId, admissions: ["udp"] });
    const mark = stage.seen.length;
    await eventually("three more beats", () => (stage.seen.slice(mark).filter((x) => x.kind === "heartbeat" && x.hostId === "host-sg").length >= 3 ? true : undefined));
    for (const x of stage.seen.slice(mark)) if (x.kind === "heartbeat" && x.hostId === "host-sg") expect(groupsIn(x.beat)).toEqual(["web:2"]);
    expect((await admissions()).join("\n")).toMatch(/tp_dst=80/);

    // Back: installed, reported.
    probes.answering = true;
    await beatWith("web:4", mark);
    const after = (await admissions()).join("\n");
    expect(after).toMatch(/nw_proto=17,reg6=0x1,ct_state=\+new\+trk actions=ct\(commit,zone=1\),output:1/);
    expect(after).not.toMatch(/tp_dst=80/);
  });
});

describe("without a controller", () => {
  let stage: Stage;

  beforeAll(async () => {
    stage = await Stage.open(nats, "rs");
  });

  afterAll(async () => {
    await stage?.close();
  });

  it("without a controller: a host that loses the controller keeps running its document", async () => {
    // The controller is gone (its registration endpoint with it) and the
    // host cannot register again; it runs its VMs and beats on as before.
    await stage.serveController();
    const { agent } = await stage.startAgent("agent-r1", ["host-r1", "host-r2"]);
    await stage.writeDocument("agent-r1", "host-r1", [desiredVm("vm-r1")]);
    const generation = await stage.writeDocument("agent-r1", "host-r2", [desiredVm("vm-r2"), desiredVm("vm-r3", { power: "off" })]);
    await stage.waitForState("vm-r1", VM_STATE_RUNNING);
    await stage.waitForState("vm-r2", VM_STATE_RUNNING);
    await stage.waitForState("vm-r3", VM_STATE_STOPPED);
    // Both hosts registered (first registrations are spread over an interval) before the controller goes.
    await eventually("both hosts registered", () => (agent.health().details["hostsRegistered"] === 2 ? true : undefined));
    const before = await stage.hostState("agent-r1", "host-r2");

    await stage.stopController();
    await expect(
      stage.client.call(hostService.RegisterHost, { hostId: "host-r9", agentId: "agent-r9" }, { scopeId: "host-r9", timeoutMs: 1_000 }),
    ).rejects.toMatchObject({ code: "UNAVAILABLE" });
    const registrations = stage.registrations.length;
    await stage.client.call(hostAgentService.Reregister, {}, { scopeId: hostScope("agent-r1", "host-r1") });
    const mark = stage.seen.length;
    await eventually("ten more beats of each host", () => {
      const later = stage.seen.slice(mark);
      const count = (h: string): number => later.filter((s) => s.kind === "heartbeat" && s.hostId === h).length;
      return count("host-r1") >= 10 && count("host-r2") >= 10 ? true : undefined;
    });
    expect(stage.seen.slice(mark).filter((s) => s.kind === "vm")).toEqual([]);
    for (const s of stage.seen.slice(mark)) if (s.kind === "heartbeat" && s.hostId === "host-r2") expect(s.beat.realizedGeneration).toBe(generation);
    expect(await stage.hostState("agent-r1", "host-r2")).toEqual(before);
    expect(vmsOf(await stage.hostState("agent-r1", "host-r1")).map((v) => `${v.vmId}:${v1.VmState[v.state]}`)).toEqual(["vm-r1:VM_STATE_RUNNING"]);
    expect(agent.health()).toMatchObject({ healthy: true, details: { vms: 3 } });
    expect(stage.registrations).toHaveLength(registrations);
  });

  it("without a controller: an agent restarted while no controller runs comes back with its VMs from the stored document", async () => {
    // Documents live in KV, boot needs only the SAN: a restarted agent
    // (new boot ids, nothing in memory) runs its VMs again with no
    // controller to register with.
    await stage.serveController();
    const first = await stage.startAgent("agent-r2", ["host-r3", "host-r4"]);
    const g3 = await stage.writeDocument("agent-r2", "host-r3", [desiredVm("vm-r4"), desiredVm("vm-r5", { power: "off" })]);
    const g4 = await stage.writeDocument("agent-r2", "host-r4", [desiredVm("vm-r6")]);
    for (const vmId of ["vm-r4", "vm-r6"]) await stage.waitForState(vmId, VM_STATE_RUNNING);
    await stage.waitForState("vm-r5", VM_STATE_STOPPED);
    await eventually("both hosts beating", () => (["host-r3", "host-r4"].every((h) => stage.heartbeats(h).length > 0) ? true : undefined));
    const bootIds = new Map(["host-r3", "host-r4"].map((h) => [h, stage.heartbeats(h).at(-1)!.bootId]));

    await stage.stopController();
    await expect(
      stage.client.call(hostService.RegisterHost, { hostId: "host-r9", agentId: "agent-r9" }, { scopeId: "host-r9", timeoutMs: 1_000 }),
    ).rejects.toMatchObject({ code: "UNAVAILABLE" });
    await first.agent.stop();
    const reads = stage.reads.length;
    const mark = stage.seen.length;
    const { agent } = await stage.startAgent("agent-r2", ["host-r3", "host-r4"], { bus: first.bus });

    // Unregistered, the hosts do not beat (the controller would refuse it); they answer for themselves.
    for (const [hostId, generation] of [
      ["host-r3", g3],
      ["host-r4", g4],
    ] as const) {
      const state = await eventually(`${hostId} realized generation ${generation}`, async () => {
        const s = await stage.hostState("agent-r2", hostId);
        return s.realizedGeneration === generation ? s : undefined;
      });
      expect(state.bootId).not.toBe(bootIds.get(hostId));
    }
    // Only the new boots are judged: a last beat of the stopped agent may
    // still arrive after the mark, and the previous test's agent beats on.
    const newBoots = stage.seen.slice(mark).filter((s) => s.kind === "heartbeat" && bootIds.has(s.hostId) && s.beat.bootId !== bootIds.get(s.hostId));
    expect(newBoots).toEqual([]);
    const later = (vmId: string, state: v1.VmState): Promise<Seen> =>
      eventually(`${vmId} ${v1.VmState[state]} after the restart`, () =>
        stage.seen.slice(mark).find((s) => s.kind === "vm" && s.status.vmId === vmId && s.status.state === state),
      );
    await later("vm-r4", VM_STATE_RUNNING);
    await later("vm-r6", VM_STATE_RUNNING);
    await later("vm-r5", VM_STATE_STOPPED);
    expect(stage.reads.length).toBe(reads + 2);
    expect(vmsOf(await stage.hostState("agent-r2", "host-r3"))).toEqual([
      { vmId: "vm-r4", incarnation: "vm-r4-i1", state: VM_STATE_RUNNING, observedGeneration: 1 },
      { vmId: "vm-r5", incarnation: "vm-r5-i1", state: VM_STATE_STOPPED, observedGeneration: 1 },
    ]);
    expect(agent.health().details).toMatchObject({ hosts: 2, hostsRegistered: 0, vms: 3 });
  });
  it("without a controller: a host keeps its VMs when the documents' bucket is deleted, and follows the new bucket", async () => {
    // A controller that lost its store makes the bucket anew: the agent's
    // watch of the old one ends, it runs its last documents meanwhile, and it
    // takes the documents written into the new bucket.
    await stage.serveController();
    await stage.startAgent("agent-r3", ["host-r5"]);
    await stage.writeDocument("agent-r3", "host-r5", [desiredVm("vm-r7")]);
    await stage.waitForState("vm-r7", VM_STATE_RUNNING);
    const jsm = await (await connect({ servers: nats.url })).jetstreamManager();
    await jsm.streams.delete(`KV_${stage.prefix}-docs`);
    stage.docs = await stage.peers.bucket("docs", v1.HostDocument, { fenced: { epochOf: () => epoch } });
    const mark = stage.seen.length;
    const generation = await stage.writeDocument("agent-r3", "host-r5", [desiredVm("vm-r7"), desiredVm("vm-r8")], { stateId: "state-new", generation: 1 });
    const beat = await eventually(
      "host-r5 realizing the new bucket's document",
      () => stage.seen.slice(mark).find((s) => s.kind === "heartbeat" && s.hostId === "host-r5" && s.beat.stateId === "state-new" && s.beat.realizedGeneration === generation),
      15_000,
    );
    expect(beat).toBeDefined();
    await stage.waitForState("vm-r8", VM_STATE_RUNNING);
    expect(vmsOf(await stage.hostState("agent-r3", "host-r5")).map((v) => `${v.vmId}:${v1.VmState[v.state]}`)).toEqual(["vm-r7:VM_STATE_RUNNING", "vm-r8:VM_STATE_RUNNING"]);
  });
});

describe("fault rules", () => {
  const agentId = "agent-f";
  const hostIds = ["host-1", "host-2", "host-3"];
  let stage: Stage;
  let operator: Bus;
  /** Heartbeats as a subscriber that follows the fault rules receives them. */
  const judged: string[] = [];

  async function waitApplied(generation: number): Promise<void> {
    await eventually(`fault rules of generation ${generation} applied`, async () => {
      const reports = await operator.faultReports(200);
      const applied = [agentId, "fx-peers"].every((id) => reports.find((r) => r.processId === id)?.generation === generation);
      return applied ? true : undefined;
    });
  }

  beforeAll(async () => {
    stage = await Stage.open(nats, "fx", { followFaultRules: true });
    operator = await connectTestBus(nats.url, { prefix: "fx", processId: "fx-operator" });
    // The agent sends its hosts' beats in batches; each beat is judged as if it came alone from its host.
    stage.peers.subscribeBatch(
      "fx.evt.agent.*.heartbeats",
      v1.HostHeartbeats,
      (batch) => (batch.beats as v1.HostHeartbeat[]).map((beat) => ({ item: beat, subject: `fx.evt.host.${beat.hostId}.heartbeat`, sender: beat.hostId, seq: beat.seq })),
      (beat) => void judged.push(beat.hostId),
    );
    await stage.peers.flush();
    await stage.startAgent(agentId, hostIds, { followFaultRules: true });
    await eventually("every host beats", () => (hostIds.every((h) => judged.includes(h)) ? true : undefined));
  });

  afterAll(async () => {
    await operator?.close();
    await stage?.close();
  });

  it.each([
    ["drop", v1.FaultAction.FAULT_ACTION_DROP],
    ["partition", v1.FaultAction.FAULT_ACTION_PARTITION],
  ] as const)("fault rules: a %s rule naming one host cuts that host's heartbeats and requests, not its siblings in the same process", async (name, action) => {
    // Fault rules judge each message by the host it is from or for, not by
    // the process, so one host of a multi-host agent can be cut alone; it
    // still runs and publishes, and comes back when the rule is cleared.
    await waitApplied((await addFaultRule(operator, { id: `cut-${name}`, action, source: "host-2" })).generation);
    const mark = judged.length;
    const rawMark = stage.seen.length;
    await eventually("five beats of host-1 and host-3 under the rule", () => {
      const later = judged.slice(mark);
      return later.filter((h) => h === "host-1").length >= 5 && later.filter((h) => h === "host-3").length >= 5 ? true : undefined;
    });
    expect(judged.slice(mark).filter((h) => h === "host-2")).toEqual([]);
    expect(stage.seen.slice(rawMark).filter((s) => s.kind === "heartbeat" && s.hostId === "host-2").length).toBeGreaterThanOrEqual(3);
    await expect(stage.hostState(agentId, "host-2", 500)).rejects.toMatchObject({ code: "UNAVAILABLE" });
    for (const hostId of ["host-1", "host-3"]) expect((await stage.hostState(agentId, hostId, 2_000)).hostId).toBe(hostId);

    await waitApplied((await clearFaultRules(operator)).generation);
    const healed = judged.length;
    await eventually("host-2 beats again", () => (judged.slice(healed).includes("host-2") ? true : undefined));
    expect((await stage.hostState(agentId, "host-2", 2_000)).hostId).toBe("host-2");
  });
});
