// Proves that volumes are reconciled against their SAN node, level-triggered:
// a volume created or deleted while its node does not answer stays CREATING
// (or DELETING) and gets there once the node answers, across a controller
// restart too; the node's inventory finds a backing volume nobody wants and
// deletes it (only that incarnation) with a VOLUME_ORPHANED event, and a
// READY volume whose file is gone becomes FAILED with a VOLUME_MISSING
// event; no VM boots from a volume that is failed or being deleted.

import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { computeService, controllerService, storageService, type Bus } from "@simdc/bus";
import { createLogger, wallClock } from "@simdc/common";
import { simdc } from "@simdc/proto";
import { connectTestBus, eventually, startTestNats, StandInHost, StandInSanNode, type TestNats } from "@simdc/testkit";
import { Controller } from "./controller.js";
import type { ControllerConfig } from "./settings.js";

import v1 = simdc.v1;

const heartbeatIntervalMs = 100;
const inventoryIntervalMs = 200;
const { VOLUME_STATE_CREATING, VOLUME_STATE_READY, VOLUME_STATE_DELETING, VOLUME_STATE_FAILED } = v1.VolumeState;

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
    inventoryIntervalMs,
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

async function datacenter() {
  prefixCounter += 1;
  const prefix = `vol${prefixCounter}`;
  const bus = await connectTestBus(nats.url, { prefix });
  cleanups.push(() => bus.close());
  let controller = await startController(prefix);
  await serving(bus);
  const san = new StandInSanNode(bus, "san-1");
  await san.start(heartbeatIntervalMs);
  cleanups.push(() => san.stop());
  const host = new StandInHost(bus, "host-1");
  await host.start(heartbeatIntervalMs);
  cleanups.push(() => host.stop());
  const events: v1.Event[] = [];
  bus.subscribe(bus.subjects.event("volume", "*", "*"), v1.Event, (e) => void events.push(e));
  await bus.flush();
  return {
    bus,
    san,
    events,
    async restartController(): Promise<void> {
      await controller.stop();
      controller = await startController(prefix);
      await serving(bus);
    },
  };
}

async function volume(bus: Bus, volumeId: string): Promise<v1.Volume> {
  return (await bus.call(storageService.GetVolume, { volumeId })).volume as v1.Volume;
}

/** Resolves once the SAN node has been asked (and failed) `count` more times. */
async function failedCalls(san: StandInSanNode, bus: Bus, count: number): Promise<void> {
  let calls = 0;
  const sub = bus.subscribe(`${bus.subjects.prefix}.san.${san.nodeId}.*`, v1.ListBackingVolumesRequest, () => void (calls += 1));
  await bus.flush();
  await eventually(`${count} calls to ${san.nodeId}`, () => (calls >= count ? true : undefined));
  sub.unsubscribe();
}

