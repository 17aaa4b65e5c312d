// Proves controller failover with two controller processes on one NATS:
// exactly one serves; when it is SIGKILLed under concurrent creates the
// standby serves within 2 s (lease TTL 1 s) with every acknowledged VM; and
// when it is paused (SIGSTOP) instead, the standby takes over, and the old
// one, once resumed, answers nothing from its stale state and acknowledges
// nothing (its answers fail UNAVAILABLE), stops serving, and whatever it
// (or a write of its epoch still in flight) wrote after it was deposed is
// undone.

import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { connect, RequestStrategy, type NatsConnection } from "nats";
import { computeService, controllerService, hostService, storageService, type Bus } from "@simdc/bus";
import { simdc } from "@simdc/proto";
import { connectTestBus, eventually, startService, startTestNats, StandInHost, StandInSanNode, type TestNats, type TestService } from "@simdc/testkit";

import v1 = simdc.v1;

const heartbeatIntervalMs = 100;
const leaseTtlMs = 1000;
const spec = { vcpus: 1, memoryMib: 16, bootVolume: "vol-1" };
const big = { pcpus: 64, memoryMib: 1_000_000, nics: 1 };

let nats: TestNats;
let raw: NatsConnection;
let prefixCounter = 0;
const cleanups: (() => Promise<void> | void)[] = [];

beforeAll(async () => {
  nats = await startTestNats();
  raw = await connect({ servers: nats.url });
});

afterAll(async () => {
  await raw?.close();
  await nats?.dispose();
});

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function startController(prefix: string, controllerId: string): TestService {
  const controller = startService("controller", [
    "--nats-url", nats.url,
    "--prefix", prefix,
    "--controller-id", controllerId,
    "--lease-ttl-ms", String(leaseTtlMs),
    "--heartbeat-interval-ms", String(heartbeatIntervalMs),
  ]);
  cleanups.push(() => controller.stop());
  return controller;
}

async function status(bus: Bus, timeoutMs = 500): Promise<v1.GetControllerStatusResponse> {
  return bus.call(controllerService.GetControllerStatus, {}, { timeoutMs });
}

/** The controller processes whose API for `prefix` is served now, by NATS service discovery. */
async function serving(prefix: string): Promise<string[]> {
  const infos = await raw.services.client({ strategy: RequestStrategy.Timer, maxWait: 300 }).info("dc1-controller");
  const out: string[] = [];
  for await (const info of infos) {
    if (info.endpoints.some((e) => e.subject.startsWith(`${prefix}.api.`))) out.push(info.metadata?.["process"] ?? "?");
  }
  return out.sort();
}

/** A datacenter with two controllers, the first one active, the second following as a standby. */
async function datacenter() {
  prefixCounter += 1;
  const prefix = `fo${prefixCounter}`;
  const bus = await connectTestBus(nats.url, { prefix });
  cleanups.push(() => bus.close());
  const first = startController(prefix, "controller-a");
  await eventually("controller-a active", async () => ((await status(bus)).controllerId === "controller-a" ? true : undefined), 15_000);
  const second = startController(prefix, "controller-b");
  await eventually("controller-b following", () => (second.output().includes("stored state loaded; following it") ? true : undefined), 15_000);
  const san = new StandInSanNode(bus, "san-1", 1_000_000);
  await san.start(heartbeatIntervalMs);
  cleanups.push(() => san.stop());
  await bus.call(storageService.CreateVolume, { name: "vol-1", sizeMib: 16 });
  const hosts: StandInHost[] = [];
  for (const id of ["host-1", "host-2"]) {
    const h = new StandInHost(bus, id, big);
    await h.start(heartbeatIntervalMs);
    cleanups.push(() => h.stop());
    hosts.push(h);
  }
  return { prefix, bus, first, second, hosts };
}

async function listAllVms(bus: Bus): Promise<v1.Vm[]> {
  const out: v1.Vm[] = [];
  let pageToken = "";
  do {
    const page = await bus.call(computeService.ListVms, { pageSize: 200, pageToken });
    out.push(...(page.vms as v1.Vm[]));
    pageToken = page.nextPageToken;
  } while (pageToken);
  return out;
}

/**
 * Resolves once controller-b serves as the active controller, with how long
 * that took from `sinceMs`: measured by its CONTROLLER_ACTIVE event (sent
 * once its API is served), since requests may still reach a paused
 * controller's subscription and time out there.
 */
async function takeover(bus: Bus, active: { at: Promise<number> }, sinceMs: number): Promise<{ afterMs: number; status: v1.GetControllerStatusResponse }> {
  const afterMs = (await active.at) - sinceMs;
  const answer = await eventually(
    "controller-b answering as the active controller",
    async () => {
      const s = await status(bus, 200);
      return s.controllerId === "controller-b" ? s : undefined;
    },
    10_000,
    10,
  );
  return { afterMs, status: answer };
}

