// Proves that a controller process killed between any two steps of a change
// (--crash-at) leaves nothing half done: the client's call fails, the
// controller started again finishes the change or lets the retry (same
// request id) finish it, and in the end there is one incarnation of the
// thing, realized once where it belongs (the host runs it, the SAN node holds
// one backing file of it, or neither holds it any more).

import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { computeService, controllerService, networkService, storageService, type Bus } from "@simdc/bus";
import { simdc } from "@simdc/proto";
import { connectTestBus, eventually, startService, startTestNats, StandInHost, StandInSanNode, type TestNats, type TestService } from "@simdc/testkit";
import { crashPointNames, parseCrashPoints, type CrashPointName } from "./crash-points.js";

import v1 = simdc.v1;

const heartbeatIntervalMs = 100;
const spec = { vcpus: 1, memoryMib: 64, bootVolume: "vol-1" };
const waitHosts = (requestId: string) => ({ requestId, wait: v1.WaitFor.WAIT_FOR_HOSTS, waitTimeoutMs: 10_000 });

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

function startController(prefix: string, crashAt = ""): TestService {
  const controller = startService("controller", [
    "--nats-url", nats.url,
    "--prefix", prefix,
    "--controller-id", "controller-1",
    "--lease-ttl-ms", "1000",
    "--heartbeat-interval-ms", String(heartbeatIntervalMs),
    "--crash-at", crashAt,
  ]);
  cleanups.push(() => controller.stop());
  return controller;
}

async function serving(bus: Bus): Promise<void> {
  await eventually("the controller serving", () => bus.call(controllerService.GetControllerStatus, {}, { timeoutMs: 500 }), 15_000);
}

/** A datacenter with vol-1 and whatever `prepare` makes; its controller is stopped. */
async function datacenter(prepare: (bus: Bus) => Promise<unknown>) {
  prefixCounter += 1;
  const prefix = `crash${prefixCounter}`;
  const bus = await connectTestBus(nats.url, { prefix });
  cleanups.push(() => bus.close());
  const setup = startController(prefix);
  await serving(bus);
  const san = new StandInSanNode(bus, "san-1");
  await san.start(heartbeatIntervalMs);
  cleanups.push(() => san.stop());
  await bus.call(storageService.CreateVolume, { name: "vol-1", sizeMib: 16 });
  const host = new StandInHost(bus, "host-1");
  await host.start(heartbeatIntervalMs);
  cleanups.push(() => host.stop());
  await prepare(bus);
  await setup.stop();
  return { prefix, bus, san, host };
}

type Datacenter = Awaited<ReturnType<typeof datacenter>>;

interface Change {
  /** What is there before the change. */
  prepare(bus: Bus): Promise<unknown>;
  /** The change, asked with request id `requestId`. */
  call(dc: Datacenter, requestId: string, timeoutMs?: number): Promise<unknown>;
  /** Holds once the change is done in full, and done once. */
  converged(dc: Datacenter, answer: unknown): Promise<boolean>;
  points: CrashPointName[];
}

const nothing = (): Promise<void> => Promise.resolve();
const vm1 = (bus: Bus): Promise<unknown> => bus.call(computeService.CreateVm, { name: "vm-1", spec, mutation: waitHosts("setup-vm-1") });

const vmOf = (answer: unknown): v1.Vm => (answer as { vm: v1.Vm }).vm;

