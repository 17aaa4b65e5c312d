// Proves the bus against a real nats-server: typed request/reply with the
// standard service error headers, $SRV discovery with proto method names,
// malformed input answered (not crashed on), and KV compare-and-set.

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect, type NatsConnection } from "nats";
import { simdc } from "@simdc/proto";
import { notFound, SimdcError } from "@simdc/common";
import { startTestNats, connectTestBus, type TestNats } from "@simdc/testkit";
import { computeService, endpoint, hostAgentService, hostScope } from "./mod.js";

import v1 = simdc.v1;

let nats: TestNats;
// The testkit connects with the built package; its Bus is this one, compiled.
let server: Awaited<ReturnType<typeof connectTestBus>>;
let client: Awaited<ReturnType<typeof connectTestBus>>;
let raw: NatsConnection;
let handled = 0;

beforeAll(async () => {
  nats = await startTestNats();
  server = await connectTestBus(nats.url, { processId: "server-1" });
  client = await connectTestBus(nats.url);
  raw = await connect({ servers: nats.url });
  await server.serve({ role: "controller", description: "test" }, [
    endpoint(computeService.GetVm, (req) => {
      handled += 1;
      if (req.vmId === "vm-1") return { vm: { id: "vm-1", generation: 3 } };
      if (req.vmId === "crash") throw new Error("boom");
      throw notFound(`vm ${req.vmId} not found`);
    }),
  ]);
});

afterAll(async () => {
  await raw?.close();
  await client?.close();
  await server?.close();
  await nats?.dispose();
});

describe("bus", () => {
  it("bus: request/reply decodes the typed response", async () => {
    const res = await client.call(computeService.GetVm, { vmId: "vm-1" });
    expect(res.vm?.id).toBe("vm-1");
    expect(res.vm?.generation).toBe(3);
  });

  it("bus: a typed error travels in the standard service error headers", async () => {
    const reply = await raw.request("simdc.api.v1.ComputeService.GetVm", v1.GetVmRequest.encode({ vmId: "vm-9" }).finish());
    expect(reply.headers?.get("Nats-Service-Error-Code")).toBe("404");
    expect(reply.headers?.get("Nats-Service-Error")).toBe("NOT_FOUND: vm vm-9 not found");
    await expect(client.call(computeService.GetVm, { vmId: "vm-9" })).rejects.toMatchObject({
      code: "NOT_FOUND",
      message: "vm vm-9 not found",
    });
  });

  it("bus: a handler that throws a plain error answers INTERNAL and the server lives on", async () => {
    const err = await client.call(computeService.GetVm, { vmId: "crash" }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SimdcError);
    expect((err as SimdcError).code).toBe("INTERNAL");
    expect((await client.call(computeService.GetVm, { vmId: "vm-1" })).vm?.id).toBe("vm-1");
  });

  it("bus: a malformed protobuf is answered INVALID_ARGUMENT without reaching the handler", async () => {
    const before = handled;
    const garbage = new Uint8Array([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01]);
    const reply = await raw.request("simdc.api.v1.ComputeService.GetVm", garbage);
    expect(reply.headers?.get("Nats-Service-Error-Code")).toBe("400");
    expect(reply.headers?.get("Nats-Service-Error")).toMatch(/^INVALID_ARGUMENT: malformed simdc.v1.GetVmRequest/);
    expect(handled).toBe(before);
  });

  it("bus: $SRV.INFO lists each endpoint with the proto method it serves", async () => {
    const reply = await raw.request("$SRV.INFO.dc1-controller");
    const info = JSON.parse(new TextDecoder().decode(reply.data)) as {
      name: string;
      metadata: Record<string, string>;
      endpoints: { name: string; subject: string; metadata: Record<string, string> }[];
    };
    expect(info.name).toBe("dc1-controller");
    expect(info.metadata["dc"]).toBe("dc1");
    const getVm = info.endpoints.find((e) => e.name === "GetVm");
    expect(getVm?.subject).toBe("simdc.api.v1.ComputeService.GetVm");
    expect(getVm?.metadata["rpc"]).toBe("simdc.v1.ComputeService/GetVm");
  });

  it("bus: a call nobody serves fails UNAVAILABLE quickly", async () => {
    const started = Date.now();
    await expect(client.call(computeService.ListVms, {}, { timeoutMs: 3_000 })).rejects.toMatchObject({
      code: "UNAVAILABLE",
    });
    expect(Date.now() - started).toBeLessThan(2_000);
  });

  it("bus: a subscriber survives messages that do not decode", async () => {
    const got: string[] = [];
    const sub = client.subscribe("simdc.evt.test.>", v1.Event, (e) => {
      got.push(e.objectId);
    });
    await client.flush();
    raw.publish("simdc.evt.test.x", new Uint8Array([0xff, 0xff, 0xff]));
    raw.publish("simdc.evt.test.y", v1.Event.encode({ objectId: "ok" }).finish());
    await raw.flush();
    await new Promise((r) => setTimeout(r, 200));
    expect(got).toEqual(["ok"]);
    sub.unsubscribe();
  });
});