/** When controller-b's next CONTROLLER_ACTIVE event arrives (wall ms), once subscribed. */
async function activeEvent(bus: Bus): Promise<{ at: Promise<number> }> {
  let resolve!: (atMs: number) => void;
  const arrived = new Promise<number>((r) => (resolve = r));
  const sub = bus.subscribe(bus.subjects.event("controller", "controller-b", "active"), v1.Event, (event) => {
    if (event.kind === v1.EventKind.EVENT_KIND_CONTROLLER_ACTIVE) resolve(Date.now());
  });
  cleanups.push(() => sub.unsubscribe());
  await bus.flush();
  return { at: arrived };
}

describe("failover", () => {
  it("failover: exactly one of two controllers serves; SIGKILLed, the standby serves within 2 s with every acknowledged VM", async () => {
    const { prefix, bus, first } = await datacenter();
    expect(await serving(prefix)).toEqual(["controller-a"]);
    const before = await status(bus);
    expect(before).toMatchObject({ controllerId: "controller-a", role: v1.ControllerRole.CONTROLLER_ROLE_ACTIVE, lease: { holderId: "controller-a" } });
    // Requests spread over every server of the API would reach the standby too: they all reach controller-a.
    for (let i = 0; i < 20; i++) expect((await status(bus)).controllerId).toBe("controller-a");

    const acked = new Map<string, string>();
    const inFlight = new Map<number, string>();
    let stop = false;
    const creators = Array.from({ length: 6 }, async (_, worker) => {
      for (let i = 0; !stop; i++) {
        const name = `vm-${worker}-${i}`;
        inFlight.set(worker, name);
        try {
          const { vm } = await bus.call(computeService.CreateVm, { name, spec }, { timeoutMs: 1_000 });
          acked.set(name, vm?.hostId ?? "");
        } catch {
          // Unanswered at the kill, or nobody serving yet: never acknowledged.
          await new Promise((r) => setTimeout(r, 20));
        }
        inFlight.delete(worker);
      }
    });
    await eventually("30 creates acknowledged", () => (acked.size >= 30 ? true : undefined));
    const active = await activeEvent(bus);
    const killedAt = Date.now();
    first.signal("SIGKILL");
    const inFlightAtKill = new Set(inFlight.values());
    const { afterMs, status: after } = await takeover(bus, active, killedAt);
    expect(afterMs).toBeLessThan(2_000);
    expect(after).toMatchObject({ role: v1.ControllerRole.CONTROLLER_ROLE_ACTIVE, stateId: before.stateId, lease: { holderId: "controller-b", epoch: (before.lease?.epoch ?? 0) + 1 } });
    expect(await first.exited).toBe("SIGKILL");
    // Creates go on against the new controller for a moment, then stop.
    const ackedAtTakeover = acked.size;
    await eventually("creates acknowledged by controller-b", () => (acked.size >= ackedAtTakeover + 10 ? true : undefined));
    stop = true;
    await Promise.all(creators);

    const stored = new Map((await listAllVms(bus)).map((vm) => [vm.id, vm.hostId]));
    for (const [name, hostId] of acked) expect(stored.get(name), name).toBe(hostId);
    for (const name of stored.keys()) if (!acked.has(name)) expect(inFlightAtKill, name).toContain(name);
    expect(await serving(prefix)).toEqual(["controller-b"]);
    const hosts = (await bus.call(hostService.ListHosts, {})).hosts;
    expect(hosts.map((h) => h.state)).toEqual([v1.HostState.HOST_STATE_CONNECTED, v1.HostState.HOST_STATE_CONNECTED]);
  });

  it("failover: a paused controller is replaced; resumed, it answers nothing from stale state, acknowledges nothing, and its late writes are undone", async () => {
    const { prefix, bus, first, hosts } = await datacenter();
    const vm0 = (await bus.call(computeService.CreateVm, { name: "vm-0", spec })).vm!;
    await eventually("vm-0 running", () => (hosts[0]!.vms.has("vm-0") ? true : undefined));
    const vms = await bus.bucket("vms", v1.VmRecord, { fenced: { epochOf: () => 0 }, bindOnly: true });
    const lateWrites = new Set<string>();
    const following = await vms.follow({
      onChange: (change) => {
        if (change.key.startsWith("late-") && change.value) lateWrites.add(change.key);
      },
      onCorrupt: () => undefined,
    });
    cleanups.push(() => following.stop());
    const epochBefore = (await status(bus)).lease?.epoch ?? 0;
    const active = await activeEvent(bus);

    const pausedAt = Date.now();
    first.signal("SIGSTOP");
    // Sent while controller-a is the only server: they wait in its socket, ahead of the news that it was deposed.
    // Settled from the start, so their refusals are handled whenever they come.
    const late = Promise.allSettled(Array.from({ length: 8 }, (_, i) => bus.call(computeService.CreateVm, { name: `late-${i}`, spec }, { timeoutMs: 20_000 })));
    const { afterMs, status: after } = await takeover(bus, active, pausedAt);
    expect(afterMs).toBeLessThan(2_000);
    expect(after.lease?.epoch).toBe(epochBefore + 1);
    // controller-a still holds its subscription to the API, so about half of these wait in its socket too.
    const reads = Promise.allSettled(Array.from({ length: 16 }, () => bus.call(controllerService.GetControllerStatus, {}, { timeoutMs: 20_000 })));

    first.signal("SIGCONT");
    // Whatever controller-a answers is a refusal: never that it is active, never an acknowledgement.
    const readAnswers = await reads;
    for (const answer of readAnswers) {
      if (answer.status === "fulfilled") expect(answer.value).toMatchObject({ controllerId: "controller-b", lease: { epoch: epochBefore + 1 } });
      else expect(answer.reason).toMatchObject({ code: "UNAVAILABLE", message: expect.not.stringMatching(/got no reply/) });
    }
    expect(readAnswers.filter((a) => a.status === "rejected").length).toBeGreaterThan(0);
    for (const answer of await late) {
      expect(answer.status).toBe("rejected");
      expect((answer as PromiseRejectedResult).reason).toMatchObject({ code: "UNAVAILABLE", message: expect.not.stringMatching(/got no reply/) });
    }
    await eventually("controller-a deposed", () => (first.output().includes("lost the controller lease") ? true : undefined));
    await eventually("only controller-b serving", async () => ((await serving(prefix)).join() === "controller-b" ? true : undefined));
    const kept = await bus.call(computeService.CreateVm, { name: "vm-b", spec });
    // Nothing it may have written after it was deposed stays: the late VMs are in neither KV nor the API.
    await eventually("no late VM in KV", async () => {
      for (let i = 0; i < 8; i++) if (await vms.get(`late-${i}`)) return undefined;
      return true;
    });
    for (let i = 0; i < 8; i++) await expect(bus.call(computeService.GetVm, { vmId: `late-${i}` })).rejects.toMatchObject({ code: "NOT_FOUND" });
    const revertedBefore = (await status(bus)).writesReverted;
    expect(revertedBefore).toBeGreaterThanOrEqual(lateWrites.size);

    // A write of the deposed epoch landing now (one in flight when it was deposed) is undone at once.
    const zombie = await bus.bucket("vms", v1.VmRecord, { fenced: { epochOf: () => epochBefore }, bindOnly: true });
    await zombie.put("zombie-1", { vm: { ...vm0, id: "zombie-1", incarnation: "zombie" } });
    await zombie.put("vm-0", { vm: { ...vm0, powerState: v1.PowerState.POWER_STATE_OFF, generation: 2 } });
    await eventually("the zombie writes undone", async () => ((await status(bus)).writesReverted >= revertedBefore + 2 ? true : undefined));
    expect(await vms.get("zombie-1")).toBeNull();
    expect((await vms.get("vm-0"))?.value.vm).toMatchObject({ powerState: v1.PowerState.POWER_STATE_ON, generation: 1, incarnation: vm0.incarnation });
    await expect(bus.call(computeService.GetVm, { vmId: "zombie-1" })).rejects.toMatchObject({ code: "NOT_FOUND" });
    expect((await bus.call(computeService.GetVm, { vmId: "vm-0" })).vm).toMatchObject({ powerState: v1.PowerState.POWER_STATE_ON, generation: 1 });

    // What the new controller acknowledged stands, answered by it alone.
    for (let i = 0; i < 10; i++) {
      const { vm } = await bus.call(computeService.GetVm, { vmId: "vm-b" });
      expect(vm?.incarnation).toBe(kept.vm?.incarnation);
    }
    expect((await listAllVms(bus)).map((vm) => vm.id)).toEqual(["vm-0", "vm-b"]);
    await eventually("vm-b realized", () => (hosts.some((h) => h.vms.has("vm-b")) ? true : undefined));
    for (const h of hosts) for (const id of h.vms.keys()) expect(id).toMatch(/^vm-/);
    expect(hosts[0]!.vms.get("vm-0")?.state).toBe(v1.VmState.VM_STATE_RUNNING);
    await eventually("both hosts connected", async () => {
      const listed = (await bus.call(hostService.ListHosts, {})).hosts;
      return listed.every((h) => h.state === v1.HostState.HOST_STATE_CONNECTED) ? true : undefined;
    });
    expect(first.child.exitCode).toBeNull();
  });
});
