// Proves the bus against a real nats-server: typed request/reply with the
// standard service error headers, $SRV discovery with proto method names,
// malformed input answered (not crashed on), and KV compare-and-set.

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect, type NatsConnection } from "nats";
import { simdc } from "@simdc/proto";
import { notFound, SimdcError } from "@simdc/common";
import { startTestNats, connectTestBus, type TestNats } from "@simdc/testkit";
import { Bus, computeService, endpoint, hostAgentService } from "./mod.js";

import v1 = simdc.v1;

let nats: TestNats;
let server: Bus;
let client: Bus;
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
    await big.serve({ role: "big", scopeId: "host-big", description: "test" }, [
      endpoint(hostAgentService.RemoveVm, () => ({})),
      endpoint(hostAgentService.ApplyVm, () => ({ status: { vmId: "x".repeat(2 * 1024 * 1024) } })),
    ]);
    await expect(client.call(hostAgentService.ApplyVm, { vmId: "vm-1" }, { scopeId: "host-big" })).rejects.toMatchObject({
      code: "RESOURCE_EXHAUSTED",
      message: expect.stringMatching(/over the server's 1048576-byte limit/),
    });
    await expect(client.call(hostAgentService.RemoveVm, { vmId: "vm-1" }, { scopeId: "host-big" })).resolves.toBeDefined();
    await big.close();
  });
});
