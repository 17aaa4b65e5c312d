// Proves that a controller that lost its KV relearns the datacenter from it:
// with every one of its buckets deleted while hosts run VMs, a restarted
// controller starts a new stored state, the hosts and the SAN node register
// again when asked, the VMs are adopted from the hosts' state and the
// volumes from the SAN node's inventory (each with a STATE_ADOPTED event),
// same names, incarnations, placement and power; no host drops or restarts
// a VM on the way, and the adopted state can be changed as any other.

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect, type NatsConnection } from "nats";
import { computeService, controllerService, hostService, storageService, type Bus } from "@simdc/bus";
import { createLogger, wallClock } from "@simdc/common";
import { simdc } from "@simdc/proto";
import { connectTestBus, eventually, startTestNats, StandInHost, StandInSanNode, type TestNats } from "@simdc/testkit";
import { Controller } from "./controller.js";
import type { ControllerConfig } from "./settings.js";

import v1 = simdc.v1;

const heartbeatIntervalMs = 100;
const buckets = ["vms", "volumes", "hosts", "san-nodes", "docs", "controller", "requests"];

let nats: TestNats;
let raw: NatsConnection;

beforeAll(async () => {
  nats = await startTestNats();
  raw = await connect({ servers: nats.url });
});

afterAll(async () => {
  await raw?.close();
  await nats?.dispose();
});

async function startController(): Promise<{ stop(): Promise<void> }> {
  const config: ControllerConfig = {
    controllerId: "controller-1",
    heartbeatIntervalMs,
    heartbeatMissesMax: 3,
    metricsIntervalMs: 10_000,
    cpuOvercommit: 4,
    memoryOvercommit: 1.5,
    kvReplicas: 1,
    leaseTtlMs: 1000,
    inventoryIntervalMs: 500,
    documentChunkBytes: 512 * 1024,
  };
  const bus = await connectTestBus(nats.url, { processId: config.controllerId });
  const logger = createLogger({ service: "controller", id: config.controllerId, level: process.env["LOG_LEVEL"] ?? "silent" });
  const controller = await Controller.start(bus, config, wallClock, logger, 1);
  return {
    async stop() {
      await controller.stop();
      await bus.close();
    },
  };
}

async function serving(bus: Bus): Promise<v1.GetControllerStatusResponse> {
  return eventually("a controller serving", () => bus.call(controllerService.GetControllerStatus, {}, { timeoutMs: 500 }), 15_000);
}

/** What the API says about VMs and volumes, by id, with the fields that must survive. */
async function picture(bus: Bus) {
  const vms = (await bus.call(computeService.ListVms, {})).vms.map((vm) => ({
    id: vm.id,
    hostId: vm.hostId,
    incarnation: vm.incarnation,
    powerState: vm.powerState,
    spec: vm.spec,
    state: vm.status?.state,
  }));
  const volumes = (await bus.call(storageService.ListVolumes, {})).volumes.map((v) => ({
    id: v.id,
    sanNodeId: v.sanNodeId,
    incarnation: v.incarnation,
    sizeMib: v.sizeMib,
    state: v.state,
  }));
  return { vms, volumes };
}