describe("volumes", () => {
  it("volumes: a volume created while its SAN node does not answer stays CREATING, and becomes READY once the node answers", async () => {
    const { bus, san, events } = await datacenter();
    san.answering = false;
    const created = await bus.call(storageService.CreateVolume, { name: "vol-1", sizeMib: 8, mutation: { waitTimeoutMs: 300 } });
    expect(created.volume).toMatchObject({ id: "vol-1", state: VOLUME_STATE_CREATING, sanNodeId: "san-1" });
    // The reconciler keeps trying; the volume stays CREATING meanwhile.
    await failedCalls(san, bus, 3);
    expect((await volume(bus, "vol-1")).state).toBe(VOLUME_STATE_CREATING);
    expect(san.volumes.has("vol-1")).toBe(false);
    // A VM may boot from a volume still being created: it is on its way.
    await bus.call(computeService.CreateVm, { name: "vm-1", spec: { vcpus: 1, memoryMib: 64, bootVolume: "vol-1" } });

    san.answering = true;
    await eventually("vol-1 ready", async () => ((await volume(bus, "vol-1")).state === VOLUME_STATE_READY ? true : undefined), 15_000);
    expect(san.volumes.get("vol-1")).toMatchObject({ sizeMib: 8, incarnation: created.volume?.incarnation });
    await eventually("the ready event", () => (events.some((e) => e.kind === v1.EventKind.EVENT_KIND_VOLUME_STATE_CHANGED && /is ready$/.test(e.message)) ? true : undefined));
  });

  it("volumes: a CREATING volume becomes READY across a controller restart", async () => {
    const { bus, san, restartController } = await datacenter();
    san.answering = false;
    const created = await bus.call(storageService.CreateVolume, { name: "vol-1", sizeMib: 8, mutation: { waitTimeoutMs: 300 } });
    expect(created.volume?.state).toBe(VOLUME_STATE_CREATING);
    await restartController();
    await failedCalls(san, bus, 2);
    expect(await volume(bus, "vol-1")).toMatchObject({ state: VOLUME_STATE_CREATING, incarnation: created.volume?.incarnation });
    san.answering = true;
    await eventually("vol-1 ready", async () => ((await volume(bus, "vol-1")).state === VOLUME_STATE_READY ? true : undefined), 15_000);
    expect(san.volumes.get("vol-1")?.incarnation).toBe(created.volume?.incarnation);
  });

  it("volumes: a volume deleted while its node does not answer stays DELETING, boots nothing, and goes once the node answers", async () => {
    const { bus, san, events } = await datacenter();
    await bus.call(storageService.CreateVolume, { name: "vol-1", sizeMib: 8 });
    san.answering = false;
    await bus.call(storageService.DeleteVolume, { volumeId: "vol-1", mutation: { waitTimeoutMs: 300 } });
    expect((await volume(bus, "vol-1")).state).toBe(VOLUME_STATE_DELETING);
    await expect(bus.call(computeService.CreateVm, { name: "vm-1", spec: { vcpus: 1, memoryMib: 64, bootVolume: "vol-1" } })).rejects.toMatchObject({
      code: "FAILED_PRECONDITION",
      message: "boot volume vol-1 is deleting",
    });
    // A name being deleted is not free yet.
    await expect(bus.call(storageService.CreateVolume, { name: "vol-1", sizeMib: 8 })).rejects.toMatchObject({ code: "ALREADY_EXISTS" });
    await failedCalls(san, bus, 2);
    expect(san.volumes.has("vol-1")).toBe(true);
    san.answering = true;
    await eventually("vol-1 gone", () => bus.call(storageService.GetVolume, { volumeId: "vol-1" }).then(() => undefined, (e: { code: string }) => (e.code === "NOT_FOUND" ? true : undefined)), 15_000);
    expect(san.volumes.has("vol-1")).toBe(false);
    await eventually("the deleted event", () => (events.some((e) => e.kind === v1.EventKind.EVENT_KIND_VOLUME_DELETED && e.objectId === "vol-1") ? true : undefined));
  });

  it("volumes: a backing volume nobody wants is deleted, only that incarnation, with a VOLUME_ORPHANED event", async () => {
    const { bus, san, events } = await datacenter();
    const { stateId } = await bus.call(controllerService.GetControllerStatus, {});
    const wanted = await bus.call(storageService.CreateVolume, { name: "vol-1", sizeMib: 8 });
    // Left behind on the node by a create of this datacenter state that was never recorded, or was deleted since.
    san.volumes.set("vol-9", { sizeMib: 4, incarnation: "not-wanted", stateId });
    await eventually("the orphan deleted", () => (san.volumes.has("vol-9") ? undefined : true));
    const orphaned = await eventually("the orphaned event", () => events.find((e) => e.kind === v1.EventKind.EVENT_KIND_VOLUME_ORPHANED));
    expect(orphaned).toMatchObject({ objectId: "vol-9", message: expect.stringMatching(/holds volume vol-9 \(incarnation not-wanted\) that nobody wants/) });
    // It was not adopted, and the wanted volume was left alone.
    await expect(bus.call(storageService.GetVolume, { volumeId: "vol-9" })).rejects.toMatchObject({ code: "NOT_FOUND" });
    expect(san.volumes.get("vol-1")?.incarnation).toBe(wanted.volume?.incarnation);
    expect((await volume(bus, "vol-1")).state).toBe(VOLUME_STATE_READY);
  });

  it("volumes: a READY volume whose file is gone from its node becomes FAILED with a VOLUME_MISSING event, and boots no VM", async () => {
    const { bus, san, events } = await datacenter();
    await bus.call(storageService.CreateVolume, { name: "vol-1", sizeMib: 8 });
    await bus.call(storageService.CreateVolume, { name: "vol-2", sizeMib: 8 });
    san.volumes.delete("vol-1");
    const failed = await eventually("vol-1 failed", async () => {
      const v = await volume(bus, "vol-1");
      return v.state === VOLUME_STATE_FAILED ? v : undefined;
    });
    expect(failed.reason).toMatchObject({ code: v1.ErrorCode.ERROR_CODE_NOT_FOUND, message: "its backing file is gone from san-1" });
    const missing = await eventually("the missing event", () => events.find((e) => e.kind === v1.EventKind.EVENT_KIND_VOLUME_MISSING));
    expect(missing).toMatchObject({ objectId: "vol-1", message: "volume vol-1 is READY but SAN node san-1 no longer holds it" });
    expect((await volume(bus, "vol-2")).state).toBe(VOLUME_STATE_READY);
    await expect(bus.call(computeService.CreateVm, { name: "vm-1", spec: { vcpus: 1, memoryMib: 64, bootVolume: "vol-1" } })).rejects.toMatchObject({
      code: "FAILED_PRECONDITION",
      message: "boot volume vol-1 is failed",
    });
    // A failed volume can be deleted; the node holds nothing of it, which is what deleting wants.
    await bus.call(storageService.DeleteVolume, { volumeId: "vol-1" });
    await expect(bus.call(storageService.GetVolume, { volumeId: "vol-1" })).rejects.toMatchObject({ code: "NOT_FOUND" });
  });
});
