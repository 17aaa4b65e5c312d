// Proves request ids: a create repeated with the same request id returns the
// first answer (marked replayed, the same incarnation) and acts once, whether
// the duplicate arrives while the first runs, after it, after a controller
// restart, or after the remembered answer was lost (the record names its
// request); the same id with another request is INVALID_ARGUMENT and
// changes nothing.

import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { computeService, controllerService, storageService, type Bus } from "@simdc/bus";
import { createLogger, wallClock } from "@simdc/common";
import { simdc } from "@simdc/proto";
import { connectTestBus, eventually, startTestNats, StandInHost, StandInSanNode, type TestNats } from "@simdc/testkit";
import { Controller } from "./controller.js";
import type { ControllerConfig } from "./settings.js";

import v1 = simdc.v1;

const heartbeatIntervalMs = 100;
const spec = { vcpus: 1, memoryMib: 64, bootVolume: "vol-1" };
const fenced = { fenced: { epochOf: () => 0 }, bindOnly: true };

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

async function serving(bus: Bus): Promise<void> {
  await eventually("a controller serving", () => bus.call(controllerService.GetControllerStatus, {}, { timeoutMs: 500 }), 15_000);
}

async function datacenter() {
  prefixCounter += 1;
  const prefix = `req${prefixCounter}`;
  const bus = await connectTestBus(nats.url, { prefix });
  cleanups.push(() => bus.close());
  let controller = await startController(prefix);
  await serving(bus);
  const san = new StandInSanNode(bus, "san-1");
  await san.start(heartbeatIntervalMs);
  cleanups.push(() => san.stop());
  await bus.call(storageService.CreateVolume, { name: "vol-1", sizeMib: 16 });
  for (const id of ["host-1", "host-2"]) {
    const h = new StandInHost(bus, id);
    await h.start(heartbeatIntervalMs);
    cleanups.push(() => h.stop());
  }
  const events: string[] = [];
  bus.subscribe(bus.subjects.allEvents(), v1.Event, (_e, subject) => {
    if (/\.(created|deleted)$/.test(subject)) events.push(subject);
  });
  await bus.flush();
  return {
    bus,
    san,
    events,
    vms: await bus.bucket("vms", v1.VmRecord, fenced),
    volumes: await bus.bucket("volumes", v1.VolumeRecord, fenced),
    requests: await bus.bucket("requests", v1.RequestRecord, fenced),
    async restartController(): Promise<void> {
      await controller.stop();
      controller = await startController(prefix);
      await serving(bus);
    },
  };
}