const changes: Record<string, Change> = {
  CreateVolume: {
    prepare: nothing,
    points: ["record-stored", "backing-created", "answer-stored", "before-answer"],
    call: ({ bus }, requestId, timeoutMs) => bus.call(storageService.CreateVolume, { name: "vol-2", sizeMib: 8, mutation: waitHosts(requestId) }, { timeoutMs }),
    async converged({ bus, san }, answer) {
      const { volume } = await bus.call(storageService.GetVolume, { volumeId: "vol-2" });
      const incarnation = (answer as v1.CreateVolumeResponse).volume?.incarnation;
      return volume?.state === v1.VolumeState.VOLUME_STATE_READY && volume.incarnation === incarnation && san.volumes.get("vol-2")?.incarnation === incarnation;
    },
  },
  DeleteVolume: {
    prepare: (bus) => bus.call(storageService.CreateVolume, { name: "vol-2", sizeMib: 8 }),
    points: ["record-stored", "backing-deleted", "answer-stored", "before-answer"],
    call: ({ bus }, requestId, timeoutMs) => bus.call(storageService.DeleteVolume, { volumeId: "vol-2", mutation: waitHosts(requestId) }, { timeoutMs }),
    async converged({ bus, san }) {
      const gone = await bus.call(storageService.GetVolume, { volumeId: "vol-2" }).then(
        () => false,
        (err: { code?: string }) => err.code === "NOT_FOUND",
      );
      return gone && !san.volumes.has("vol-2");
    },
  },
  CreateVm: {
    prepare: nothing,
    points: ["record-stored", "answer-stored", "before-answer", "document-written"],
    call: ({ bus }, requestId, timeoutMs) => bus.call(computeService.CreateVm, { name: "vm-2", spec, mutation: waitHosts(requestId) }, { timeoutMs }),
    async converged({ bus, host }, answer) {
      const { vms } = await bus.call(computeService.ListVms, {});
      const running = host.vms.get("vm-2");
      return (
        vms.filter((vm) => vm.id === "vm-2").length === 1 &&
        running?.incarnation === vmOf(answer).incarnation &&
        running.state === v1.VmState.VM_STATE_RUNNING &&
        host.removed.every((r) => r.vmId !== "vm-2")
      );
    },
  },
  StopVm: {
    prepare: vm1,
    points: ["record-stored", "answer-stored", "before-answer", "document-written"],
    call: ({ bus }, requestId, timeoutMs) => bus.call(computeService.StopVm, { vmId: "vm-1", mutation: waitHosts(requestId) }, { timeoutMs }),
    async converged({ bus, host }, answer) {
      const { vm } = await bus.call(computeService.GetVm, { vmId: "vm-1" });
      // One change: the generation went up once.
      return vm?.generation === 2 && vmOf(answer).generation === 2 && host.vms.get("vm-1")?.state === v1.VmState.VM_STATE_STOPPED;
    },
  },
  DeleteVm: {
    prepare: vm1,
    points: ["record-stored", "answer-stored", "before-answer", "document-written"],
    call: ({ bus }, requestId, timeoutMs) => bus.call(computeService.DeleteVm, { vmId: "vm-1", mutation: waitHosts(requestId) }, { timeoutMs }),
    async converged({ bus, host }) {
      const { vms } = await bus.call(computeService.ListVms, {});
      return vms.every((vm) => vm.id !== "vm-1") && !host.vms.has("vm-1") && host.removed.filter((r) => r.vmId === "vm-1").length === 1;
    },
  },
  // Deletes of the network kinds leave a tombstone, so the retry of one whose answer was lost is answered, not NOT_FOUND.
  DeleteNetwork: {
    prepare: (bus) => bus.call(networkService.CreateNetwork, { name: "net-1", mode: v1.NetworkMode.NETWORK_MODE_HOST_ONLY, subnets: ["10.9.0.0/24"] }),
    points: ["record-stored", "answer-stored", "before-answer"],
    call: ({ bus }, requestId, timeoutMs) => bus.call(networkService.DeleteNetwork, { networkId: "net-1", mutation: waitHosts(requestId) }, { timeoutMs }),
    async converged({ bus }) {
      const { networks } = await bus.call(networkService.ListNetworks, {});
      if (networks.some((n) => n.id === "net-1")) return false;
      // The name is free again: a create takes it back over the tombstone.
      const { network } = await bus.call(networkService.CreateNetwork, { name: "net-1", mode: v1.NetworkMode.NETWORK_MODE_HOST_ONLY, subnets: ["10.9.0.0/24"] });
      return network?.id === "net-1";
    },
  },
  DeleteSecurityGroup: {
    prepare: (bus) => bus.call(networkService.CreateSecurityGroup, { name: "sg-1", rules: [{ protocol: v1.SecurityProtocol.SECURITY_PROTOCOL_ICMP }] }),
    points: ["record-stored", "answer-stored", "before-answer"],
    call: ({ bus }, requestId, timeoutMs) => bus.call(networkService.DeleteSecurityGroup, { securityGroupId: "sg-1", mutation: waitHosts(requestId) }, { timeoutMs }),
    async converged({ bus }) {
      return bus.call(networkService.GetSecurityGroup, { securityGroupId: "sg-1" }).then(
        () => false,
        (err: { code?: string }) => err.code === "NOT_FOUND",
      );
    },
  },
};

const cases = Object.entries(changes).flatMap(([name, change]) => change.points.map((point) => ({ name, change, point })));

describe("crash points", () => {
  it("crash points: an unknown point is a bad flag, named with the known ones", () => {
    expect(() => parseCrashPoints("record-stored,nowhere")).toThrow(/"nowhere" is not a crash point: record-stored, answer-stored/);
    expect([...parseCrashPoints(" record-stored , before-answer ")]).toEqual(["record-stored", "before-answer"]);
  });

  it("crash points: a controller given an unknown point exits with a clear error before it does anything", async () => {
    prefixCounter += 1;
    const controller = startController(`crash${prefixCounter}`, "nowhere");
    expect(await controller.exited).not.toBe(0);
    await eventually("the refusal printed", () => (/--crash-at "nowhere" is not a crash point/.test(controller.output()) ? true : undefined), 5_000);
  });

  it("crash points: every point is reached by some change below", () => {
    expect(new Set(cases.map((c) => c.point))).toEqual(new Set(crashPointNames));
  });

  it.each(cases)("crash points: $name killed at $point converges once the controller is back and the call is retried", async ({ change, point }) => {
    const dc = await datacenter(change.prepare);
    const crashing = startController(dc.prefix, point);
    await serving(dc.bus);
    const requestId = `req-${point}`;
    // The controller dies before it answers: the caller sees a failure, not a success.
    await expect(change.call(dc, requestId, 3000)).rejects.toMatchObject({ code: expect.stringMatching(/^(UNAVAILABLE|DEADLINE_EXCEEDED)$/) });
    expect(await crashing.exited).toBe("SIGKILL");
    // Its last words may still be in the pipe when the exit is seen.
    await eventually("the crash logged", () => (crashing.output().includes(`"crashPoint":"${point}"`) ? true : undefined), 5_000);

    startController(dc.prefix);
    await serving(dc.bus);
    const answer = await change.call(dc, requestId, 15_000);
    await eventually(`${point}: the change done once`, async () => ((await change.converged(dc, answer)) ? true : undefined), 15_000);
  });
});
