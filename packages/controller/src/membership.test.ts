// Proves how the controller judges the members that speak to it: a host or
// SAN node it does not know (never registered, or forgotten) is asked to
// register again, and does; heartbeats that name another host than their
// subject, come from a stale boot or report a generation never assigned are
// refused, counted in messagesRefused, and change nothing (they keep no
// silent host alive); and an id held by another live agent cannot be taken,
// while one whose holder is gone can.

import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { computeService, controllerService, endpoint, hostAgentService, hostScope, hostService, storageService, type Bus } from "@simdc/bus";
import { createLogger, wallClock, type Timer } from "@simdc/common";
import { simdc } from "@simdc/proto";
import { connectTestBus, eventually, startTestNats, StandInHost, StandInSanNode, type TestNats } from "@simdc/testkit";
import { Controller } from "./controller.js";
import type { ControllerConfig } from "./settings.js";

import v1 = simdc.v1;

const heartbeatIntervalMs = 100;
const fenced = { fenced: { epochOf: () => 0 }, bindOnly: true };
const capacity = { pcpus: 4, memoryMib: 4096, nics: 1 };

let nats: TestNats;
let prefixCounter = 0;
const cleanups: (() => Promise<void> | void)[] = [];

beforeAll(async () => {
  nats = await startTestNats();
});

afterAll(async () => {
  await nats?.dispose();
});

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function startController(prefix: string): Promise<void> {
  const config: ControllerConfig = {
    controllerId: "controller-1",
    heartbeatIntervalMs,
    heartbeatMissesMax: 3,
    metricsIntervalMs: 10_000,
    cpuOvercommit: 4,
    memoryOvercommit: 1.5,
    kvReplicas: 1,
    leaseTtlMs: 1000,
    inventoryIntervalMs: 30_000,
    documentChunkBytes: 512 * 1024,
  };
  const bus = await connectTestBus(nats.url, { prefix, processId: config.controllerId });
  const logger = createLogger({ service: "controller", id: config.controllerId, level: process.env["LOG_LEVEL"] ?? "silent" });
  const controller = await Controller.start(bus, config, wallClock, logger, 1);
  cleanups.push(async () => {
    await controller.stop();
    await bus.close();
  });
}

async function status(bus: Bus): Promise<v1.GetControllerStatusResponse> {
  return bus.call(controllerService.GetControllerStatus, {}, { timeoutMs: 500 });
}

async function datacenter() {
  prefixCounter += 1;
  const prefix = `mem${prefixCounter}`;
  const bus = await connectTestBus(nats.url, { prefix });
  cleanups.push(() => bus.close());
  await startController(prefix);
  await eventually("a controller serving", () => status(bus), 15_000);
  const host = async (id: string): Promise<StandInHost> => {
    const h = new StandInHost(bus, id, capacity);
    await h.start(heartbeatIntervalMs);
    cleanups.push(() => h.stop());
    return h;
  };
  return { bus, host };
}

/** Publishes a heartbeat on `subjectHostId`'s subject every interval until the test ends. */
function beatAs(bus: Bus, subjectHostId: string, beat: v1.HostHeartbeat.$Properties): void {
  let seq = 0;
  const timer: Timer = wallClock.every(heartbeatIntervalMs / 2, () => {
    seq += 1;
    bus.publish(bus.subjects.event("host", subjectHostId, "heartbeat"), v1.HostHeartbeat, { ...beat, seq });
  });
  cleanups.push(() => timer.cancel());
}

/** Publishes `beats` as `agentId`'s batch every interval until the test ends (each beat numbered anew). */
function batchAs(bus: Bus, agentId: string, beats: v1.HostHeartbeat.$Properties[]): void {
  let seq = 0;
  const timer: Timer = wallClock.every(heartbeatIntervalMs / 2, () => {
    seq += 1;
    bus.publish(bus.subjects.event("agent", agentId, "heartbeats"), v1.HostHeartbeats, { beats: beats.map((b) => ({ ...b, seq })) });
  });
  cleanups.push(() => timer.cancel());
}

async function hostState(bus: Bus, hostId: string): Promise<v1.Host> {
  return (await bus.call(hostService.GetHost, { hostId })).host as v1.Host;
}

async function disconnected(bus: Bus, hostId: string): Promise<void> {
  await eventually(`${hostId} disconnected`, async () => ((await hostState(bus, hostId)).state === v1.HostState.HOST_STATE_DISCONNECTED ? true : undefined));
}

