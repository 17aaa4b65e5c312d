// Proves the controller as a real process on a real nats-server, with
// stand-in hosts and SAN nodes speaking the wire protocol: placement and
// reconcile with echoed generations, disconnect detection from silence,
// overcommit under concurrency, and that a SIGKILL loses nothing it
// acknowledged and disconnects no host.

import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { computeService, hostService, storageService, type Bus } from "@simdc/bus";
import { SimdcError } from "@simdc/common";
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

import v1 = simdc.v1;

const heartbeatIntervalMs = 100;
const heartbeatMissesMax = 3;

let nats: TestNats;
let bus: Bus;
let controller: TestService | null = null;
const standIns: { stop(): void }[] = [];
let prefixCounter = 0;
let prefix = "";

function startController(extra: string[] = []): TestService {
  return startService("controller", [
    "--nats-url", nats.url,
    "--prefix", prefix,
    "--heartbeat-interval-ms", String(heartbeatIntervalMs),
    "--heartbeat-misses-max", String(heartbeatMissesMax),
    "--resync-interval-ms", "500",
    ...extra,
  ]);
}

async function controllerReady(): Promise<void> {
  await eventually("controller serving", () => bus.call(hostService.ListHosts, {}, { timeoutMs: 500 }).then(() => true), 15_000);
}

async function host(id: string, capacity?: { pcpus: number; memoryMib: number; nics: number }): Promise<StandInHost> {
  const h = new StandInHost(bus, id, capacity);
  await h.start(heartbeatIntervalMs);
  standIns.push(h);
  return h;
}

beforeAll(async () => {
  nats = await startTestNats();
});

afterAll(async () => {
  await nats?.dispose();
});

// Each test gets its own datacenter prefix (fresh buckets and subjects) and controller.
async function freshDatacenter(extra: string[] = []): Promise<void> {
  prefixCounter += 1;
  prefix = `t${prefixCounter}`;
  bus = await connectTestBus(nats.url, { prefix });
  controller = startController(extra);
  await controllerReady();
}

afterEach(async () => {
  for (const s of standIns.splice(0)) s.stop();
  await controller?.stop();
  controller = null;
  await bus?.close();
});

