// Proves that the controller does not blame hosts for its own outage: while
// its connection to NATS is down (the nats-server stopped for several
// liveness timeouts and restarted on the same port and store) it hears no
// heartbeat, and once it is back it gives every host a full timeout of grace
// instead of declaring them disconnected; a host that stays silent after the
// outage is still disconnected as usual.

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { computeService, controllerService, hostService, storageService, type Bus } from "@simdc/bus";
import { findNatsServer, startNatsServer, type NatsServerHandle } from "@simdc/cli";
import { createLogger, wallClock } from "@simdc/common";
import { simdc } from "@simdc/proto";
import { connectTestBus, eventually, startTestNats, StandInHost, StandInSanNode, type TestNats } from "@simdc/testkit";
import { Controller } from "./controller.js";

import v1 = simdc.v1;

const heartbeatIntervalMs = 150;
const heartbeatMissesMax = 3;
const timeoutMs = heartbeatIntervalMs * heartbeatMissesMax;
/** How long a KV write may hang before the NATS client gives up (its JetStream default). */
const kvRequestTimeoutMs = 5_000;

let nats: TestNats;
let restarted: NatsServerHandle | null = null;

beforeAll(async () => {
  nats = await startTestNats();
});

afterAll(async () => {
  await restarted?.stop();
  await nats?.dispose();
});

async function hostRecords(bus: Bus): Promise<Map<string, { state: v1.HostState; revision: number }>> {
  const bucket = await bus.bucket("hosts", v1.Host, { fenced: { epochOf: () => 0 }, bindOnly: true });
  const out = new Map<string, { state: v1.HostState; revision: number }>();
  for (const id of ["host-1", "host-2"]) {
    const stored = await bucket.get(id);
    out.set(id, { state: stored!.value.state, revision: stored!.revision });
  }
  return out;
}

describe("controller outage", () => {
  it("outage: while the controller's own connection to NATS is down no host is declared disconnected", async () => {
    const controllerBus = await connectTestBus(nats.url, { processId: "controller-1" });
    const logger = createLogger({ service: "controller", id: "controller-1", level: process.env["LOG_LEVEL"] ?? "silent" });
    const controller = await Controller.start(
      controllerBus,
      {
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
      },
      wallClock,
      logger,
      1,
    );
    const bus = await connectTestBus(nats.url);
    const hosts: StandInHost[] = [];
    const san = new StandInSanNode(bus, "san-1");
    try {
      await eventually("controller serving", () => bus.call(controllerService.GetControllerStatus, {}, { timeoutMs: 500 }), 15_000);
      await san.start(heartbeatIntervalMs);
      await bus.call(storageService.CreateVolume, { name: "vol-1", sizeMib: 8 });
      for (const id of ["host-1", "host-2"]) {
        const h = new StandInHost(bus, id);
        await h.start(heartbeatIntervalMs);
        hosts.push(h);
      }
      await bus.call(computeService.CreateVm, { name: "vm-1", spec: { vcpus: 1, memoryMib: 64, bootVolume: "vol-1" } });
      await eventually("vm-1 running", () => (hosts[0]!.vms.has("vm-1") ? true : undefined));
      const before = await hostRecords(bus);
      expect([...before.values()].map((r) => r.state)).toEqual([v1.HostState.HOST_STATE_CONNECTED, v1.HostState.HOST_STATE_CONNECTED]);
      const disconnectedEvents: string[] = [];
      bus.subscribe(bus.subjects.event("host", "*", "disconnected"), v1.Event, (e) => void disconnectedEvents.push(e.objectId));
      await bus.flush();

      // The server goes away for four liveness timeouts: nobody hears anybody.
      const outageAt = Date.now();
      await nats.stop();
      await new Promise((r) => setTimeout(r, 4 * timeoutMs));
      restarted = await startNatsServer(findNatsServer()!, { port: nats.port, storeDir: nats.storeDir });
      await eventually("the controller answering again", () => bus.call(controllerService.GetControllerStatus, {}, { timeoutMs: 500 }), 15_000);
      await eventually("the controller hearing heartbeats again", async () => {
        const { host } = await bus.call(hostService.GetHost, { hostId: "host-2" }, { timeoutMs: 500 });
        return (host?.lastHeartbeatMs ?? 0) > Date.now() - heartbeatIntervalMs ? true : undefined;
      });
      // Three more liveness timeouts of heartbeats, for the controller to (wrongly) judge the hosts in.
      const beats = new Map<string, number>();
      bus.subscribe(bus.subjects.event("host", "*", "heartbeat"), v1.HostHeartbeat, (beat) => void beats.set(beat.hostId, (beats.get(beat.hostId) ?? 0) + 1));
      // A KV write the controller had begun while deaf would land when the connection is back, or fail
      // by the KV request timeout (5 s): the window also covers that long after the outage began.
      await eventually(
        "three timeouts of heartbeats, and the KV request timeout",
        () => (Math.min(beats.get("host-1") ?? 0, beats.get("host-2") ?? 0) >= 3 * heartbeatMissesMax && Date.now() - outageAt > kvRequestTimeoutMs + 500 ? true : undefined),
        15_000,
      );
      // Not one write: never marked disconnected, so never marked connected again either.
      expect(await hostRecords(bus)).toEqual(before);
      expect(disconnectedEvents).toEqual([]);
      expect((await bus.call(computeService.GetVm, { vmId: "vm-1" })).vm?.status?.state).toBe(v1.VmState.VM_STATE_RUNNING);

      // The controller still judges: a host that stays silent now is disconnected.
      hosts[1]!.paused = true;
      await eventually("host-2 disconnected", async () => {
        const { host } = await bus.call(hostService.GetHost, { hostId: "host-2" });
        return host?.state === v1.HostState.HOST_STATE_DISCONNECTED ? true : undefined;
      });
      expect((await hostRecords(bus)).get("host-1")).toEqual(before.get("host-1"));
      await eventually("the disconnected event", () => (disconnectedEvents.includes("host-2") ? true : undefined));
      expect(disconnectedEvents).toEqual(["host-2"]);
    } finally {
      for (const h of hosts) h.stop();
      san.stop();
      await controller.stop();
      await controllerBus.close();
      await bus.close();
    }
  });
});