describe("relearning", () => {
  it("relearning: a controller that lost its KV relearns the datacenter from its hosts and SAN nodes", async () => {
    const bus = await connectTestBus(nats.url);
    let controller = await startController();
    const hosts: StandInHost[] = [];
    const san = new StandInSanNode(bus, "san-1");
    try {
      const before = await serving(bus);
      await san.start(heartbeatIntervalMs);
      for (const name of ["vol-1", "vol-2"]) await bus.call(storageService.CreateVolume, { name, sizeMib: 8 });
      for (const id of ["host-1", "host-2"]) {
        const h = new StandInHost(bus, id);
        await h.start(heartbeatIntervalMs);
        hosts.push(h);
      }
      for (const [i, name] of ["vm-1", "vm-2", "vm-3", "vm-4"].entries()) {
        await bus.call(computeService.CreateVm, { name, spec: { vcpus: 1 + i, memoryMib: 64, bootVolume: i % 2 === 0 ? "vol-1" : "vol-2" } });
      }
      await bus.call(computeService.StopVm, { vmId: "vm-3" });
      await bus.call(hostService.GetSyncStatus, { waitHosts: true });
      const known = await eventually("every VM reported", async () => {
        const p = await picture(bus);
        return p.vms.every((vm) => vm.state === v1.VmState.VM_STATE_RUNNING || vm.state === v1.VmState.VM_STATE_STOPPED) ? p : undefined;
      });
      expect(known.vms.map((vm) => [vm.id, vm.hostId, vm.state])).toEqual([
        ["vm-1", "host-1", v1.VmState.VM_STATE_RUNNING],
        ["vm-2", "host-2", v1.VmState.VM_STATE_RUNNING],
        ["vm-3", "host-1", v1.VmState.VM_STATE_STOPPED],
        ["vm-4", "host-2", v1.VmState.VM_STATE_RUNNING],
      ]);
      const bootIds = hosts.map((h) => h.bootId);

      // The controller goes, and its store with it.
      await controller.stop();
      const jsm = await raw.jetstreamManager();
      for (const name of buckets) await jsm.streams.delete(`KV_simdc-${name}`);
      const adopted: v1.Event[] = [];
      bus.subscribe("simdc.evt.*.*.adopted", v1.Event, (e) => void adopted.push(e));
      await bus.flush();

      controller = await startController();
      const after = await serving(bus);
      expect(after.stateId).not.toBe(before.stateId);
      const relearned = await eventually(
        "every VM and volume adopted and reported",
        async () => {
          const p = await picture(bus);
          return p.vms.length === 4 && p.volumes.length === 2 && p.vms.every((vm, i) => vm.state === known.vms[i]!.state) ? p : undefined;
        },
        15_000,
      );
      expect(relearned).toEqual(known);
      expect(adopted.map((e) => e.objectId).sort()).toEqual(["vm-1", "vm-2", "vm-3", "vm-4", "vol-1", "vol-2"]);
      expect(new Set(adopted.map((e) => e.kind))).toEqual(new Set([v1.EventKind.EVENT_KIND_STATE_ADOPTED]));
      // The hosts registered again as they were, and never dropped a VM.
      const listed = (await bus.call(hostService.ListHosts, {})).hosts;
      expect(listed.map((h) => [h.id, h.state, h.bootId])).toEqual([
        ["host-1", v1.HostState.HOST_STATE_CONNECTED, bootIds[0]],
        ["host-2", v1.HostState.HOST_STATE_CONNECTED, bootIds[1]],
      ]);
      for (const h of hosts) expect(h.removed).toEqual([]);
      expect(hosts.map((h) => [...h.vms.keys()].sort())).toEqual([
        ["vm-1", "vm-3"],
        ["vm-2", "vm-4"],
      ]);
      // The hosts run documents of the new state, at generations above what they had realized.
      await eventually("the hosts on the new state", () => (hosts.every((h) => h.applied.at(-1)?.stateId === after.stateId) ? true : undefined));
      const { host } = await bus.call(hostService.GetHost, { hostId: "host-1" });
      expect(host?.vmCount).toBe(2);
      expect(host?.allocatedVcpus).toBe(1 + 3);

      // What was adopted is desired state like any other.
      await bus.call(computeService.StartVm, { vmId: "vm-3", mutation: { wait: v1.WaitFor.WAIT_FOR_HOSTS, waitTimeoutMs: 5_000 } });
      expect(hosts[0]!.vms.get("vm-3")?.state).toBe(v1.VmState.VM_STATE_RUNNING);
      await bus.call(computeService.DeleteVm, { vmId: "vm-4", mutation: { wait: v1.WaitFor.WAIT_FOR_HOSTS, waitTimeoutMs: 5_000 } });
      expect(hosts[1]!.vms.has("vm-4")).toBe(false);
      await expect(bus.call(storageService.DeleteVolume, { volumeId: "vol-1" })).rejects.toMatchObject({ code: "FAILED_PRECONDITION" });
    } finally {
      for (const h of hosts) h.stop();
      san.stop();
      await controller.stop();
      await bus.close();
    }
  });
});
