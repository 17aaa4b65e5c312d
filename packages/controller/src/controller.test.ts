// Proves the controller's core on a real nats-server, with stand-in hosts
// and a stand-in SAN node speaking the wire protocol: a VM is stored, placed
// and realized by its host through its document, start and stop bump its
// generation, delete removes it from the host, a new incarnation replaces
// the old, silence disconnects a host and a heartbeat reconnects it,
// concurrent creates never overshoot, a paused or rebooted host catches
// up, hosts are listed page by page, and a SIGKILLed controller process
// loses no acknowledged create and disconnects no host when it restarts.

import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { computeService, controllerService, hostService, storageService, type Bus } from "@simdc/bus";
import { createLogger, SimdcError, wallClock } from "@simdc/common";
import { simdc } from "@simdc/proto";
import {
  connectTestBus,
  eventually,
  startService,
  startTestNats,
  StandInHost,
  StandInSanNode,
  type TestNats,
  type TestService,
} from "@simdc/testkit";
import { Controller } from "./controller.js";
import type { ControllerConfig } from "./settings.js";

import v1 = simdc.v1;

const heartbeatIntervalMs = 100;
const heartbeatMissesMax = 3;
const spec = { vcpus: 1, memoryMib: 64, bootVolume: "vol-1" };

let nats: TestNats;
let prefixCounter = 0;
const nextPrefix = (): string => `ctl${++prefixCounter}`;
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
async function startController(prefix: string, overrides: Partial<ControllerConfig> = {}): Promise<{ stop(): Promise<void> }> {
  const config: ControllerConfig = {
    controllerId: "controller-1",
    heartbeatIntervalMs,
    heartbeatMissesMax,
    metricsIntervalMs: 10_000,
    cpuOvercommit: 4,
    memoryOvercommit: 1.5,
    kvReplicas: 1,
    leaseTtlMs: 1000,
    inventoryIntervalMs: 30_000,
    documentChunkBytes: 512 * 1024,
    ...overrides,
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

/** Resolves once a controller answers the API (only the active one does). */
async function serving(bus: Bus): Promise<v1.GetControllerStatusResponse> {
  return eventually("a controller serving", () => bus.call(controllerService.GetControllerStatus, {}, { timeoutMs: 500 }), 15_000);
}

/**
 * A fresh datacenter: its own prefix (buckets and subjects), a client bus,
 * a SAN node holding vol-1, and a controller (in this process unless told
 * not to start one).
 */
async function datacenter(overrides: Partial<ControllerConfig> = {}, options: { prefix?: string; controller?: boolean } = {}) {
  const prefix = options.prefix ?? nextPrefix();
  const bus = await connectTestBus(nats.url, { prefix });
  cleanups.push(() => bus.close());
  if (options.controller !== false) await startController(prefix, overrides);
  await serving(bus);
  const san = new StandInSanNode(bus, "san-1");
  await san.start(heartbeatIntervalMs);
  cleanups.push(() => san.stop());
  await bus.call(storageService.CreateVolume, { name: "vol-1", sizeMib: 16 });
  const host = async (id: string, capacity?: { pcpus: number; memoryMib: number; nics: number }): Promise<StandInHost> => {
    const h = new StandInHost(bus, id, capacity);
    await h.start(heartbeatIntervalMs);
    cleanups.push(() => h.stop());
    return h;
  };
  return { prefix, bus, san, host };
}

async function getVm(bus: Bus, vmId: string): Promise<v1.Vm> {
  return (await bus.call(computeService.GetVm, { vmId })).vm as v1.Vm;
}

/** Every VM, page by page. */
async function listAllVms(bus: Bus): Promise<v1.Vm[]> {
  const out: v1.Vm[] = [];
  let pageToken = "";
  do {
    const page = await bus.call(computeService.ListVms, { pageSize: 100, pageToken });
    out.push(...(page.vms as v1.Vm[]));
    pageToken = page.nextPageToken;
  } while (pageToken);
  return out;
}

describe("controller", () => {
  it("controller: a VM is stored, placed, realized by its host; start and stop bump its generation; delete removes it", async () => {
    const { bus, host } = await datacenter();
    const h1 = await host("host-1");
    const created = await bus.call(computeService.CreateVm, { name: "vm-1", spec });
    expect(created.vm).toMatchObject({ id: "vm-1", hostId: "host-1", generation: 1, powerState: v1.PowerState.POWER_STATE_ON });
    expect(created.placement?.reason).toMatch(/^least loaded of 1 connected hosts/);
    expect(created.result).toMatchObject({ configGeneration: 0, replayed: false });
    const running = await eventually("vm-1 running at generation 1", async () => {
      const vm = await getVm(bus, "vm-1");
      return vm.status?.state === v1.VmState.VM_STATE_RUNNING && vm.status.observedGeneration === 1 ? vm : undefined;
    });
    expect(running.status?.incarnation).toBe(created.vm?.incarnation);
    expect(h1.vms.get("vm-1")).toMatchObject({ incarnation: created.vm?.incarnation, observedGeneration: 1 });

    const stopped = await bus.call(computeService.StopVm, { vmId: "vm-1" });
    expect(stopped.vm).toMatchObject({ generation: 2, powerState: v1.PowerState.POWER_STATE_OFF });
    await eventually("vm-1 stopped at generation 2", async () => {
      const vm = await getVm(bus, "vm-1");
      return vm.status?.state === v1.VmState.VM_STATE_STOPPED && vm.status.observedGeneration === 2 ? vm : undefined;
    });
    // Stopping a stopped VM changes nothing.
    expect((await bus.call(computeService.StopVm, { vmId: "vm-1" })).vm?.generation).toBe(2);
    const started = await bus.call(computeService.StartVm, { vmId: "vm-1" });
    expect(started.vm).toMatchObject({ generation: 3, powerState: v1.PowerState.POWER_STATE_ON });
    await eventually("vm-1 running at generation 3", async () => {
      const vm = await getVm(bus, "vm-1");
      return vm.status?.state === v1.VmState.VM_STATE_RUNNING && vm.status.observedGeneration === 3 ? vm : undefined;
    });
    // Each change reached the host as a document of a newer generation carrying the VM's generation.
    const vmGenerations = h1.applied.flatMap((doc) => doc.vms.map((vm) => vm.generation));
    expect(vmGenerations).toEqual([1, 2, 3]);
    const docGenerations = h1.applied.map((doc) => doc.generation);
    expect([...docGenerations].sort((a, b) => a - b)).toEqual(docGenerations);
    expect(new Set(docGenerations).size).toBe(docGenerations.length);
    const { host: h } = await bus.call(hostService.GetHost, { hostId: "host-1" });
    expect(h).toMatchObject({ allocatedVcpus: 1, allocatedMemoryMib: 64, vmCount: 1, state: v1.HostState.HOST_STATE_CONNECTED });
    expect(h?.realizedGeneration).toBe(h?.desiredGeneration);

    await bus.call(computeService.DeleteVm, { vmId: "vm-1" });
    await eventually("vm-1 removed from its host", () => (h1.vms.has("vm-1") ? undefined : true));
    expect(h1.removed).toEqual([{ vmId: "vm-1", incarnation: created.vm?.incarnation }]);
    await expect(bus.call(computeService.GetVm, { vmId: "vm-1" })).rejects.toMatchObject({ code: "NOT_FOUND" });
    expect((await bus.call(hostService.GetHost, { hostId: "host-1" })).host).toMatchObject({ allocatedVcpus: 0, vmCount: 0 });
  });

  it("controller: a VM deleted and created again under its name is a new incarnation, and its host keeps only the new one", async () => {
    const { bus, host } = await datacenter();
    const h1 = await host("host-1");
    const first = (await bus.call(computeService.CreateVm, { name: "vm-1", spec })).vm!;
    await eventually("the first incarnation running", () => (h1.vms.get("vm-1")?.incarnation === first.incarnation ? true : undefined));
    await bus.call(computeService.DeleteVm, { vmId: "vm-1" });
    const second = (await bus.call(computeService.CreateVm, { name: "vm-1", spec: { ...spec, vcpus: 2 } })).vm!;
    expect(second.incarnation).not.toBe(first.incarnation);
    expect(second.generation).toBe(1);
    const vm = await eventually("the second incarnation running", async () => {
      const v = await getVm(bus, "vm-1");
      return v.status?.state === v1.VmState.VM_STATE_RUNNING && v.status.incarnation === second.incarnation ? v : undefined;
    });
    expect(vm.spec?.vcpus).toBe(2);
    expect(h1.vms.get("vm-1")?.incarnation).toBe(second.incarnation);
    expect([...h1.vms.keys()]).toEqual(["vm-1"]);
    // The old incarnation was removed once and the new one never was.
    expect(h1.removed).toEqual([{ vmId: "vm-1", incarnation: first.incarnation }]);
    const last = h1.applied[h1.applied.length - 1]!;
    expect(last.vms.map((v) => [v.vmId, v.incarnation])).toEqual([["vm-1", second.incarnation]]);
    expect((await bus.call(hostService.GetHost, { hostId: "host-1" })).host).toMatchObject({ allocatedVcpus: 2, vmCount: 1 });
  });

  it("controller: CreateVm refuses a boot volume that does not exist, and stores nothing", async () => {
    const { bus, host } = await datacenter();
    await host("host-1");
    const vms = await bus.bucket("vms", v1.VmRecord, { fenced: { epochOf: () => 0 }, bindOnly: true });
    const events: string[] = [];
    bus.subscribe(bus.subjects.event("vm", "*", "*"), v1.Event, (_e, subject) => void events.push(subject));
    await bus.flush();
    const error = await bus.call(computeService.CreateVm, { name: "vm-1", spec: { ...spec, bootVolume: "vol-404" } }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(SimdcError);
    expect(error).toMatchObject({ code: "NOT_FOUND", message: "boot volume vol-404 does not exist" });
    expect(await vms.get("vm-1")).toBeNull();
    await expect(bus.call(computeService.GetVm, { vmId: "vm-1" })).rejects.toMatchObject({ code: "NOT_FOUND" });
    expect((await bus.call(hostService.GetHost, { hostId: "host-1" })).host).toMatchObject({ allocatedVcpus: 0, vmCount: 0 });
    // The same name with a volume that exists is free: the refusal reserved nothing.
    await bus.call(computeService.CreateVm, { name: "vm-1", spec });
    // The controller publishes in order, so an event of the refusal would come before this one.
    const created = `${bus.subjects.prefix}.evt.vm.vm-1.created`;
    await eventually("the created event", () => (events.includes(created) ? true : undefined));
    expect(events[0]).toBe(created);
  });

  it("controller: a silent host is disconnected within the timeout, with an event, and reconnects", async () => {
    const { bus, host } = await datacenter();
    const h1 = await host("host-1");
    await bus.call(computeService.CreateVm, { name: "vm-1", spec });
    await eventually("vm-1 running", async () => ((await getVm(bus, "vm-1")).status?.state === v1.VmState.VM_STATE_RUNNING ? true : undefined));
    const events: v1.Event[] = [];
    bus.subscribe(bus.subjects.event("host", "host-1", "*"), v1.Event, (e) => void events.push(e));
    await bus.flush();
    h1.paused = true;
    const silentAt = Date.now();
    await eventually("host-1 disconnected", async () => {
      const { host: h } = await bus.call(hostService.GetHost, { hostId: "host-1" });
      return h?.state === v1.HostState.HOST_STATE_DISCONNECTED ? h : undefined;
    });
    const detectedMs = Date.now() - silentAt;
    // The timeout is interval x misses (300 ms), plus one sweep (50 ms) and scheduling slack.
    expect(detectedMs).toBeGreaterThanOrEqual(heartbeatIntervalMs * (heartbeatMissesMax - 1));
    expect(detectedMs).toBeLessThan(heartbeatIntervalMs * heartbeatMissesMax + 700);
    expect(events.map((e) => e.kind)).toContain(v1.EventKind.EVENT_KIND_HOST_DISCONNECTED);
    const vm = await getVm(bus, "vm-1");
    expect(vm.status).toMatchObject({ state: v1.VmState.VM_STATE_UNKNOWN, reason: { message: "host host-1 is disconnected" } });
    // A disconnected host takes no new VM.
    await expect(bus.call(computeService.CreateVm, { name: "vm-2", spec })).rejects.toMatchObject({
      code: "RESOURCE_EXHAUSTED",
      message: expect.stringMatching(/host-1: disconnected/),
    });
    h1.paused = false;
    await eventually("host-1 connected again", async () => {
      const { host: h } = await bus.call(hostService.GetHost, { hostId: "host-1" });
      return h?.state === v1.HostState.HOST_STATE_CONNECTED ? h : undefined;
    });
    expect(events.map((e) => e.kind)).toContain(v1.EventKind.EVENT_KIND_HOST_CONNECTED);
    await eventually("vm-1 running again", async () => ((await getVm(bus, "vm-1")).status?.state === v1.VmState.VM_STATE_RUNNING ? true : undefined));
  });

  it("controller: concurrent creates never overshoot the overcommit ratios", async () => {
    const { bus, host } = await datacenter({ cpuOvercommit: 2, memoryOvercommit: 1 });
    await host("host-1", { pcpus: 4, memoryMib: 100_000, nics: 1 });
    await host("host-2", { pcpus: 2, memoryMib: 100_000, nics: 1 });
    const results = await Promise.allSettled(Array.from({ length: 40 }, (_, i) => bus.call(computeService.CreateVm, { name: `vm-${i}`, spec })));
    const ok = results.filter((r) => r.status === "fulfilled");
    expect(ok).toHaveLength(12); // (4 + 2) pCPUs x 2
    for (const r of results) {
      if (r.status === "rejected") expect((r.reason as SimdcError).code).toBe("RESOURCE_EXHAUSTED");
    }
    const { hosts } = await bus.call(hostService.ListHosts, {});
    expect(hosts.map((h) => [h.id, h.allocatedVcpus])).toEqual([
      ["host-1", 8],
      ["host-2", 4],
    ]);
    expect(await listAllVms(bus)).toHaveLength(12);
  });

  it("controller: changes made while a host is paused reach it once it resumes", async () => {
    const { bus, host } = await datacenter();
    const h1 = await host("host-1");
    await bus.call(computeService.CreateVm, { name: "vm-1", spec });
    await eventually("generation 1 realized", () => (h1.vms.get("vm-1")?.observedGeneration === 1 ? true : undefined));
    h1.paused = true;
    await bus.call(computeService.StopVm, { vmId: "vm-1" });
    await bus.call(computeService.StartVm, { vmId: "vm-1" });
    // The document carrying generation 3 is written while the host cannot apply it.
    const written = await bus.call(hostService.GetSyncStatus, {});
    await eventually("the document written", async () => {
      const { host: h } = await bus.call(hostService.GetHost, { hostId: "host-1" });
      return (h?.desiredGeneration ?? 0) >= written.desiredGeneration ? true : undefined;
    });
    expect(h1.vms.get("vm-1")?.observedGeneration).toBe(1);
    h1.paused = false;
    await eventually("generation 3 realized after the resume", async () => {
      const vm = await getVm(bus, "vm-1");
      return vm.status?.observedGeneration === 3 && vm.status.state === v1.VmState.VM_STATE_RUNNING ? vm : undefined;
    });
  });

  it("controller: a host whose agent restarted gets its VMs again", async () => {
    const { bus, host } = await datacenter();
    const h1 = await host("host-1");
    for (const name of ["vm-1", "vm-2"]) await bus.call(computeService.CreateVm, { name, spec });
    await eventually("both applied", () => (h1.vms.size === 2 ? true : undefined));
    const bootBefore = h1.bootId;
    await h1.reboot();
    expect(h1.bootId).not.toBe(bootBefore);
    await eventually("both applied again after the reboot", () => (h1.vms.size === 2 ? true : undefined));
    await eventually("both running in the API", async () => {
      const vms = await listAllVms(bus);
      return vms.every((vm) => vm.status?.state === v1.VmState.VM_STATE_RUNNING) ? vms : undefined;
    });
    expect((await bus.call(hostService.GetHost, { hostId: "host-1" })).host?.bootId).toBe(h1.bootId);
  });

  it("controller: ListHosts pages the hosts in id order", async () => {
    const { bus } = await datacenter();
    const ids = Array.from({ length: 23 }, (_, i) => `host-${String(i).padStart(2, "0")}`);
    // Registered out of order.
    for (const id of [...ids].reverse()) {
      await bus.call(
        hostService.RegisterHost,
        { hostId: id, agentId: "agent-1", capacity: { pcpus: 1, memoryMib: 1024 }, bootId: `boot-${id}` },
        { scopeId: id },
      );
    }
    const pages: string[][] = [];
    let pageToken = "";
    do {
      const page = await bus.call(hostService.ListHosts, { pageSize: 5, pageToken });
      pages.push(page.hosts.map((h) => h.id ?? ""));
      pageToken = page.nextPageToken;
      if (pageToken) expect(pageToken).toBe(page.hosts[page.hosts.length - 1]?.id);
    } while (pageToken);
    expect(pages.map((p) => p.length)).toEqual([5, 5, 5, 5, 3]);
    expect(pages.flat()).toEqual(ids);
    expect((await bus.call(hostService.ListHosts, {})).hosts).toHaveLength(23);
    await expect(bus.call(hostService.ListHosts, { pageSize: 2001 })).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
  });

  it("controller: a SIGKILL under concurrent creates loses no acknowledged VM, and the restart disconnects no host", async () => {
    const prefix = nextPrefix();
    const flags = [
      "--nats-url", nats.url,
      "--prefix", prefix,
      "--heartbeat-interval-ms", String(heartbeatIntervalMs),
      "--heartbeat-misses-max", String(heartbeatMissesMax),
      "--lease-ttl-ms", "1000",
    ];
    let controller: TestService = startService("controller", flags);
    cleanups.push(() => controller.stop());
    const { bus, host } = await datacenter({}, { prefix, controller: false });
    const hosts = [await host("host-1", { pcpus: 64, memoryMib: 1_000_000, nics: 1 }), await host("host-2", { pcpus: 64, memoryMib: 1_000_000, nics: 1 })];
    const acked = new Map<string, string>();
    const inFlight = new Map<number, string>();
    let stop = false;
    const creators = Array.from({ length: 8 }, async (_, worker) => {
      for (let i = 0; !stop; i++) {
        const name = `vm-${worker}-${i}`;
        inFlight.set(worker, name);
        try {
          const { vm } = await bus.call(computeService.CreateVm, { name, spec }, { timeoutMs: 1_000 });
          acked.set(name, vm?.hostId ?? "");
        } catch {
          // Requests in flight at the kill fail; they were never acknowledged.
          await new Promise((r) => setTimeout(r, 20));
        }
        inFlight.delete(worker);
      }
    });
    await eventually("50 creates acknowledged", () => (acked.size >= 50 ? true : undefined));
    controller.signal("SIGKILL");
    // Nothing new starts after the kill: what was sent but not answered is all that may be stored unacknowledged.
    stop = true;
    const inFlightAtKill = new Set(inFlight.values());
    expect(await controller.exited).toBe("SIGKILL");
    await Promise.all(creators);
    expect(acked.size).toBeGreaterThanOrEqual(50);

    const disconnected: v1.Event[] = [];
    bus.subscribe(bus.subjects.event("host", "*", "disconnected"), v1.Event, (e) => void disconnected.push(e));
    await bus.flush();
    controller = startService("controller", flags);
    await serving(bus);
    const stored = new Map((await listAllVms(bus)).map((vm) => [vm.id, vm.hostId]));
    for (const [name, hostId] of acked) expect(stored.get(name), name).toBe(hostId);
    // The controller stored nothing it was not asked for: whatever is there unacknowledged was in flight at the kill.
    for (const name of stored.keys()) if (!acked.has(name)) expect(inFlightAtKill, name).toContain(name);
    expect((await bus.call(storageService.GetVolume, { volumeId: "vol-1" })).volume).toMatchObject({ sanNodeId: "san-1", state: v1.VolumeState.VOLUME_STATE_READY });
    // Every acknowledged VM runs on the host it was acknowledged on.
    await eventually("every acknowledged VM realized on its host", () => {
      for (const [name, hostId] of acked) if (!hosts.find((h) => h.hostId === hostId)?.vms.has(name)) return undefined;
      return true;
    });
    // Give the restarted controller more than two liveness timeouts of heartbeats to (wrongly) judge the hosts.
    const beats = new Map<string, number>();
    bus.subscribe(bus.subjects.event("host", "*", "heartbeat"), v1.HostHeartbeat, (beat) => void beats.set(beat.hostId, (beats.get(beat.hostId) ?? 0) + 1));
    await eventually("heartbeats for two timeouts", () => (Math.min(beats.get("host-1") ?? 0, beats.get("host-2") ?? 0) >= 2 * heartbeatMissesMax + 1 ? true : undefined));
    const listed = (await bus.call(hostService.ListHosts, {})).hosts;
    expect(listed.map((h) => h.state)).toEqual([v1.HostState.HOST_STATE_CONNECTED, v1.HostState.HOST_STATE_CONNECTED]);
    expect(disconnected).toEqual([]);
  });
});