describe("request ids", () => {
  it("request ids: a repeated CreateVolume and CreateVm return the first answer, replayed, and act once", async () => {
    const { bus, san, events, vms, volumes } = await datacenter();
    const volumeRequest = { name: "vol-2", sizeMib: 8, mutation: { requestId: "create-vol-2" } };
    const firstVolume = await bus.call(storageService.CreateVolume, volumeRequest);
    expect(firstVolume.result?.replayed).toBe(false);
    expect(firstVolume.volume?.state).toBe(v1.VolumeState.VOLUME_STATE_READY);
    const volumeRevision = (await volumes.get("vol-2"))!.revision;
    // The wait is no part of what the request asks for: the same id with another wait is the same request.
    const againVolume = await bus.call(storageService.CreateVolume, { ...volumeRequest, mutation: { requestId: "create-vol-2", waitTimeoutMs: 1234 } });
    expect(againVolume.result?.replayed).toBe(true);
    expect(againVolume.volume).toEqual(firstVolume.volume);
    expect((await volumes.get("vol-2"))!.revision).toBe(volumeRevision);
    expect(san.volumes.get("vol-2")?.incarnation).toBe(firstVolume.volume?.incarnation);

    const vmRequest = { name: "vm-1", spec, mutation: { requestId: "create-vm-1" } };
    const firstVm = await bus.call(computeService.CreateVm, vmRequest);
    expect(firstVm.result?.replayed).toBe(false);
    const vmRevision = (await vms.get("vm-1"))!.revision;
    const againVm = await bus.call(computeService.CreateVm, vmRequest);
    expect(againVm.result?.replayed).toBe(true);
    expect(againVm.vm?.incarnation).toBe(firstVm.vm?.incarnation);
    expect(againVm.placement).toEqual(firstVm.placement);
    expect((await vms.get("vm-1"))!.revision).toBe(vmRevision);
    // Without a request id, the same create is a second request, and refused as one.
    await expect(bus.call(computeService.CreateVm, { name: "vm-1", spec })).rejects.toMatchObject({ code: "ALREADY_EXISTS" });

    // Two copies in flight at once: one acts, the other joins it.
    const both = await Promise.all([0, 1].map(() => bus.call(computeService.CreateVm, { name: "vm-2", spec, mutation: { requestId: "create-vm-2" } })));
    expect(both.map((r) => r.result?.replayed).sort()).toEqual([false, true]);
    expect(both[0]!.vm?.incarnation).toBe(both[1]!.vm?.incarnation);
    expect((await vms.history("vm-2")).filter((h) => h.value !== null)).toHaveLength(1);

    await eventually("the created events", () => (events.length >= 3 ? true : undefined));
    expect(events.sort()).toEqual([`${bus.subjects.prefix}.evt.vm.vm-1.created`, `${bus.subjects.prefix}.evt.vm.vm-2.created`, `${bus.subjects.prefix}.evt.volume.vol-2.created`]);
  });

  it("request ids: the first answer is returned after a controller restart between the two calls", async () => {
    const { bus, restartController, vms } = await datacenter();
    const volume = await bus.call(storageService.CreateVolume, { name: "vol-2", sizeMib: 8, mutation: { requestId: "vol-2-a" } });
    const vm = await bus.call(computeService.CreateVm, { name: "vm-1", spec, mutation: { requestId: "vm-1-a" } });
    const created = await bus.call(computeService.CreateVm, { name: "vm-2", spec });
    await bus.call(computeService.DeleteVm, { vmId: "vm-2", mutation: { requestId: "vm-2-delete" } });
    await restartController();

    const volumeAgain = await bus.call(storageService.CreateVolume, { name: "vol-2", sizeMib: 8, mutation: { requestId: "vol-2-a" } });
    expect(volumeAgain.result?.replayed).toBe(true);
    expect(volumeAgain.volume?.incarnation).toBe(volume.volume?.incarnation);
    const vmAgain = await bus.call(computeService.CreateVm, { name: "vm-1", spec, mutation: { requestId: "vm-1-a" } });
    expect(vmAgain.result?.replayed).toBe(true);
    expect(vmAgain.vm?.incarnation).toBe(vm.vm?.incarnation);
    expect(vmAgain.vm?.hostId).toBe(vm.vm?.hostId);
    // A retried delete is answered as the first was, not NOT_FOUND.
    const deleteAgain = await bus.call(computeService.DeleteVm, { vmId: "vm-2", mutation: { requestId: "vm-2-delete" } });
    expect(deleteAgain.result?.replayed).toBe(true);
    expect((await vms.get("vm-2"))?.value).toMatchObject({ deleted: true, vm: { incarnation: created.vm?.incarnation } });
    // The same id with another request is refused by the new controller too.
    await expect(bus.call(computeService.CreateVm, { name: "vm-9", spec, mutation: { requestId: "vm-1-a" } })).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
  });

  it("request ids: a retry finds its change through the record when the remembered answer is gone", async () => {
    const { bus, requests, vms, restartController } = await datacenter();
    const first = await bus.call(computeService.CreateVm, { name: "vm-1", spec, mutation: { requestId: "vm-1-a" } });
    const stopped = await bus.call(computeService.StopVm, { vmId: "vm-1", mutation: { requestId: "vm-1-stop" } });
    expect(stopped.vm?.generation).toBe(2);
    // The answers are lost (as when storing them failed); a controller that starts now never knew them.
    for (const id of ["vm-1-a", "vm-1-stop"]) await requests.delete(id);
    await restartController();
    const revision = (await vms.get("vm-1"))!.revision;
    const stopAgain = await bus.call(computeService.StopVm, { vmId: "vm-1", mutation: { requestId: "vm-1-stop" } });
    expect(stopAgain.result?.replayed).toBe(true);
    expect(stopAgain.vm?.generation).toBe(2);
    const createAgain = await bus.call(computeService.CreateVm, { name: "vm-1", spec, mutation: { requestId: "vm-1-a" } });
    expect(createAgain.result?.replayed).toBe(true);
    expect(createAgain.vm?.incarnation).toBe(first.vm?.incarnation);
    expect((await vms.get("vm-1"))!.revision).toBe(revision);
  });

  it("request ids: the same id with another request is INVALID_ARGUMENT and changes nothing", async () => {
    const { bus, vms, volumes } = await datacenter();
    await bus.call(computeService.CreateVm, { name: "vm-1", spec, mutation: { requestId: "shared-id" } });
    const vmRevision = (await vms.get("vm-1"))!.revision;
    const refusals = [
      bus.call(computeService.CreateVm, { name: "vm-2", spec, mutation: { requestId: "shared-id" } }),
      bus.call(computeService.CreateVm, { name: "vm-1", spec: { ...spec, vcpus: 2 }, mutation: { requestId: "shared-id" } }),
      bus.call(computeService.StopVm, { vmId: "vm-1", mutation: { requestId: "shared-id" } }),
      bus.call(storageService.CreateVolume, { name: "vol-2", sizeMib: 8, mutation: { requestId: "shared-id" } }),
    ];
    for (const refusal of refusals) {
      await expect(refusal).rejects.toMatchObject({ code: "INVALID_ARGUMENT", message: expect.stringMatching(/^request id shared-id was used for another request/) });
    }
    expect(await vms.get("vm-2")).toBeNull();
    expect(await volumes.get("vol-2")).toBeNull();
    expect((await vms.get("vm-1"))!.revision).toBe(vmRevision);
    expect((await bus.call(computeService.GetVm, { vmId: "vm-1" })).vm).toMatchObject({ powerState: v1.PowerState.POWER_STATE_ON, generation: 1 });

    // Two different requests with one id at once: one acts, the other is refused.
    const race = await Promise.allSettled([
      bus.call(computeService.CreateVm, { name: "vm-3", spec, mutation: { requestId: "racing-id" } }),
      bus.call(computeService.CreateVm, { name: "vm-4", spec, mutation: { requestId: "racing-id" } }),
    ]);
    expect(race.filter((r) => r.status === "fulfilled")).toHaveLength(1);
    expect(race.filter((r) => r.status === "rejected").map((r) => (r as PromiseRejectedResult).reason.code)).toEqual(["INVALID_ARGUMENT"]);
    const live = [await vms.get("vm-3"), await vms.get("vm-4")].filter((r) => r !== null);
    expect(live).toHaveLength(1);
  });
});
