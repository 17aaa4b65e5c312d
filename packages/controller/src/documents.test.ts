// Proves how desired state reaches hosts as documents and how far a caller
// can wait for it (ovn-nbctl's --wait): a VM shows in exactly its host's
// document; a restarted controller rewrites no document its hosts have
// realized and shows their VMs UNKNOWN until it has heard them;
// WAIT_FOR_CONTROLLER returns once the document is written,
// WAIT_FOR_HOSTS only once the host realized it, and a live host that
// applies nothing holds every WAIT_FOR_HOSTS back until the deadline, named
// in the error, while a dead one does not.

import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { computeService, controllerService, hostService, storageService, type Bucket, type Bus } from "@simdc/bus";
import { createLogger, wallClock } from "@simdc/common";
import { simdc } from "@simdc/proto";
import { connectTestBus, eventually, startTestNats, StandInHost, StandInSanNode, type TestNats } from "@simdc/testkit";
import { Controller } from "./controller.js";
import type { ControllerConfig } from "./settings.js";

import v1 = simdc.v1;

const heartbeatIntervalMs = 100;
const spec = { vcpus: 1, memoryMib: 64, bootVolume: "vol-1" };
const { WAIT_FOR_NONE, WAIT_FOR_CONTROLLER, WAIT_FOR_HOSTS } = v1.WaitFor;

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

/** A controller in this process, on its own connection (closed when it stops). */
async function startController(prefix: string): Promise<{ stop(): Promise<void> }> {
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
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    await controller.stop();
    await bus.close();
  };
  cleanups.push(stop);
  return { stop };
}

async function serving(bus: Bus): Promise<v1.GetControllerStatusResponse> {
  return eventually("a controller serving", () => bus.call(controllerService.GetControllerStatus, {}, { timeoutMs: 500 }), 15_000);
}

/** A fresh datacenter with a controller, a SAN node holding vol-1, and the given stand-in hosts. */
async function datacenter(hostIds: string[]) {
  prefixCounter += 1;
  const prefix = `doc${prefixCounter}`;
  const bus = await connectTestBus(nats.url, { prefix });
  cleanups.push(() => bus.close());
  let controller = await startController(prefix);
  await serving(bus);
  const san = new StandInSanNode(bus, "san-1");
  await san.start(heartbeatIntervalMs);
  cleanups.push(() => san.stop());
  await bus.call(storageService.CreateVolume, { name: "vol-1", sizeMib: 16 });
  const hosts = new Map<string, StandInHost>();
  for (const id of hostIds) {
    const h = new StandInHost(bus, id);
    await h.start(heartbeatIntervalMs);
    cleanups.push(() => h.stop());
    hosts.set(id, h);
  }
  const docs: Bucket<v1.HostDocument> = await bus.bucket("docs", v1.HostDocument, { fenced: { epochOf: () => 0 }, bindOnly: true });
  return {
    bus,
    hosts,
    docs,
    /** Stops the controller and starts another of the same id, as a restarted process. */
    async restartController(): Promise<void> {
      await controller.stop();
      controller = await startController(prefix);
      await serving(bus);
    },
  };
}

async function getHost(bus: Bus, hostId: string): Promise<v1.Host> {
  return (await bus.call(hostService.GetHost, { hostId })).host as v1.Host;
}

async function vmState(bus: Bus, vmId: string): Promise<v1.VmStatus> {
  return (await bus.call(computeService.GetVm, { vmId })).vm?.status as v1.VmStatus;
}

/** Resolves once every VM named runs, as the API shows it. */
async function allRunning(bus: Bus, vmIds: string[]): Promise<void> {
  await eventually(`${vmIds.join(", ")} running`, async () => {
    for (const id of vmIds) if ((await vmState(bus, id)).state !== v1.VmState.VM_STATE_RUNNING) return undefined;
    return true;
  });
}