describe("membership", () => {
  it("membership: a host that heartbeats before it registers is refused, asked to register, and is known once it does", async () => {
    const { bus } = await datacenter();
    const refusedBefore = (await status(bus)).messagesRefused;
    const asked: string[] = [];
    // A host agent of its own: it answers Reregister by registering.
    await bus.serve({ role: "host", scopeId: hostScope("agent-7", "host-7"), description: "test host" }, [
      endpoint(hostAgentService.Reregister, async (_req, msg) => {
        asked.push(msg.subject);
        await bus.call(hostService.RegisterHost, { hostId: "host-7", agentId: "agent-7", capacity, bootId: "boot-7" }, { scopeId: "host-7" });
        return {};
      }),
    ]);
    await expect(bus.call(hostService.GetHost, { hostId: "host-7" })).rejects.toMatchObject({ code: "NOT_FOUND" });
    beatAs(bus, "host-7", { hostId: "host-7", agentId: "agent-7", bootId: "boot-7" });
    await eventually("host-7 asked to register", () => (asked.length > 0 ? true : undefined));
    expect(asked[0]).toBe(`${bus.subjects.prefix}.host.agent-7.host-7.Reregister`);
    const host = await eventually("host-7 registered and connected", async () => {
      const h = await bus.call(hostService.GetHost, { hostId: "host-7" }).then((r) => r.host, () => undefined);
      return h?.state === v1.HostState.HOST_STATE_CONNECTED ? h : undefined;
    });
    expect(host).toMatchObject({ agentId: "agent-7", bootId: "boot-7" });
    expect((await status(bus)).messagesRefused).toBeGreaterThan(refusedBefore);
    // Once known, its heartbeats are taken: it is asked no more.
    const askedOnce = asked.length;
    const refusedOnce = (await status(bus)).messagesRefused;
    const seenAt = host.lastHeartbeatMs ?? 0;
    await eventually("five more heartbeats taken", async () => ((await hostState(bus, "host-7")).lastHeartbeatMs > seenAt + 5 * (heartbeatIntervalMs / 2) ? true : undefined));
    expect(asked.length).toBe(askedOnce);
    expect((await status(bus)).messagesRefused).toBe(refusedOnce);
  });

  it("membership: a host whose record the controller lost registers again when asked, and keeps its VMs", async () => {
    const { bus, host } = await datacenter();
    const san = new StandInSanNode(bus, "san-1");
    await san.start(heartbeatIntervalMs);
    cleanups.push(() => san.stop());
    await bus.call(storageService.CreateVolume, { name: "vol-1", sizeMib: 8 });
    const h1 = await host("host-1");
    await bus.call(computeService.CreateVm, { name: "vm-1", spec: { vcpus: 1, memoryMib: 64, bootVolume: "vol-1" } });
    await eventually("vm-1 on host-1", () => (h1.vms.has("vm-1") ? true : undefined));
    const hosts = await bus.bucket("hosts", v1.Host, fenced);
    await hosts.delete("host-1");
    await eventually("host-1 known again", () => hosts.get("host-1").then((h) => (h ? h.value : undefined)));
    expect(await hostState(bus, "host-1")).toMatchObject({ state: v1.HostState.HOST_STATE_CONNECTED, agentId: "agent-host-1", bootId: h1.bootId });
    expect(h1.vms.get("vm-1")?.state).toBe(v1.VmState.VM_STATE_RUNNING);
    expect(h1.removed).toEqual([]);

    // The same for a SAN node.
    const nodes = await bus.bucket("san-nodes", v1.SanNode, fenced);
    await nodes.delete("san-1");
    await eventually("san-1 known again", () => nodes.get("san-1").then((n) => (n?.value.connected ? n.value : undefined)));
    expect((await bus.call(storageService.ListSanNodes, {})).nodes.map((n) => [n.id, n.connected])).toEqual([["san-1", true]]);
  });

  it("membership: a heartbeat that names another host than its subject is refused, counted, and keeps nobody alive", async () => {
    const { bus, host } = await datacenter();
    const h1 = await host("host-1");
    await host("host-2");
    const refusedBefore = (await status(bus)).messagesRefused;
    h1.paused = true;
    // On host-1's subject, with host-1's own agent and boot: only the payload's host id is wrong.
    beatAs(bus, "host-1", { hostId: "host-2", agentId: h1.agentId, bootId: h1.bootId, realizedGeneration: 1 });
    await disconnected(bus, "host-1");
    expect((await status(bus)).messagesRefused).toBeGreaterThanOrEqual(refusedBefore + 3);
    expect(await hostState(bus, "host-2")).toMatchObject({ state: v1.HostState.HOST_STATE_CONNECTED });
  });

  it("membership: in an agent's batch of heartbeats, a beat keeps alive only a host that agent registered", async () => {
    const { bus, host } = await datacenter();
    const h1 = await host("host-1");
    const h2 = await host("host-2");
    const refusedBefore = (await status(bus)).messagesRefused;
    h1.paused = true;
    h2.paused = true;
    // host-1's own agent speaks for it; another agent speaks for host-2, and
    // for host-1 under a payload naming host-1's agent; a beat names no valid host.
    batchAs(bus, h1.agentId, [{ hostId: "host-1", bootId: h1.bootId, realizedGeneration: h1.realizedGeneration }, { hostId: "not a host", bootId: "x" }]);
    batchAs(bus, "agent-liar", [
      { hostId: "host-2", bootId: h2.bootId },
      { hostId: "host-1", agentId: h1.agentId, bootId: h1.bootId },
    ]);
    await disconnected(bus, "host-2");
    expect((await status(bus)).messagesRefused).toBeGreaterThanOrEqual(refusedBefore + 9);
    expect(await hostState(bus, "host-1")).toMatchObject({ state: v1.HostState.HOST_STATE_CONNECTED, agentId: h1.agentId });
    expect(await hostState(bus, "host-2")).toMatchObject({ state: v1.HostState.HOST_STATE_DISCONNECTED, agentId: h2.agentId });
  });

  it("membership: a heartbeat from a stale boot is refused, counted, and keeps nobody alive", async () => {
    const { bus, host } = await datacenter();
    const h1 = await host("host-1");
    const refusedBefore = (await status(bus)).messagesRefused;
    h1.paused = true;
    beatAs(bus, "host-1", { hostId: "host-1", agentId: h1.agentId, bootId: "an-earlier-boot" });
    await disconnected(bus, "host-1");
    expect((await status(bus)).messagesRefused).toBeGreaterThanOrEqual(refusedBefore + 3);
    expect((await hostState(bus, "host-1")).bootId).toBe(h1.bootId);
  });

  it("membership: a realized generation that was never assigned is refused and recorded nowhere", async () => {
    const { bus, host } = await datacenter();
    const h1 = await host("host-1");
    await bus.call(hostService.GetSyncStatus, { waitHosts: true });
    const before = await hostState(bus, "host-1");
    const syncBefore = await bus.call(hostService.GetSyncStatus, {});
    expect(before.realizedGeneration).toBe(before.desiredGeneration);
    const refusedBefore = (await status(bus)).messagesRefused;
    // The host is silent; only beats from the future speak for it.
    h1.paused = true;
    beatAs(bus, "host-1", { hostId: "host-1", agentId: h1.agentId, bootId: h1.bootId, realizedGeneration: syncBefore.desiredGeneration + 1000 });
    await eventually("three beats refused", async () => ((await status(bus)).messagesRefused >= refusedBefore + 3 ? true : undefined));
    expect((await hostState(bus, "host-1")).realizedGeneration).toBe(before.realizedGeneration);
    const syncAfter = await bus.call(hostService.GetSyncStatus, {});
    expect(syncAfter).toMatchObject({ desiredGeneration: syncBefore.desiredGeneration, realizedGeneration: syncBefore.realizedGeneration });
  });

  it("membership: RegisterHost for an id held by another live agent is FAILED_PRECONDITION and changes nothing, until that agent is gone", async () => {
    const { bus, host } = await datacenter();
    const h1 = await host("host-1");
    const hosts = await bus.bucket("hosts", v1.Host, fenced);
    const stored = (await hosts.get("host-1"))!;
    const refusedBefore = (await status(bus)).messagesRefused;
    const takeover = { hostId: "host-1", agentId: "agent-other", capacity, bootId: "boot-other" };
    await expect(bus.call(hostService.RegisterHost, takeover, { scopeId: "host-1" })).rejects.toMatchObject({
      code: "FAILED_PRECONDITION",
      message: "host host-1 is held by agent agent-host-1, which is alive; agent agent-other may take it once that one is gone",
    });
    expect((await hosts.get("host-1"))!.revision).toBe(stored.revision);
    expect(await hostState(bus, "host-1")).toMatchObject({ agentId: "agent-host-1", bootId: h1.bootId });
    expect((await status(bus)).messagesRefused).toBe(refusedBefore + 1);
    // Its own agent may register it again (a new boot) at any time.
    await bus.call(hostService.RegisterHost, { hostId: "host-1", agentId: "agent-host-1", capacity, bootId: h1.bootId }, { scopeId: "host-1" });

    h1.paused = true;
    await disconnected(bus, "host-1");
    const taken = await bus.call(hostService.RegisterHost, takeover, { scopeId: "host-1" });
    expect(taken.host).toMatchObject({ id: "host-1", agentId: "agent-other", bootId: "boot-other", state: v1.HostState.HOST_STATE_CONNECTED });
  });
});
