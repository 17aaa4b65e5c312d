// Proves the host agent's behaviour in-process against a real nats-server,
// with the controller and a SAN node played by test peers served on the bus:
// registration per host, the VM lifecycle (boot over the storage API, stop,
// idempotent generations, failures with reasons, removal), the VM limit, and
// that every bad request to either endpoint gets a typed error and changes
// nothing (no status event, the same VM list in the next heartbeat).

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect, type NatsConnection } from "nats";
import { simdc } from "@simdc/proto";
import {
  hostAgentService,
  hostService,
  sanNodeService,
  storageService,
  endpoint,
  type Bus,
} from "@simdc/bus";
import { createLogger, notFound, unavailable } from "@simdc/common";
import { connectTestBus, eventually, startTestNats, type TestNats } from "@simdc/testkit";
import { HostAgent, bootAttemptsMax, vcpusPerVmMax, type AgentConfig } from "./mod.js";

import v1 = simdc.v1;

const { VM_STATE_DEFINED, VM_STATE_STARTING, VM_STATE_RUNNING, VM_STATE_STOPPING, VM_STATE_STOPPED, VM_STATE_FAILED } =
  v1.VmState;
const { POWER_STATE_ON, POWER_STATE_OFF } = v1.PowerState;

const heartbeatIntervalMs = 200;
const bootBlocks = 8;

let nats: TestNats;
let peers: Bus;
let client: Bus;
let agentBus: Bus;
let raw: NatsConnection;
let agent: HostAgent;

/** What the stand-in controller and SAN nodes were asked. */
const registrations: v1.RegisterHostRequest[] = [];
const getVolumeCalls: string[] = [];
const readBlocksCalls: { nodeId: string; volumeId: string; lba: number; blockCount: number }[] = [];
let flakyFailuresLeft = 2;

/** Volumes the stand-in controller knows, by id: the SAN node that holds each. */
const volumes: Record<string, string> = {
  "vol-boot": "san-1",
  // Nobody serves san-dead, so every ReadBlocks there is UNAVAILABLE.
  "vol-dead": "san-dead",
  "vol-flaky": "san-flaky",
};

/** Every VmStatus event seen, per VM, in arrival order. */
const statusEvents = new Map<string, v1.VmStatus[]>();
/** The latest heartbeat per host, with when it arrived. */
const lastHeartbeat = new Map<string, { beat: v1.HostHeartbeat; atMs: number }>();
const heartbeats: { hostId: string; atMs: number; seq: number }[] = [];

function config(hostIds: string[], agentId = "agent-t"): AgentConfig {
  return {
    agentId,
    hostIds,
    capacity: { pcpus: 16, memoryMib: 65_536, nics: 2 },
    timing: { bootBlocks, bootTimeMs: 100, stopTimeMs: 50 },
    // The stand-in controller answers heartbeatIntervalMs; this is only the start value.
    heartbeatIntervalMs: 1_000,
  };
}