describe("documents", () => {
  it("documents: a created VM shows in exactly its host's document, at the generation its create returned", async () => {
    const { bus, docs } = await datacenter(["host-1", "host-2", "host-3"]);
    const placed = new Map<string, { hostId: string; generation: number }>();
    for (const name of ["vm-a", "vm-b", "vm-c", "vm-d"]) {
      const { vm, result } = await bus.call(computeService.CreateVm, { name, spec, mutation: { wait: WAIT_FOR_CONTROLLER } });
      placed.set(name, { hostId: vm?.hostId ?? "", generation: result?.configGeneration ?? 0 });
    }
    // Least loaded first, ties to the lower id: the fourth VM goes back to host-1.
    expect([...placed.values()].map((p) => p.hostId)).toEqual(["host-1", "host-2", "host-3", "host-1"]);
    const { stateId } = await bus.call(controllerService.GetControllerStatus, {});
    const stored = await docs.loadAll(() => undefined);
    stored.delete("_barrier");
    expect([...stored.keys()].sort()).toEqual(["agent-host-1.host-1.0", "agent-host-2.host-2.0", "agent-host-3.host-3.0"]);
    for (const [key, { value: doc }] of stored) {
      expect(key).toBe(`agent-${doc.hostId}.${doc.hostId}.0`);
      expect(doc).toMatchObject({ stateId, chunkIndex: 0, chunkCount: 1 });
    }
    for (const [name, { hostId, generation }] of placed) {
      const holding = [...stored.values()].filter(({ value }) => value.vms.some((vm) => vm.vmId === name)).map(({ value }) => value.hostId);
      expect(holding, name).toEqual([hostId]);
      expect(generation, name).toBeGreaterThan(0);
    }
    // A host's document carries the generation of the last change that reached it.
    expect(stored.get("agent-host-1.host-1.0")?.value.generation).toBe(placed.get("vm-d")?.generation);
    expect(stored.get("agent-host-2.host-2.0")?.value.generation).toBe(placed.get("vm-b")?.generation);
    const host1 = stored.get("agent-host-1.host-1.0")!.value;
    expect(host1.vms.map((vm) => vm.vmId)).toEqual(["vm-a", "vm-d"]);
    const { volume } = await bus.call(storageService.GetVolume, { volumeId: "vol-1" });
    expect(host1.vms[0]).toMatchObject({ generation: 1, powerState: v1.PowerState.POWER_STATE_ON, bootVolume: { volumeId: "vol-1", sanNodeId: "san-1", incarnation: volume?.incarnation } });
  });

  it("documents: a restarted controller rewrites no realized document, and shows VMs UNKNOWN until it heard their host, then RUNNING", async () => {
    const { bus, hosts, docs, restartController } = await datacenter(["host-1", "host-2"]);
    for (const name of ["vm-1", "vm-2", "vm-3"]) await bus.call(computeService.CreateVm, { name, spec });
    await allRunning(bus, ["vm-1", "vm-2", "vm-3"]);
    await bus.call(hostService.GetSyncStatus, { waitHosts: true });
    const written: string[] = [];
    let live = false;
    const following = await docs.follow({
      onChange: (change) => {
        if (live && change.key !== "_barrier") written.push(change.key);
      },
      onCorrupt: () => undefined,
    });
    cleanups.push(() => following.stop());
    live = true;
    for (const h of hosts.values()) h.stateRepliesHeld = true;
    const appliedBefore = [...hosts.values()].map((h) => h.applied.length);

    await restartController();
    // However long the hosts keep beating, the VMs stay UNKNOWN while the controller has not heard their state.
    const beats = new Map<string, number>();
    bus.subscribe(bus.subjects.event("host", "*", "heartbeat"), v1.HostHeartbeat, (beat) => void beats.set(beat.hostId, (beats.get(beat.hostId) ?? 0) + 1));
    const seen: v1.VmState[] = [];
    await eventually("five heartbeats of each host", async () => {
      for (const id of ["vm-1", "vm-2", "vm-3"]) {
        const status = await vmState(bus, id);
        seen.push(status.state);
        expect(status).toMatchObject({ state: v1.VmState.VM_STATE_UNKNOWN, reason: { message: expect.stringMatching(/^not heard from host host-\d since this controller started$/) } });
      }
      return Math.min(beats.get("host-1") ?? 0, beats.get("host-2") ?? 0) >= 5 ? true : undefined;
    });
    expect(new Set(seen)).toEqual(new Set([v1.VmState.VM_STATE_UNKNOWN]));

    for (const h of hosts.values()) h.stateRepliesHeld = false;
    await eventually("every VM running", async () => {
      let running = 0;
      for (const id of ["vm-1", "vm-2", "vm-3"]) {
        const { state } = await vmState(bus, id);
        seen.push(state);
        if (state === v1.VmState.VM_STATE_RUNNING) running += 1;
      }
      return running === 3 ? true : undefined;
    });
    // Never DEFINED, never anything but what the hosts told.
    expect(new Set(seen)).toEqual(new Set([v1.VmState.VM_STATE_UNKNOWN, v1.VmState.VM_STATE_RUNNING]));
    for (const h of hosts.values()) expect(h.stateRequests).toBeGreaterThan(0);
    // The new controller settled and synced, and wrote not one document: the hosts had them all.
    const sync = await bus.call(hostService.GetSyncStatus, { waitHosts: true, waitTimeoutMs: 5_000 });
    expect(sync.laggingCount).toBe(0);
    await bus.call(computeService.ListVms, {});
    expect(written).toEqual([]);
    expect([...hosts.values()].map((h) => h.applied.length)).toEqual(appliedBefore);
    // A change after the restart is written, to its host's document only.
    await bus.call(computeService.StopVm, { vmId: "vm-1", mutation: { wait: WAIT_FOR_CONTROLLER } });
    expect(written).toEqual([`agent-host-1.host-1.0`]);
  });
});