describe("kv", () => {
  it("kv: create refuses an existing key and update refuses a stale revision", async () => {
    const bucket = await client.bucket("test-vms", v1.Vm);
    const rev = await bucket.create("vm-1", { id: "vm-1", generation: 1 });
    await expect(bucket.create("vm-1", { id: "vm-1" })).rejects.toMatchObject({ code: "ALREADY_EXISTS" });
    const rev2 = await bucket.update("vm-1", { id: "vm-1", generation: 2 } as v1.Vm, rev);
    await expect(bucket.update("vm-1", { id: "vm-1", generation: 9 } as v1.Vm, rev)).rejects.toMatchObject({
      code: "CONFLICT",
    });
    expect((await bucket.get("vm-1"))?.value.generation).toBe(2);
    expect((await bucket.get("vm-1"))?.revision).toBe(rev2);
  });

  it("kv: a fenced bucket stamps the writer's epoch and follow reports changes in order after the stored keys", async () => {
    let epoch = 3;
    const bucket = await client.bucket("test-fenced", v1.Vm, { fenced: { epochOf: () => epoch }, history: 3 });
    await bucket.put("vm-1", { id: "vm-1", generation: 1 });
    const seen: string[] = [];
    const following = await bucket.follow({
      onChange: (c) => seen.push(`${c.key}:${c.value?.generation ?? "gone"}@${c.epoch}`),
      onCorrupt: () => undefined,
    });
    expect(seen).toEqual(["vm-1:1@3"]);
    epoch = 4;
    const rev = await bucket.put("vm-1", { id: "vm-1", generation: 2 });
    await bucket.delete("vm-1", rev);
    await expect.poll(() => seen.length).toBe(3);
    expect(seen).toEqual(["vm-1:1@3", "vm-1:2@4", "vm-1:gone@0"]);
    expect((await bucket.history("vm-1")).map((h) => h.epoch)).toEqual([3, 4, 0]);
    following.stop();
  });

  it("kv: the barrier mark orders every write before it below, every write after it above", async () => {
    const bucket = await client.bucket("test-barrier", v1.Vm);
    const before = await bucket.put("vm-1", { id: "vm-1" });
    const barrier = await bucket.writeBarrier();
    const after = await bucket.put("vm-2", { id: "vm-2" });
    expect(before).toBeLessThan(barrier);
    expect(after).toBeGreaterThan(barrier);
  });

  it("kv: loadAll returns every live key in one pass", async () => {
    const bucket = await client.bucket("test-load", v1.Vm);
    expect((await bucket.loadAll(() => undefined)).size).toBe(0);
    for (let i = 0; i < 50; i++) await bucket.put(`vm-${i}`, { id: `vm-${i}`, generation: i });
    await bucket.delete("vm-7");
    const all = await bucket.loadAll(() => undefined);
    expect(all.size).toBe(49);
    expect(all.get("vm-42")?.value.generation).toBe(42);
    expect(all.has("vm-7")).toBe(false);
  });
});

describe("bus limits", () => {
  it("bus: a reply over the server's payload limit becomes RESOURCE_EXHAUSTED, and the server lives on", async () => {
    const big = await connectTestBus(nats.url, { processId: "big-1" });
    const scopeId = hostScope("agent-big", "host-big");
    await big.serve({ role: "big", scopeId, description: "test" }, [
      endpoint(hostAgentService.Reregister, () => ({})),
      endpoint(hostAgentService.GetHostState, () => ({ hostId: "x".repeat(2 * 1024 * 1024) })),
    ]);
    await expect(client.call(hostAgentService.GetHostState, {}, { scopeId })).rejects.toMatchObject({
      code: "RESOURCE_EXHAUSTED",
      message: expect.stringMatching(/over the server's 1048576-byte limit/),
    });
    await expect(client.call(hostAgentService.Reregister, {}, { scopeId })).resolves.toBeDefined();
    await big.close();
  });

  it("bus: a publish over the payload limit is not sent, and says so in a PUBLISH_FAILED event", async () => {
    const events: v1.Event[] = [];
    const sub = raw.subscribe("simdc.evt.process.loud-1.publish-failed", {
      callback: (_err, msg) => events.push(v1.Event.decode(msg.data)),
    });
    await raw.flush();
    const loud = await connectTestBus(nats.url, { processId: "loud-1" });
    const sent = loud.publish("simdc.evt.host.host-1.metrics", v1.HostMetrics, { hostId: "x".repeat(2 * 1024 * 1024) }, "host-1");
    expect(sent).toBe(false);
    expect(loud.publishFailureCount).toBe(1);
    await loud.flush();
    await expect.poll(() => events.length).toBe(1);
    expect(events[0]).toMatchObject({ kind: v1.EventKind.EVENT_KIND_PUBLISH_FAILED, objectId: "host-1" });
    expect(events[0]?.message).toMatch(/simdc.v1.HostMetrics on simdc.evt.host.host-1.metrics.*over the server's 1048576-byte limit/);
    sub.unsubscribe();
    await loud.close();
  });
});