beforeAll(async () => {
  nats = await startTestNats();
  peers = await connectTestBus(nats.url, { processId: "test-peers" });
  client = await connectTestBus(nats.url, { processId: "test-client" });
  agentBus = await connectTestBus(nats.url, { processId: "agent-t" });
  raw = await connect({ servers: nats.url });

  await peers.serve({ role: "controller", description: "stand-in controller" }, [
    endpoint(hostService.RegisterHost, (req) => {
      registrations.push(req);
      return { host: { id: req.hostId, agentId: req.agentId }, heartbeatIntervalMs, heartbeatMissesMax: 3 };
    }),
    endpoint(storageService.GetVolume, (req) => {
      getVolumeCalls.push(req.volumeId);
      const sanNodeId = volumes[req.volumeId];
      if (!sanNodeId) throw notFound(`volume ${req.volumeId} not found`);
      return { volume: { id: req.volumeId, sizeMib: 16, blockSizeBytes: 4096, sanNodeId } };
    }),
  ]);
  for (const nodeId of ["san-1", "san-flaky"]) {
    await peers.serve({ role: "san-node", scopeId: nodeId, description: "stand-in SAN node" }, [
      endpoint(sanNodeService.ReadBlocks, (req) => {
        readBlocksCalls.push({ nodeId, volumeId: req.volumeId, lba: req.lba, blockCount: req.blockCount });
        if (nodeId === "san-flaky" && flakyFailuresLeft > 0) {
          flakyFailuresLeft -= 1;
          throw unavailable("disk busy");
        }
        return { data: new Uint8Array(req.blockCount * 4096) };
      }),
    ]);
  }

  raw.subscribe("simdc.evt.vm.*.status", {
    callback: (_err, msg) => {
      const status = v1.VmStatus.decode(msg.data);
      const list = statusEvents.get(status.vmId) ?? [];
      list.push(status);
      statusEvents.set(status.vmId, list);
    },
  });
  raw.subscribe("simdc.evt.host.*.heartbeat", {
    callback: (_err, msg) => {
      const beat = v1.HostHeartbeat.decode(msg.data);
      const atMs = Date.now();
      lastHeartbeat.set(beat.hostId, { beat, atMs });
      heartbeats.push({ hostId: beat.hostId, atMs, seq: beat.seq });
    },
  });
  await raw.flush();

  const logger = createLogger({ service: "host-agent", id: "agent-t", level: process.env["LOG_LEVEL"] ?? "silent" });
  agent = await HostAgent.start({ bus: agentBus, logger, config: config(["host-a", "host-b"]) });
});

afterAll(async () => {
  await agent?.stop();
  await agentBus?.close();
  await raw?.close();
  await client?.close();
  await peers?.close();
  await nats?.dispose();
});

function applyVm(
  hostId: string,
  vmId: string,
  powerState: v1.PowerState,
  generation: number,
  bootVolume = "vol-boot",
): Promise<v1.ApplyVmResponse> {
  return client.call(
    hostAgentService.ApplyVm,
    { vmId, spec: { vcpus: 2, memoryMib: 1024, bootVolume }, powerState, generation },
    { scopeId: hostId },
  );
}

/** The (state, observedGeneration) pairs published for a VM so far. */
function trail(vmId: string): [v1.VmState, number][] {
  return (statusEvents.get(vmId) ?? []).map((s) => [s.state, s.observedGeneration]);
}

async function waitForState(vmId: string, state: v1.VmState, timeoutMs = 10_000): Promise<v1.VmStatus> {
  return eventually(
    `${vmId} in ${v1.VmState[state]}`,
    () => (statusEvents.get(vmId) ?? []).find((s) => s.state === state),
    timeoutMs,
  );
}

/** The VM list of the first heartbeat of `hostId` that arrives after `afterMs`. */
async function heartbeatAfter(hostId: string, afterMs: number): Promise<v1.HostHeartbeat> {
  return eventually(`a heartbeat of ${hostId}`, () => {
    const last = lastHeartbeat.get(hostId);
    return last && last.atMs > afterMs ? last.beat : undefined;
  });
}