describe("sync", () => {
  it("sync: WAIT_FOR_HOSTS returns only once the host realized the change's generation", async () => {
    const { bus, hosts } = await datacenter(["host-1"]);
    const h1 = hosts.get("host-1")!;
    await bus.call(hostService.GetSyncStatus, { waitHosts: true });
    h1.documentsHeld = true;
    let answered = false;
    const call = bus.call(computeService.CreateVm, { name: "vm-1", spec, mutation: { wait: WAIT_FOR_HOSTS, waitTimeoutMs: 20_000 } }, { timeoutMs: 25_000 });
    void call.then(() => (answered = true));
    // The document is written, and the host holds it without applying it.
    const desired = await eventually("host-1's document written", async () => {
      const host = await getHost(bus, "host-1");
      return host.desiredGeneration > host.realizedGeneration ? host.desiredGeneration : undefined;
    });
    const waiting = bus.call(hostService.GetSyncStatus, { waitHosts: true, generation: desired, waitTimeoutMs: 20_000 }, { timeoutMs: 25_000 });
    // Five heartbeats of a host that applies nothing: the calls are still waiting.
    const beatsFrom = (await getHost(bus, "host-1")).lastHeartbeatMs;
    await eventually("five more heartbeats", async () => ((await getHost(bus, "host-1")).lastHeartbeatMs >= beatsFrom + 5 * heartbeatIntervalMs ? true : undefined));
    expect(answered).toBe(false);
    expect(h1.realizedGeneration).toBeLessThan(desired);

    h1.documentsHeld = false;
    const result = (await call).result as v1.MutationResult;
    expect(result).toMatchObject({ configGeneration: desired, replayed: false });
    expect(h1.realizedGeneration).toBeGreaterThanOrEqual(desired);
    const status = (await waiting) as v1.GetSyncStatusResponse;
    expect(status.realizedGeneration).toBeGreaterThanOrEqual(desired);
    expect((await bus.call(hostService.GetSyncStatus, {})).realizedGeneration).toBeGreaterThanOrEqual(result.configGeneration);
  });

  it("sync: WAIT_FOR_CONTROLLER returns the generation once the host's document carries it; WAIT_FOR_NONE returns none", async () => {
    const { bus, hosts, docs } = await datacenter(["host-1"]);
    hosts.get("host-1")!.documentsHeld = true;
    const none = await bus.call(computeService.CreateVm, { name: "vm-0", spec, mutation: { wait: WAIT_FOR_NONE } });
    expect(none.result?.configGeneration).toBe(0);
    const { vm, result } = await bus.call(computeService.CreateVm, { name: "vm-1", spec, mutation: { wait: WAIT_FOR_CONTROLLER } });
    const generation = result?.configGeneration ?? 0;
    expect(generation).toBeGreaterThan(0);
    // Already in KV when the call returned, though the host applied nothing.
    const doc = (await docs.get("agent-host-1.host-1.0"))!.value as v1.HostDocument;
    expect(doc.generation).toBeGreaterThanOrEqual(generation);
    expect(doc.vms.find((v) => v.vmId === "vm-1")?.incarnation).toBe(vm?.incarnation);
    expect(hosts.get("host-1")!.realizedGeneration).toBeLessThan(generation);
    const sync = (await bus.call(hostService.GetSyncStatus, {})) as v1.GetSyncStatusResponse;
    expect(sync.writtenGeneration).toBeGreaterThanOrEqual(generation);
    expect(sync.realizedGeneration).toBeLessThan(generation);
    expect(sync.lagging).toEqual([expect.objectContaining({ hostId: "host-1", desiredGeneration: doc.generation })]);
    // A change that alters no document is carried by the generation already written.
    const again = await bus.call(computeService.StartVm, { vmId: "vm-1", mutation: { wait: WAIT_FOR_CONTROLLER } });
    expect(again.result?.configGeneration).toBe(doc.generation);
  });

  it("sync: a live host that applies nothing holds WAIT_FOR_HOSTS back until the deadline, named in the error; a dead one does not", async () => {
    const { bus, hosts } = await datacenter(["host-1", "host-2"]);
    await bus.call(computeService.CreateVm, { name: "vm-1", spec });
    await bus.call(computeService.CreateVm, { name: "vm-2", spec });
    expect((await bus.call(computeService.GetVm, { vmId: "vm-2" })).vm?.hostId).toBe("host-2");
    await allRunning(bus, ["vm-1", "vm-2"]);
    const h2 = hosts.get("host-2")!;
    h2.documentsHeld = true;

    const started = Date.now();
    const onStale = await bus.call(computeService.StopVm, { vmId: "vm-2", mutation: { wait: WAIT_FOR_HOSTS, waitTimeoutMs: 800 } }).catch((e: unknown) => e);
    expect(Date.now() - started).toBeGreaterThanOrEqual(700);
    expect(onStale).toMatchObject({ code: "DEADLINE_EXCEEDED", message: expect.stringMatching(/not every live host realized generation \d+ within 800 ms: host-2 \(realized \d+ of \d+\)$/) });
    // The change was made all the same.
    expect((await bus.call(computeService.GetVm, { vmId: "vm-2" })).vm?.powerState).toBe(v1.PowerState.POWER_STATE_OFF);
    // A change on host-1 waits for the whole datacenter, so host-2 holds it back too.
    const onOther = await bus.call(computeService.StopVm, { vmId: "vm-1", mutation: { wait: WAIT_FOR_HOSTS, waitTimeoutMs: 800 } }).catch((e: unknown) => e);
    expect(onOther).toMatchObject({ code: "DEADLINE_EXCEEDED", message: expect.stringMatching(/: host-2 \(realized/) });
    expect(hosts.get("host-1")!.vms.get("vm-1")?.state).toBe(v1.VmState.VM_STATE_STOPPED);
    const sync = await bus.call(hostService.GetSyncStatus, {});
    expect(sync).toMatchObject({ liveHosts: 2, laggingCount: 1, lagging: [expect.objectContaining({ hostId: "host-2" })] });
    await expect(bus.call(hostService.GetSyncStatus, { waitHosts: true, waitTimeoutMs: 300 })).rejects.toMatchObject({ code: "DEADLINE_EXCEEDED", message: expect.stringMatching(/host-2/) });

    // Once host-2 stops beating it is not live, and holds nothing back.
    h2.paused = true;
    await eventually("host-2 disconnected", async () => {
      const { host } = await bus.call(hostService.GetHost, { hostId: "host-2" });
      return host?.state === v1.HostState.HOST_STATE_DISCONNECTED ? true : undefined;
    });
    const { result } = await bus.call(computeService.StartVm, { vmId: "vm-1", mutation: { wait: WAIT_FOR_HOSTS, waitTimeoutMs: 5_000 } });
    expect(hosts.get("host-1")!.realizedGeneration).toBeGreaterThanOrEqual(result?.configGeneration ?? Infinity);
    expect(await bus.call(hostService.GetSyncStatus, {})).toMatchObject({ liveHosts: 1, laggingCount: 0 });
  });
});
