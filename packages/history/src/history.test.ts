// Proves the event history on a real nats-server: it keeps events and VM
// state reports but not heartbeats, a reader that comes later gets them in
// order, a follower gets what comes next, a foreign payload is skipped and
// counted, and making the history twice is harmless.

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect } from "nats";
import { Bus } from "@simdc/bus";
import { createLogger } from "@simdc/common";
import { simdc } from "@simdc/proto";
import { eventually, startTestNats, type TestNats } from "@simdc/testkit";
import { eventMatches, readEvents, type DatacenterEvent } from "./mod.js";

import v1 = simdc.v1;

let nats: TestNats;
let bus: Bus;

beforeAll(async () => {
  nats = await startTestNats();
  bus = await Bus.connect({ servers: nats.url, processId: "test-1", role: "cli", logger: createLogger({ service: "test", id: "test-1", level: "silent" }) });
  await bus.ensureEventHistory();
  await bus.ensureEventHistory();
});

afterAll(async () => {
  await bus?.close();
  await nats?.dispose();
});

describe("history", () => {
  it("history: keeps events and VM state reports, not heartbeats; a later reader gets them in order", async () => {
    const s = bus.subjects;
    bus.publish(s.event("host", "host-1", "disconnected"), v1.Event, {
      kind: v1.EventKind.EVENT_KIND_HOST_DISCONNECTED,
      objectId: "host-1",
      timeMs: 1_000,
      message: "host host-1 sent no heartbeat",
      source: "controller-1",
      status: { code: v1.ErrorCode.ERROR_CODE_UNAVAILABLE, message: "heartbeats missed" },
    });
    bus.publish(s.event("host", "host-1", "heartbeat"), v1.HostHeartbeat, { hostId: "host-1" });
    bus.publish(s.event("host", "host-2", "vm"), v1.VmStatus, { vmId: "vm-1", state: v1.VmState.VM_STATE_RUNNING, hostId: "host-2", observedGeneration: 3, incarnation: "i1", timeMs: 2_000 });
    bus.publish(s.event("process", "agent-1", "kill"), v1.Event, { kind: v1.EventKind.EVENT_KIND_PROCESS_SIGNALED, objectId: "agent-1", timeMs: 3_000, message: "kill agent-1", source: "supervisor", cause: "experiment:kill-1" });
    await bus.flush();
    const seen: DatacenterEvent[] = [];
    await eventually("three events kept", async () => {
      seen.length = 0;
      await readEvents(bus, { from: "all", follow: false }, (e) => void seen.push(e));
      return seen.length === 3 ? true : undefined;
    });
    expect(seen).toEqual([
      {
        timeMs: 1_000,
        kind: "host-disconnected",
        objectKind: "host",
        objectId: "host-1",
        message: "host host-1 sent no heartbeat",
        source: "controller-1",
        status: "UNAVAILABLE: heartbeats missed",
      },
      {
        timeMs: 2_000,
        kind: "vm-state-changed",
        objectKind: "vm",
        objectId: "vm-1",
        message: "vm vm-1 is running on host-2",
        source: "host-2",
        hostId: "host-2",
        state: "running",
        observedGeneration: 3,
        incarnation: "i1",
      },
      { timeMs: 3_000, kind: "process-signaled", objectKind: "process", objectId: "agent-1", message: "kill agent-1", source: "supervisor", cause: "experiment:kill-1" },
    ]);
    expect(seen.filter((e) => eventMatches(e, ["host"], []))).toHaveLength(1);
    expect(seen.filter((e) => eventMatches(e, [], ["host-2"])).map((e) => e.objectId)).toEqual(["vm-1"]);
    expect(seen.filter((e) => eventMatches(e, ["vm-state-changed", "process-signaled"], ["agent-1"])).map((e) => e.kind)).toEqual(["process-signaled"]);
  });

  it("history: a follower from now gets only what comes next, and a payload that does not decode is skipped and counted", async () => {
    const stop = new AbortController();
    const got: DatacenterEvent[] = [];
    const following = readEvents(bus, { from: "new", follow: true, signal: stop.signal }, (e) => void got.push(e));
    // The follower's consumer exists once a first probe event reaches it.
    await eventually("the follower is listening", async () => {
      bus.publish(bus.subjects.event("fault", "probe", "added"), v1.Event, { kind: v1.EventKind.EVENT_KIND_FAULT_ADDED, objectId: "probe", timeMs: 1 });
      await bus.flush();
      return got.length > 0 ? true : undefined;
    });
    got.length = 0;
    // A foreign publisher's bytes, which are no v1.Event.
    const raw = await connect({ servers: nats.url });
    raw.publish(bus.subjects.event("vm", "vm-9", "created"), new Uint8Array([0xff, 0xff, 0xff]));
    await raw.flush();
    await raw.close();
    bus.publish(bus.subjects.event("vm", "vm-2", "created"), v1.Event, { kind: v1.EventKind.EVENT_KIND_VM_CREATED, objectId: "vm-2", timeMs: 5_000, message: "vm vm-2 placed on host-1" });
    await eventually("the new event", () => (got.some((e) => e.objectId === "vm-2") ? true : undefined));
    stop.abort();
    const result = await following;
    // (Probes sent while the consumer was being made may still come in.)
    expect(got.map((e) => e.objectId).filter((id) => id !== "probe")).toEqual(["vm-2"]);
    expect(result.undecodable).toBe(1);
  });
});