describe("controller", () => {
  it("controller: places a VM, applies it to its host and shows the echoed generation", async () => {
    await freshDatacenter();
    const h1 = await host("host-1");
    const created = await bus.call(computeService.CreateVm, {
      name: "vm-1",
      spec: { vcpus: 2, memoryMib: 1024, bootVolume: "vol-1" },
    });
    expect(created.vm?.hostId).toBe("host-1");
    expect(created.vm?.generation).toBe(1);
    expect(created.placement?.reason).toMatch(/least loaded/);
    await eventually("vm running", async () => {
      const { vm } = await bus.call(computeService.GetVm, { vmId: "vm-1" });
      return vm?.status?.state === v1.VmState.VM_STATE_RUNNING && vm.status.observedGeneration === 1 ? vm : undefined;
    });
    const stopped = await bus.call(computeService.StopVm, { vmId: "vm-1" });
    expect(stopped.vm?.generation).toBe(2);
    await eventually("vm stopped at generation 2", async () => {
      const { vm } = await bus.call(computeService.GetVm, { vmId: "vm-1" });
      return vm?.status?.state === v1.VmState.VM_STATE_STOPPED && vm.status.observedGeneration === 2 ? vm : undefined;
    });
    expect(h1.applied.map((a) => a.generation)).toEqual([1, 2]);
    const { host: h } = await bus.call(hostService.GetHost, { hostId: "host-1" });
    expect(h).toMatchObject({ allocatedVcpus: 2, allocatedMemoryMib: 1024, vmCount: 1 });
    await bus.call(computeService.DeleteVm, { vmId: "vm-1" });
    await eventually("vm removed from its host", () => (h1.vms.has("vm-1") ? undefined : true));
  });

  it("controller: a silent host is disconnected within the timeout, with an event, and reconnects", async () => {
    await freshDatacenter();
    const h1 = await host("host-1");
    await bus.call(computeService.CreateVm, { name: "vm-1", spec: { vcpus: 1, memoryMib: 64, bootVolume: "vol-1" } });
    const events: v1.Event[] = [];
    bus.subscribe(bus.subjects.event("host", "host-1", "*"), v1.Event, (e) => void events.push(e));
    await bus.flush();
    h1.paused = true;
    const silentAt = Date.now();
    await eventually("host disconnected", async () => {
      const { host: h } = await bus.call(hostService.GetHost, { hostId: "host-1" });
      return h?.state === v1.HostState.HOST_STATE_DISCONNECTED ? h : undefined;
    });
    const detectedMs = Date.now() - silentAt;
    // Timeout is interval x misses (300 ms) plus one sweep (50 ms) and scheduling slack.
    expect(detectedMs).toBeLessThan(heartbeatIntervalMs * heartbeatMissesMax + 700);
    expect(events.some((e) => e.kind === v1.EventKind.EVENT_KIND_HOST_DISCONNECTED)).toBe(true);
    const { vm } = await bus.call(computeService.GetVm, { vmId: "vm-1" });
    expect(vm?.status?.state).toBe(v1.VmState.VM_STATE_UNKNOWN);
    h1.paused = false;
    await eventually("host connected again", async () => {
      const { host: h } = await bus.call(hostService.GetHost, { hostId: "host-1" });
      return h?.state === v1.HostState.HOST_STATE_CONNECTED ? h : undefined;
    });
    expect(events.some((e) => e.kind === v1.EventKind.EVENT_KIND_HOST_CONNECTED)).toBe(true);
  });

  it("controller: concurrent creates never overshoot the overcommit ratios", async () => {
    await freshDatacenter(["--cpu-overcommit", "2", "--memory-overcommit", "1"]);
    await host("host-1", { pcpus: 4, memoryMib: 100_000, nics: 1 });
    await host("host-2", { pcpus: 2, memoryMib: 100_000, nics: 1 });
    const results = await Promise.allSettled(
      Array.from({ length: 40 }, (_, i) =>
        bus.call(computeService.CreateVm, { name: `vm-${i}`, spec: { vcpus: 1, memoryMib: 10, bootVolume: "vol-1" } }),
      ),
    );
    const ok = results.filter((r) => r.status === "fulfilled");
    expect(ok).toHaveLength(12); // (4 + 2) pCPUs x 2
    for (const r of results) {
      if (r.status === "rejected") expect((r.reason as SimdcError).code).toBe("RESOURCE_EXHAUSTED");
    }
    const { hosts } = await bus.call(hostService.ListHosts, {});
    expect(hosts.map((h) => h.allocatedVcpus)).toEqual([8, 4]);
  });

  it("controller: a reconcile interrupted by a paused host completes after it resumes", async () => {
    await freshDatacenter();
    const h1 = await host("host-1");
    await bus.call(computeService.CreateVm, { name: "vm-1", spec: { vcpus: 1, memoryMib: 64, bootVolume: "vol-1" } });
    await eventually("generation 1 realized", () => (h1.vms.get("vm-1")?.observedGeneration === 1 ? true : undefined));
    h1.paused = true;
    await bus.call(computeService.StopVm, { vmId: "vm-1" });
    await bus.call(computeService.StartVm, { vmId: "vm-1" });
    await new Promise((r) => setTimeout(r, 600));
    expect(h1.vms.get("vm-1")?.observedGeneration).toBe(1);
    h1.paused = false;
    await eventually("generation 3 realized after resume", async () => {
      const { vm } = await bus.call(computeService.GetVm, { vmId: "vm-1" });
      return vm?.status?.observedGeneration === 3 && vm.status.state === v1.VmState.VM_STATE_RUNNING ? vm : undefined;
    });
  });

  it("controller: a host whose agent restarted gets its VMs again", async () => {
    await freshDatacenter();
    const h1 = await host("host-1");
    for (const name of ["vm-1", "vm-2"]) {
      await bus.call(computeService.CreateVm, { name, spec: { vcpus: 1, memoryMib: 64, bootVolume: "vol-1" } });
    }
    await eventually("both applied", () => (h1.vms.size === 2 ? true : undefined));
    await h1.reboot();
    expect(h1.vms.size).toBe(0);
    await eventually("both re-applied after the reboot", () => (h1.vms.size === 2 ? true : undefined));
  });

  it("controller: SIGKILL loses no acknowledged change, and the restart disconnects no host", async () => {
    await freshDatacenter();
    await host("host-1", { pcpus: 64, memoryMib: 1_000_000, nics: 1 });
    await host("host-2", { pcpus: 64, memoryMib: 1_000_000, nics: 1 });
    const san = new StandInSanNode(bus, "san-1");
    await san.start(heartbeatIntervalMs);
    standIns.push(san);
    await bus.call(storageService.CreateVolume, { name: "vol-1", sizeMib: 16 });
    const acked = new Map<string, string>();
    let stop = false;
    const creators = Array.from({ length: 8 }, async (_, worker) => {
      for (let i = 0; !stop; i++) {
        const name = `vm-${worker}-${i}`;
        try {
          const { vm } = await bus.call(computeService.CreateVm, {
            name,
            spec: { vcpus: 1, memoryMib: 16, bootVolume: "vol-1" },
          }, { timeoutMs: 1_000 });
          acked.set(name, vm!.hostId);
        } catch {
          // Requests in flight at the kill fail; they were never acknowledged.
          await new Promise((r) => setTimeout(r, 20));
        }
      }
    });
    await eventually("some creates acknowledged", () => (acked.size >= 50 ? true : undefined));
    controller!.signal("SIGKILL");
    await controller!.exited;
    const ackedAtKill = acked.size;
    stop = true;
    await Promise.all(creators);
    const events: v1.Event[] = [];
    bus.subscribe(bus.subjects.event("host", "*", "disconnected"), v1.Event, (e) => void events.push(e));
    controller = startController();
    await controllerReady();
    const { vms } = await bus.call(computeService.ListVms, {});
    const stored = new Map(vms.map((vm) => [vm.id ?? "", vm.hostId ?? ""]));
    expect(acked.size).toBeGreaterThanOrEqual(ackedAtKill);
    for (const [name, hostId] of acked) expect(stored.get(name), name).toBe(hostId);
    expect((await bus.call(storageService.GetVolume, { volumeId: "vol-1" })).volume?.sanNodeId).toBe("san-1");
    // Give the restarted controller more than a full timeout to (wrongly) judge the hosts.
    await new Promise((r) => setTimeout(r, heartbeatIntervalMs * heartbeatMissesMax * 3));
    const { hosts } = await bus.call(hostService.ListHosts, {});
    expect(hosts.map((h) => h.state)).toEqual([v1.HostState.HOST_STATE_CONNECTED, v1.HostState.HOST_STATE_CONNECTED]);
    expect(events).toEqual([]);
  });
});