function vmsOf(beat: v1.HostHeartbeat): unknown[] {
  return beat.vms
    .map((s) => ({ vmId: s.vmId, state: s.state, hostId: s.hostId, observedGeneration: s.observedGeneration }))
    .sort((a, b) => (a.vmId ?? "").localeCompare(b.vmId ?? ""));
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe("registration", () => {
  it("registration: each host registers once, with its own id, capacity and boot id", async () => {
    await eventually("both hosts registered", () => (registrations.length >= 2 ? true : undefined));
    await sleep(500);
    const byHost = registrations.map((r) => r.hostId).sort();
    expect(byHost).toEqual(["host-a", "host-b"]);
    for (const r of registrations) {
      expect(r.agentId).toBe("agent-t");
      expect(r.capacity).toMatchObject({ pcpus: 16, memoryMib: 65_536, nics: 2 });
      expect(r.bootId).toMatch(/^[0-9a-f-]{36}$/);
    }
    expect(registrations[0]!.bootId).not.toBe(registrations[1]!.bootId);
    expect(agent.health().details).toMatchObject({ hosts: 2, hostsRegistered: 2 });
  });

  it("registration: each host adopts the heartbeat interval from the reply", async () => {
    // Configured at 1000 ms; the stand-in controller answered 200 ms.
    await eventually("interval adopted", () =>
      agent.host("host-a")?.currentHeartbeatIntervalMs() === heartbeatIntervalMs ? true : undefined,
    );
    const windowStartMs = Date.now() + 300;
    await sleep(300 + 2_000);
    for (const hostId of ["host-a", "host-b"]) {
      const beats = heartbeats.filter((h) => h.hostId === hostId && h.atMs >= windowStartMs && h.atMs < windowStartMs + 2_000);
      // 2000 ms at 200 ms is 10 beats; a loaded machine may delay one.
      expect(beats.length).toBeGreaterThanOrEqual(8);
      expect(beats.length).toBeLessThanOrEqual(11);
      for (let i = 1; i < beats.length; i++) expect(beats[i]!.seq).toBe(beats[i - 1]!.seq + 1);
    }
  });
});

describe("vm lifecycle", () => {
  it("vm lifecycle: apply ON reports STARTING then RUNNING with observedGeneration, after reading the boot volume", async () => {
    const reply = await applyVm("host-a", "vm-on", POWER_STATE_ON, 1);
    expect(reply.status).toMatchObject({ vmId: "vm-on", hostId: "host-a", state: VM_STATE_DEFINED, observedGeneration: 0 });
    await waitForState("vm-on", VM_STATE_RUNNING);
    expect(trail("vm-on")).toEqual([
      [VM_STATE_DEFINED, 0],
      [VM_STATE_STARTING, 0],
      [VM_STATE_RUNNING, 1],
    ]);
    expect(getVolumeCalls).toContain("vol-boot");
    expect(readBlocksCalls).toContainEqual({ nodeId: "san-1", volumeId: "vol-boot", lba: 0, blockCount: bootBlocks });
    const beat = await heartbeatAfter("host-a", Date.now());
    expect(vmsOf(beat)).toContainEqual({ vmId: "vm-on", state: VM_STATE_RUNNING, hostId: "host-a", observedGeneration: 1 });
  });

  it("vm lifecycle: apply OFF with a higher generation reports STOPPING then STOPPED", async () => {
    await applyVm("host-a", "vm-off", POWER_STATE_ON, 1);
    await waitForState("vm-off", VM_STATE_RUNNING);
    const reply = await applyVm("host-a", "vm-off", POWER_STATE_OFF, 2);
    expect(reply.status).toMatchObject({ state: VM_STATE_RUNNING, observedGeneration: 1 });
    await waitForState("vm-off", VM_STATE_STOPPED);
    expect(trail("vm-off").slice(-2)).toEqual([
      [VM_STATE_STOPPING, 1],
      [VM_STATE_STOPPED, 2],
    ]);
  });

  it("vm lifecycle: re-applying the same or an older generation publishes nothing new", async () => {
    await applyVm("host-a", "vm-same", POWER_STATE_ON, 1);
    await applyVm("host-a", "vm-same", POWER_STATE_ON, 2);
    await eventually("generation 2 realized", () =>
      trail("vm-same").some(([state, gen]) => state === VM_STATE_RUNNING && gen === 2) ? true : undefined,
    );
    const eventsBefore = trail("vm-same").length;
    const readsBefore = readBlocksCalls.length;
    const same = await applyVm("host-a", "vm-same", POWER_STATE_ON, 2);
    const older = await applyVm("host-a", "vm-same", POWER_STATE_OFF, 1);
    expect(same.status).toMatchObject({ state: VM_STATE_RUNNING, observedGeneration: 2 });
    expect(older.status).toMatchObject({ state: VM_STATE_RUNNING, observedGeneration: 2 });
    await sleep(500);
    expect(trail("vm-same")).toHaveLength(eventsBefore);
    expect(readBlocksCalls).toHaveLength(readsBefore);
  });

  it("vm lifecycle: a newer generation during boot is driven to after the boot step", async () => {
    await applyVm("host-a", "vm-turn", POWER_STATE_ON, 1);
    await applyVm("host-a", "vm-turn", POWER_STATE_OFF, 2);
    await eventually("generation 2 realized", () =>
      trail("vm-turn").some(([state, gen]) => state === VM_STATE_STOPPED && gen === 2) ? true : undefined,
    );
    expect(trail("vm-turn")).toEqual([
      [VM_STATE_DEFINED, 0],
      [VM_STATE_STARTING, 0],
      [VM_STATE_RUNNING, 1],
      [VM_STATE_STOPPING, 1],
      [VM_STATE_STOPPED, 2],
    ]);
  });

  it("vm lifecycle: a missing boot volume fails the VM with NOT_FOUND and says which volume", async () => {
    await applyVm("host-a", "vm-nobody", POWER_STATE_ON, 1, "vol-missing");
    const failed = await waitForState("vm-nobody", VM_STATE_FAILED);
    expect(failed.observedGeneration).toBe(1);
    expect(failed.reason).toMatchObject({ code: v1.ErrorCode.ERROR_CODE_NOT_FOUND, message: "boot volume vol-missing not found" });
    expect(trail("vm-nobody").map(([state]) => state)).toEqual([VM_STATE_DEFINED, VM_STATE_STARTING, VM_STATE_FAILED]);
    expect(readBlocksCalls.some((c) => c.volumeId === "vol-missing")).toBe(false);
    // A failed VM boots again when the controller sends a newer generation.
    volumes["vol-missing"] = "san-1";
    await applyVm("host-a", "vm-nobody", POWER_STATE_ON, 2, "vol-missing");
    const running = await waitForState("vm-nobody", VM_STATE_RUNNING);
    expect(running.observedGeneration).toBe(2);
    expect(running.reason).toBeNull();
  });

  it("vm lifecycle: an unreachable SAN node is retried a few times, then the VM fails UNAVAILABLE", async () => {
    await applyVm("host-a", "vm-dead", POWER_STATE_ON, 1, "vol-dead");
    const failed = await waitForState("vm-dead", VM_STATE_FAILED);
    expect(failed.reason?.code).toBe(v1.ErrorCode.ERROR_CODE_UNAVAILABLE);
    expect(failed.reason?.message).toMatch(/ReadBlocks/);
    expect(getVolumeCalls.filter((v) => v === "vol-dead")).toHaveLength(bootAttemptsMax);
  });

  it("vm lifecycle: a SAN node that recovers within the retries boots the VM", async () => {
    await applyVm("host-b", "vm-flaky", POWER_STATE_ON, 1, "vol-flaky");
    await waitForState("vm-flaky", VM_STATE_RUNNING);
    expect(readBlocksCalls.filter((c) => c.volumeId === "vol-flaky")).toHaveLength(3);
    expect(trail("vm-flaky").map(([state]) => state)).toEqual([VM_STATE_DEFINED, VM_STATE_STARTING, VM_STATE_RUNNING]);
  });

  it("vm lifecycle: RemoveVm stops and forgets the VM; a second RemoveVm is NOT_FOUND", async () => {
    await applyVm("host-b", "vm-gone", POWER_STATE_ON, 1);
    await waitForState("vm-gone", VM_STATE_RUNNING);
    await client.call(hostAgentService.RemoveVm, { vmId: "vm-gone" }, { scopeId: "host-b" });
    await waitForState("vm-gone", VM_STATE_STOPPED);
    expect(trail("vm-gone").map(([state]) => state)).toEqual([
      VM_STATE_DEFINED,
      VM_STATE_STARTING,
      VM_STATE_RUNNING,
      VM_STATE_STOPPED,
    ]);
    const beat = await heartbeatAfter("host-b", Date.now());
    expect(beat.vms.map((s) => s.vmId)).not.toContain("vm-gone");
    await expect(client.call(hostAgentService.RemoveVm, { vmId: "vm-gone" }, { scopeId: "host-b" })).rejects.toMatchObject({
      code: "NOT_FOUND",
    });
  });

  it("vm lifecycle: each host serves only its own VMs", async () => {
    await applyVm("host-b", "vm-on-b", POWER_STATE_OFF, 1);
    await waitForState("vm-on-b", VM_STATE_STOPPED);
    expect(statusEvents.get("vm-on-b")?.every((s) => s.hostId === "host-b")).toBe(true);
    const beatA = await heartbeatAfter("host-a", Date.now());
    const beatB = await heartbeatAfter("host-b", Date.now());
    expect(beatA.vms.map((s) => s.vmId)).not.toContain("vm-on-b");
    expect(beatB.vms.map((s) => s.vmId)).toContain("vm-on-b");
    await expect(client.call(hostAgentService.RemoveVm, { vmId: "vm-on-b" }, { scopeId: "host-a" })).rejects.toMatchObject({
      code: "NOT_FOUND",
    });
  });
});

describe("limits", () => {
  it("limits: a host refuses a VM beyond its limit with RESOURCE_EXHAUSTED, and still takes known ones", async () => {
    const bus = await connectTestBus(nats.url, { processId: "agent-small" });
    const logger = createLogger({ service: "host-agent", id: "agent-small", level: "silent" });
    const small = await HostAgent.start({ bus, logger, config: config(["host-small"], "agent-small"), vmsPerHostMax: 2 });
    try {
      await applyVm("host-small", "vm-s1", POWER_STATE_OFF, 1);
      await applyVm("host-small", "vm-s2", POWER_STATE_OFF, 1);
      await expect(applyVm("host-small", "vm-s3", POWER_STATE_OFF, 1)).rejects.toMatchObject({ code: "RESOURCE_EXHAUSTED" });
      expect((await applyVm("host-small", "vm-s2", POWER_STATE_OFF, 2)).status?.vmId).toBe("vm-s2");
      expect(statusEvents.has("vm-s3")).toBe(false);
      expect(small.health().details).toMatchObject({ vms: 2 });
    } finally {
      await small.stop();
      await bus.close();
    }
  });
});

describe("bad input", () => {
  const encodeApply = (fields: v1.ApplyVmRequest.$Properties): Uint8Array => v1.ApplyVmRequest.encode(fields).finish();
  const encodeRemove = (fields: v1.RemoveVmRequest.$Properties): Uint8Array => v1.RemoveVmRequest.encode(fields).finish();
  const goodSpec = { vcpus: 2, memoryMib: 1024, bootVolume: "vol-boot" };
  // Every ApplyVm case names the VM that is running, with a newer generation
  // and OFF, so a request that slipped past validation would stop it.
  const apply = (fields: Partial<v1.ApplyVmRequest.$Properties>): Uint8Array =>
    encodeApply({ vmId: "vm-keep", spec: goodSpec, powerState: POWER_STATE_OFF, generation: 99, ...fields });
  const garbage = new Uint8Array([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01]);

  const cases: { name: string; method: "ApplyVm" | "RemoveVm"; payload: Uint8Array; code: string; status: string }[] = [
    { name: "malformed bytes", method: "ApplyVm", payload: garbage, code: "INVALID_ARGUMENT", status: "400" },
    { name: "empty message", method: "ApplyVm", payload: new Uint8Array(0), code: "INVALID_ARGUMENT", status: "400" },
    ...["vm.keep", "*", ">", "vm-keep.>", "VM-KEEP", "-vm", "vm keep", "x".repeat(64)].map((vmId) => ({
      name: `vm_id ${JSON.stringify(vmId)}`,
      method: "ApplyVm" as const,
      payload: apply({ vmId }),
      code: "INVALID_ARGUMENT",
      status: "400",
    })),
    { name: "no spec", method: "ApplyVm", payload: apply({ spec: null }), code: "INVALID_ARGUMENT", status: "400" },
    { name: "vcpus 0", method: "ApplyVm", payload: apply({ spec: { ...goodSpec, vcpus: 0 } }), code: "INVALID_ARGUMENT", status: "400" },
    {
      name: "vcpus over the limit",
      method: "ApplyVm",
      payload: apply({ spec: { ...goodSpec, vcpus: vcpusPerVmMax + 1 } }),
      code: "INVALID_ARGUMENT",
      status: "400",
    },
    { name: "memory 0", method: "ApplyVm", payload: apply({ spec: { ...goodSpec, memoryMib: 0 } }), code: "INVALID_ARGUMENT", status: "400" },
    ...["vol.boot", "*", ">", ""].map((bootVolume) => ({
      name: `boot_volume ${JSON.stringify(bootVolume)}`,
      method: "ApplyVm" as const,
      payload: apply({ spec: { ...goodSpec, bootVolume } }),
      code: "INVALID_ARGUMENT",
      status: "400",
    })),
    { name: "power state unspecified", method: "ApplyVm", payload: apply({ powerState: 0 }), code: "INVALID_ARGUMENT", status: "400" },
    {
      name: "power state unknown",
      method: "ApplyVm",
      payload: apply({ powerState: 99 as v1.PowerState }),
      code: "INVALID_ARGUMENT",
      status: "400",
    },
    { name: "generation 0", method: "ApplyVm", payload: apply({ generation: 0 }), code: "INVALID_ARGUMENT", status: "400" },
    { name: "malformed bytes", method: "RemoveVm", payload: garbage, code: "INVALID_ARGUMENT", status: "400" },
    { name: "empty message", method: "RemoveVm", payload: new Uint8Array(0), code: "INVALID_ARGUMENT", status: "400" },
    ...["vm.keep", "*", ">", "VM-KEEP"].map((vmId) => ({
      name: `vm_id ${JSON.stringify(vmId)}`,
      method: "RemoveVm" as const,
      payload: encodeRemove({ vmId }),
      code: "INVALID_ARGUMENT",
      status: "400",
    })),
    { name: "unknown vm", method: "RemoveVm", payload: encodeRemove({ vmId: "vm-unknown" }), code: "NOT_FOUND", status: "404" },
  ];

  it("bad input: every endpoint answers a typed error in the service error headers and changes nothing", async () => {
    await applyVm("host-b", "vm-keep", POWER_STATE_ON, 1);
    await waitForState("vm-keep", VM_STATE_RUNNING);
    // Let every other VM on host-b settle, so the heartbeat list can only change through the cases.
    await sleep(1_500);
    const before = vmsOf(await heartbeatAfter("host-b", Date.now()));
    const eventsBefore = [...statusEvents.values()].reduce((n, list) => n + list.length, 0);

    for (const c of cases) {
      const reply = await raw.request(`simdc.host.host-b.${c.method}`, c.payload, { timeout: 5_000 });
      expect(reply.headers?.get("Nats-Service-Error-Code"), `${c.method} ${c.name}`).toBe(c.status);
      expect(reply.headers?.get("Nats-Service-Error"), `${c.method} ${c.name}`).toMatch(new RegExp(`^${c.code}: `));
    }

    await sleep(300);
    const eventsAfter = [...statusEvents.values()].reduce((n, list) => n + list.length, 0);
    expect(eventsAfter).toBe(eventsBefore);
    expect(vmsOf(await heartbeatAfter("host-b", Date.now()))).toEqual(before);
    expect(before).toContainEqual({ vmId: "vm-keep", state: VM_STATE_RUNNING, hostId: "host-b", observedGeneration: 1 });
  });
});
