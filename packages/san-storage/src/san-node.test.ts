// Proves the SAN node on the wire against a real nats-server: every endpoint
// answers bad input (malformed bytes, defaults, bad names, missing or
// over-long incarnations, unknown volumes, out-of-range blocks, over-limit
// requests) with the right typed error in the standard headers and leaves the
// disk exactly as it was; volumes and blocks work end to end; incarnations
// make create idempotent only for the same one and delete refuse another;
// ListBackingVolumes says what the node holds; the node registers on its own
// subject, without volume ids, with a late or grumpy controller stand-in
// (backing off on its clock with seeded jitter) while serving all along, and
// again on Reregister; and it heartbeats at its interval, or the
// controller's, until stopped.

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createHash } from "node:crypto";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { connect, type NatsConnection } from "nats";
import { simdc } from "@simdc/proto";
import { createLogger, errorCodes, ManualClock, Rng, wallClock, wallNowMs, type ErrorCodeName, type Timer } from "@simdc/common";
import { endpoint, sanNodeService, storageService, type Bus } from "@simdc/bus";
import { connectTestBus, eventually, startTestNats, tempDir, type TestNats } from "@simdc/testkit";
import { blocksPerRequestMax, SanNode, volumeSizeMibMax, type SanNodeOptions } from "./mod.js";

import v1 = simdc.v1;

const logger = createLogger({ service: "test", id: "san-node", level: process.env["LOG_LEVEL"] ?? "silent" });
const blockSize = 4096;

let nats: TestNats;
let raw: NatsConnection;
const closers: (() => Promise<void> | void)[] = [];

beforeAll(async () => {
  nats = await startTestNats();
  raw = await connect({ servers: nats.url });
});

afterAll(async () => {
  for (const close of closers.splice(0).reverse()) await close();
  await raw?.close();
  await nats?.dispose();
});

async function bus(prefix: string): Promise<Bus> {
  const b = await connectTestBus(nats.url, { prefix });
  closers.push(() => b.close());
  return b;
}

async function startNode(
  nodeBus: Bus,
  overrides: Partial<SanNodeOptions> & { nodeId: string },
): Promise<{ node: SanNode; dataDir: string }> {
  let dataDir = overrides.dataDir;
  if (!dataDir) {
    const dir = tempDir("san-node");
    closers.push(() => dir.remove());
    dataDir = dir.path;
  }
  const node = await SanNode.start({
    bus: nodeBus,
    logger,
    clock: wallClock,
    random: new Rng(1, "san").random,
    dataDir,
    capacityMib: 1024,
    blockSizeBytes: blockSize,
    heartbeatIntervalMs: 1000,
    registerBackoffMsMin: 50,
    registerBackoffMsMax: 300,
    registerTimeoutMs: 2_000,
    ...overrides,
  });
  closers.push(() => node.stop());
  // The server has the node's subscriptions once its connection's flush returns.
  await nodeBus.flush();
  return { node, dataDir };
}

/** A manual clock that also records every delay given to after() (the node's sleeps between registration attempts). */
class SleepRecordingClock extends ManualClock {
  readonly delaysMs: number[] = [];

  override after(delayMs: number, fn: () => void): Timer {
    this.delaysMs.push(delayMs);
    return super.after(delayMs, fn);
  }
}

/** A stand-in controller that records every registration with the subject it came on. */
async function standInController(
  prefix: string,
  answer: (req: v1.RegisterSanNodeRequest) => v1.RegisterSanNodeResponse.$Properties = (req) => ({ node: { id: req.nodeId } }),
): Promise<{ registrations: { request: v1.RegisterSanNodeRequest; subject: string; data: Uint8Array }[] }> {
  const registrations: { request: v1.RegisterSanNodeRequest; subject: string; data: Uint8Array }[] = [];
  const controller = await bus(prefix);
  // Served with the real method: the bus puts it on <prefix>.api.v1.StorageService.RegisterSanNode.*.
  await controller.serve({ role: "controller", description: "stand-in" }, [
    endpoint(storageService.RegisterSanNode, (request, msg) => {
      registrations.push({ request, subject: msg.subject, data: msg.data });
      return answer(request);
    }),
  ]);
  // Registered with the server before any node asks, so no attempt meets "no responders" by a race.
  await controller.flush();
  return { registrations };
}

/** Every file under `dir` with a hash of its content, so any change on disk shows. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (path: string): void => {
    for (const name of readdirSync(path).sort()) {
      const full = join(path, name);
      const st = statSync(full);
      if (st.isDirectory()) {
        out[`${full}/`] = "dir";
        walk(full);
      } else {
        out[full] = `${st.size}:${createHash("sha256").update(readFileSync(full)).digest("hex")}`;
      }
    }
  };
  walk(dir);
  return out;
}

function blocks(count: number, seed: number): Uint8Array {
  const data = new Uint8Array(count * blockSize);
  for (let i = 0; i < data.length; i++) data[i] = (seed * 7 + i * 13) & 0xff;
  return data;
}

describe("san node: bad input", () => {
  const nodeId = "san-bad";
  const prefix = "badin";
  let dataDir: string;
  let client: Bus;

  beforeAll(async () => {
    const nodeBus = await bus(prefix);
    client = await bus(prefix);
    // 8 MiB of capacity, half of it used by vol-1, so creates can overflow it.
    ({ dataDir } = await startNode(nodeBus, { nodeId, capacityMib: 8 }));
    await client.call(sanNodeService.CreateBackingVolume, { volumeId: "vol-1", sizeMib: 4, incarnation: "inc-1", stateId: "state-1" }, { scopeId: nodeId });
    await client.call(sanNodeService.WriteBlocks, { volumeId: "vol-1", lba: 0, data: blocks(4, 1) }, { scopeId: nodeId });
    await client.call(
      sanNodeService.WriteBlocks,
      { volumeId: "vol-1", lba: 1020, data: blocks(4, 2) },
      { scopeId: nodeId },
    );
  });

  type Method = keyof typeof sanNodeService;
  interface Case {
    method: Method;
    what: string;
    body: Uint8Array;
    code: ErrorCodeName;
  }

  const create = (m: v1.CreateBackingVolumeRequest.$Properties): Uint8Array =>
    v1.CreateBackingVolumeRequest.encode(m).finish();
  const remove = (m: v1.DeleteBackingVolumeRequest.$Properties): Uint8Array =>
    v1.DeleteBackingVolumeRequest.encode(m).finish();
  const read = (m: v1.ReadBlocksRequest.$Properties): Uint8Array => v1.ReadBlocksRequest.encode(m).finish();
  const write = (m: v1.WriteBlocksRequest.$Properties): Uint8Array => v1.WriteBlocksRequest.encode(m).finish();

  const volumeMethods: Method[] = ["CreateBackingVolume", "DeleteBackingVolume", "ReadBlocks", "WriteBlocks"];
  // These two take an empty request, so only bytes that do not parse are bad.
  const emptyRequestMethods: Method[] = ["ListBackingVolumes", "Reregister"];
  const badNames = ["../x", "a.b", "*", ">", "", "Vol-1", "vol_1", "-vol", "x".repeat(64)];
  const tooLong = "i".repeat(65);
  /** A valid request for `method` naming `volumeId`, so only the name is wrong. */
  const withName = (method: Method, volumeId: string): Uint8Array => {
    switch (method) {
      case "CreateBackingVolume":
        return create({ volumeId, sizeMib: 1, incarnation: "inc-9", stateId: "state-1" });
      case "DeleteBackingVolume":
        return remove({ volumeId, incarnation: "inc-9" });
      case "ReadBlocks":
        return read({ volumeId, lba: 0, blockCount: 1 });
      case "WriteBlocks":
        return write({ volumeId, lba: 0, data: blocks(1, 3) });
      default:
        throw new Error(`${method} names no volume`);
    }
  };
  const unparsable = (method: Method): Case[] => [
    // Field 1 claims far more bytes than the message has.
    { method, what: "malformed protobuf", body: new Uint8Array([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01]), code: "INVALID_ARGUMENT" },
    // A varint cut off before its end.
    { method, what: "truncated varint", body: new Uint8Array([0x10, 0xff]), code: "INVALID_ARGUMENT" },
    { method, what: "invalid wire type", body: new Uint8Array([0x0f, 0x01]), code: "INVALID_ARGUMENT" },
  ];

  const cases: Case[] = [
    ...emptyRequestMethods.flatMap(unparsable),
    ...volumeMethods.flatMap((method): Case[] => [
      ...unparsable(method),
      { method, what: "empty message (all defaults)", body: new Uint8Array(0), code: "INVALID_ARGUMENT" },
      // Decodes (unknown fields are skipped) to a message of defaults.
      { method, what: "only an unknown field", body: new Uint8Array([0xf8, 0x01, 0x05]), code: "INVALID_ARGUMENT" },
      ...badNames.map((name): Case => ({ method, what: `invalid name ${JSON.stringify(name)}`, body: withName(method, name), code: "INVALID_ARGUMENT" })),
    ]),
    { method: "CreateBackingVolume", what: "size 0", body: create({ volumeId: "vol-new", sizeMib: 0, incarnation: "inc-9" }), code: "INVALID_ARGUMENT" },
    { method: "CreateBackingVolume", what: "absurd size", body: create({ volumeId: "vol-new", sizeMib: volumeSizeMibMax + 1, incarnation: "inc-9" }), code: "INVALID_ARGUMENT" },
    { method: "CreateBackingVolume", what: "size 2^32-1", body: create({ volumeId: "vol-new", sizeMib: 0xffffffff, incarnation: "inc-9" }), code: "INVALID_ARGUMENT" },
    { method: "CreateBackingVolume", what: "no incarnation", body: create({ volumeId: "vol-new", sizeMib: 1, stateId: "state-1" }), code: "INVALID_ARGUMENT" },
    { method: "CreateBackingVolume", what: "incarnation of 65 characters", body: create({ volumeId: "vol-new", sizeMib: 1, incarnation: tooLong }), code: "INVALID_ARGUMENT" },
    { method: "CreateBackingVolume", what: "state id of 65 characters", body: create({ volumeId: "vol-new", sizeMib: 1, incarnation: "inc-9", stateId: tooLong }), code: "INVALID_ARGUMENT" },
    { method: "CreateBackingVolume", what: "existing volume, other size", body: create({ volumeId: "vol-1", sizeMib: 2, incarnation: "inc-1" }), code: "ALREADY_EXISTS" },
    { method: "CreateBackingVolume", what: "existing volume, other incarnation", body: create({ volumeId: "vol-1", sizeMib: 4, incarnation: "inc-2", stateId: "state-1" }), code: "ALREADY_EXISTS" },
    { method: "CreateBackingVolume", what: "over capacity", body: create({ volumeId: "vol-new", sizeMib: 5, incarnation: "inc-9" }), code: "RESOURCE_EXHAUSTED" },
    { method: "DeleteBackingVolume", what: "unknown volume", body: remove({ volumeId: "vol-9" }), code: "NOT_FOUND" },
    { method: "DeleteBackingVolume", what: "another incarnation", body: remove({ volumeId: "vol-1", incarnation: "inc-2" }), code: "FAILED_PRECONDITION" },
    { method: "DeleteBackingVolume", what: "incarnation of 65 characters", body: remove({ volumeId: "vol-1", incarnation: tooLong }), code: "INVALID_ARGUMENT" },
    { method: "ReadBlocks", what: "unknown volume", body: read({ volumeId: "vol-9", lba: 0, blockCount: 1 }), code: "NOT_FOUND" },
    { method: "ReadBlocks", what: "blockCount 0", body: read({ volumeId: "vol-1", lba: 0, blockCount: 0 }), code: "INVALID_ARGUMENT" },
    { method: "ReadBlocks", what: "over the per-request limit", body: read({ volumeId: "vol-1", lba: 0, blockCount: blocksPerRequestMax + 1 }), code: "INVALID_ARGUMENT" },
    { method: "ReadBlocks", what: "lba at the end", body: read({ volumeId: "vol-1", lba: 1024, blockCount: 1 }), code: "INVALID_ARGUMENT" },
    { method: "ReadBlocks", what: "lba + count past the end", body: read({ volumeId: "vol-1", lba: 1020, blockCount: 5 }), code: "INVALID_ARGUMENT" },
    { method: "ReadBlocks", what: "lba 2^32-1", body: read({ volumeId: "vol-1", lba: 0xffffffff, blockCount: 1 }), code: "INVALID_ARGUMENT" },
    { method: "ReadBlocks", what: "blockCount 2^32-1", body: read({ volumeId: "vol-1", lba: 0, blockCount: 0xffffffff }), code: "INVALID_ARGUMENT" },
    { method: "WriteBlocks", what: "unknown volume", body: write({ volumeId: "vol-9", lba: 0, data: blocks(1, 4) }), code: "NOT_FOUND" },
    { method: "WriteBlocks", what: "no data", body: write({ volumeId: "vol-1", lba: 0, data: new Uint8Array(0) }), code: "INVALID_ARGUMENT" },
    { method: "WriteBlocks", what: "data shorter than a block", body: write({ volumeId: "vol-1", lba: 0, data: new Uint8Array(100) }), code: "INVALID_ARGUMENT" },
    { method: "WriteBlocks", what: "data not a whole number of blocks", body: write({ volumeId: "vol-1", lba: 0, data: new Uint8Array(blockSize + 1) }), code: "INVALID_ARGUMENT" },
    { method: "WriteBlocks", what: "lba at the end", body: write({ volumeId: "vol-1", lba: 1024, data: blocks(1, 5) }), code: "INVALID_ARGUMENT" },
    { method: "WriteBlocks", what: "lba + blocks past the end", body: write({ volumeId: "vol-1", lba: 1020, data: blocks(5, 6) }), code: "INVALID_ARGUMENT" },
    { method: "WriteBlocks", what: "lba 2^32-1", body: write({ volumeId: "vol-1", lba: 0xffffffff, data: blocks(1, 7) }), code: "INVALID_ARGUMENT" },
    { method: "WriteBlocks", what: "over the per-request limit", body: write({ volumeId: "vol-1", lba: 0, data: blocks(blocksPerRequestMax + 1, 8) }), code: "INVALID_ARGUMENT" },
  ];

  it("san node: every endpoint refuses bad input with a typed error and changes nothing on disk", async () => {
    // Proves every endpoint validates at the edge: each bad request gets its typed error and the disk stays byte for
    // byte the same.
    const before = snapshot(dataDir);
    expect(Object.keys(before).some((f) => f.endsWith("vol-1.img"))).toBe(true);
    for (const c of cases) {
      const subject = `${prefix}.san.${nodeId}.${c.method}`;
      const reply = await raw.request(subject, c.body, { timeout: 5_000 });
      const label = `${c.method}: ${c.what}`;
      expect(reply.headers?.get("Nats-Service-Error-Code"), label).toBe(String(errorCodes[c.code]));
      expect(reply.headers?.get("Nats-Service-Error"), label).toMatch(new RegExp(`^${c.code}: .+`));
      expect(snapshot(dataDir), label).toEqual(before);
    }
    // Every endpoint was covered, and the node still serves what it held.
    expect(new Set(cases.map((c) => c.method))).toEqual(new Set(Object.keys(sanNodeService)));
    const res = await client.call(sanNodeService.ReadBlocks, { volumeId: "vol-1", lba: 0, blockCount: 4 }, { scopeId: nodeId });
    expect(Buffer.from(res.data).equals(Buffer.from(blocks(4, 1)))).toBe(true);
    const listed = await client.call(sanNodeService.ListBackingVolumes, {}, { scopeId: nodeId });
    expect(listed.volumes).toMatchObject([{ volumeId: "vol-1", sizeMib: 4, incarnation: "inc-1", stateId: "state-1" }]);
  });
});

describe("san node: volumes and blocks over the bus", () => {
  it("san node: create, write, read, delete round-trip with the volume on disk as promised", async () => {
    // Proves the endpoints work end to end over NATS and the files on disk follow them.
    const prefix = "rt";
    const nodeId = "san-rt";
    const { dataDir } = await startNode(await bus(prefix), { nodeId });
    const client = await bus(prefix);
    const call = { scopeId: nodeId };
    const request = { volumeId: "vol-a", sizeMib: 2, incarnation: "inc-a", stateId: "state-1" };
    const created = await client.call(sanNodeService.CreateBackingVolume, request, call);
    expect(created.volume).toMatchObject({ volumeId: "vol-a", sizeMib: 2, blockSizeBytes: blockSize, incarnation: "inc-a", stateId: "state-1" });
    expect(Math.abs((created.volume?.createdAtMs ?? 0) - wallNowMs())).toBeLessThan(10_000);
    const again = await client.call(sanNodeService.CreateBackingVolume, request, call);
    expect(again.volume).toEqual(created.volume);
    const data = blocks(blocksPerRequestMax, 9);
    const written = await client.call(sanNodeService.WriteBlocks, { volumeId: "vol-a", lba: 384, data }, call);
    expect(written.blocksWritten).toBe(blocksPerRequestMax);
    const read = await client.call(sanNodeService.ReadBlocks, { volumeId: "vol-a", lba: 384, blockCount: blocksPerRequestMax }, call);
    expect(Buffer.from(read.data).equals(Buffer.from(data))).toBe(true);
    const zeros = await client.call(sanNodeService.ReadBlocks, { volumeId: "vol-a", lba: 0, blockCount: 8 }, call);
    expect(Buffer.from(zeros.data).equals(Buffer.alloc(8 * blockSize))).toBe(true);
    expect(readdirSync(join(dataDir, "volumes")).sort()).toEqual(["vol-a.img", "vol-a.json"]);
    await client.call(sanNodeService.DeleteBackingVolume, { volumeId: "vol-a", incarnation: "inc-a" }, call);
    expect(readdirSync(join(dataDir, "volumes"))).toEqual([]);
    await expect(client.call(sanNodeService.DeleteBackingVolume, { volumeId: "vol-a" }, call)).rejects.toMatchObject({
      code: "NOT_FOUND",
    });
  });

  it("san node: create is idempotent for one incarnation and ALREADY_EXISTS for another; delete removes only the incarnation it names", async () => {
    // Proves incarnations over the wire: retries are safe, and neither a new create nor a late delete can clobber the
    // volume held.
    const prefix = "inc";
    const nodeId = "san-inc";
    const { dataDir } = await startNode(await bus(prefix), { nodeId });
    const client = await bus(prefix);
    const call = { scopeId: nodeId };
    const first = await client.call(sanNodeService.CreateBackingVolume, { volumeId: "vol-a", sizeMib: 1, incarnation: "inc-1", stateId: "state-1" }, call);
    await client.call(sanNodeService.WriteBlocks, { volumeId: "vol-a", lba: 5, data: blocks(1, 10) }, call);
    // A retried create of the same incarnation is the volume that exists, data and all.
    const retried = await client.call(sanNodeService.CreateBackingVolume, { volumeId: "vol-a", sizeMib: 1, incarnation: "inc-1", stateId: "state-1" }, call);
    expect(retried.volume).toEqual(first.volume);
    const replaced = client.call(sanNodeService.CreateBackingVolume, { volumeId: "vol-a", sizeMib: 1, incarnation: "inc-2", stateId: "state-1" }, call);
    await expect(replaced).rejects.toMatchObject({ code: "ALREADY_EXISTS" });
    // A late delete of an incarnation the node no longer holds must not remove the one it holds.
    await expect(client.call(sanNodeService.DeleteBackingVolume, { volumeId: "vol-a", incarnation: "inc-0" }, call)).rejects.toMatchObject({
      code: "FAILED_PRECONDITION",
    });
    const kept = await client.call(sanNodeService.ReadBlocks, { volumeId: "vol-a", lba: 5, blockCount: 1 }, call);
    expect(Buffer.from(kept.data).equals(Buffer.from(blocks(1, 10)))).toBe(true);
    await client.call(sanNodeService.DeleteBackingVolume, { volumeId: "vol-a", incarnation: "inc-1" }, call);
    // Now the new incarnation can be made, and starts as zeros.
    const second = await client.call(sanNodeService.CreateBackingVolume, { volumeId: "vol-a", sizeMib: 1, incarnation: "inc-2", stateId: "state-2" }, call);
    expect(second.volume).toMatchObject({ volumeId: "vol-a", incarnation: "inc-2", stateId: "state-2" });
    const fresh = await client.call(sanNodeService.ReadBlocks, { volumeId: "vol-a", lba: 5, blockCount: 1 }, call);
    expect(Buffer.from(fresh.data).equals(Buffer.alloc(blockSize))).toBe(true);
    expect(JSON.parse(readFileSync(join(dataDir, "volumes", "vol-a.json"), "utf8"))).toMatchObject({ version: 2, incarnation: "inc-2", stateId: "state-2" });
  });
});

describe("san node: registration and heartbeats", () => {
  it("san node: registers on its own subject without volume ids, with a new boot id each start; ListBackingVolumes lists what it found on disk", async () => {
    // Proves registration is only identity (subject, boot id, capacity) and the inventory comes from
    // ListBackingVolumes.
    const prefix = "reg1";
    const nodeId = "san-reg1";
    const { registrations } = await standInController(prefix);
    const client = await bus(prefix);
    const first = await startNode(await bus(prefix), { nodeId, capacityMib: 100 });
    await eventually("first registration", () => (first.node.registered ? true : undefined));
    expect((await client.call(sanNodeService.ListBackingVolumes, {}, { scopeId: nodeId })).volumes).toEqual([]);
    await first.node.store.createVolume("vol-b", 5, "inc-b", "state-1");
    await first.node.store.createVolume("vol-a", 3, "inc-a", "state-2");
    await first.node.stop();

    const second = await startNode(await bus(prefix), { nodeId, capacityMib: 100, dataDir: first.dataDir });
    await eventually("second registration", () => (second.node.registered ? true : undefined));
    expect(registrations).toHaveLength(2);
    for (const [i, started] of [first, second].entries()) {
      const { request, subject, data } = registrations[i]!;
      expect(subject).toBe(`${prefix}.api.v1.StorageService.RegisterSanNode.${nodeId}`);
      expect(v1.RegisterSanNodeRequest.toObject(request)).toEqual({ nodeId, capacityMib: 100, blockSizeBytes: blockSize, bootId: started.node.bootId });
      // Re-encoding what was decoded gives the same bytes: the request carried no other field (no volume ids).
      expect(Buffer.from(v1.RegisterSanNodeRequest.encode(request).finish())).toEqual(Buffer.from(data));
    }
    expect(first.node.bootId).not.toBe(second.node.bootId);
    const listed = await client.call(sanNodeService.ListBackingVolumes, {}, { scopeId: nodeId });
    expect(listed.volumes).toEqual([
      { volumeId: "vol-a", sizeMib: 3, blockSizeBytes: blockSize, incarnation: "inc-a", stateId: "state-2", createdAtMs: second.node.store.volume("vol-a")?.createdAtMs },
      { volumeId: "vol-b", sizeMib: 5, blockSizeBytes: blockSize, incarnation: "inc-b", stateId: "state-1", createdAtMs: second.node.store.volume("vol-b")?.createdAtMs },
    ]);
    expect(second.node.health()).toMatchObject({ healthy: true, details: { registered: true, volumeCount: 2, allocatedMib: 8, writable: true, problem: null } });
  });

  it("san node: serves while the controller is away and registers once a late stand-in appears", async () => {
    // Proves serving never waits for registration, and a late controller is found on the next attempt.
    const prefix = "reg2";
    const nodeId = "san-reg2";
    const clock = new SleepRecordingClock();
    const { node } = await startNode(await bus(prefix), { nodeId, clock });
    const client = await bus(prefix);
    // The first attempt found nobody and the node now waits on its clock, serving all the while.
    await eventually("a failed registration attempt", () => (clock.delaysMs.length >= 1 ? true : undefined));
    await client.call(sanNodeService.CreateBackingVolume, { volumeId: "vol-early", sizeMib: 1, incarnation: "inc-e" }, { scopeId: nodeId });
    expect(node.registered).toBe(false);
    expect(node.health()).toMatchObject({ healthy: true, details: { registered: false, volumeCount: 1 } });

    // The late controller, as the real one does, asks the node what it holds.
    const found: v1.BackingVolume.$Properties[][] = [];
    const { registrations } = await standInController(prefix, (req) => {
      void client.call(sanNodeService.ListBackingVolumes, {}, { scopeId: req.nodeId }).then((res) => found.push(res.volumes));
      return { node: { id: req.nodeId } };
    });
    await clock.advanceAsync(clock.delaysMs.at(-1)!);
    await eventually("registration after the stand-in appears", () => (node.registered ? true : undefined));
    expect(registrations).toHaveLength(1);
    expect(registrations[0]?.request).toMatchObject({ nodeId, bootId: node.bootId });
    await eventually("the stand-in's inventory", () => found[0]);
    expect(found[0]).toMatchObject([{ volumeId: "vol-early", sizeMib: 1, incarnation: "inc-e" }]);
    expect(node.health().details).toMatchObject({ registered: true });
  });

  it("san node: retries a refusing controller with capped exponential backoff on its clock, jittered by its seeded random", async () => {
    // Proves the retry delays: doubling from the minimum, capped, half of each drawn from the seeded random, and
    // waited on the node's clock.
    const prefix = "reg3";
    const nodeId = "san-reg3";
    let refusals = 5;
    const { registrations } = await standInController(prefix, (req) => {
      if (refusals > 0) {
        refusals -= 1;
        throw new Error("not ready");
      }
      return { node: { id: req.nodeId } };
    });
    const clock = new SleepRecordingClock();
    const { node } = await startNode(await bus(prefix), {
      nodeId,
      clock,
      random: new Rng(7, "san").random,
      registerBackoffMsMin: 100,
      registerBackoffMsMax: 400,
    });
    for (let failures = 1; failures <= 5; failures++) {
      await eventually(`sleep after failure ${failures}`, () => (clock.delaysMs.length >= failures ? true : undefined));
      // Waiting on the clock, the node makes no attempt of its own.
      expect(registrations).toHaveLength(failures);
      expect(node.registered).toBe(false);
      await clock.advanceAsync(clock.delaysMs[failures - 1]!);
    }
    await eventually("registration after refusals", () => (node.registered ? true : undefined));
    expect(registrations).toHaveLength(6);
    // Half fixed, half from the seeded random: the same seed gives the same delays.
    const backoffsMs = [100, 200, 400, 400, 400];
    const predict = new Rng(7, "san");
    expect(clock.delaysMs).toEqual(backoffsMs.map((b) => Math.round(b / 2 + (predict.next() * b) / 2)));
    for (const [i, delayMs] of clock.delaysMs.entries()) {
      expect(delayMs).toBeGreaterThanOrEqual(backoffsMs[i]! / 2);
      expect(delayMs).toBeLessThanOrEqual(backoffsMs[i]!);
    }
  });

  it("san node: Reregister makes it register again with the same boot id", async () => {
    // Proves a controller can ask a node it does not know to register again, and sees the same process.
    const prefix = "rereg";
    const nodeId = "san-rereg";
    const { registrations } = await standInController(prefix);
    const { node } = await startNode(await bus(prefix), { nodeId });
    await eventually("first registration", () => (node.registered ? true : undefined));
    expect(registrations).toHaveLength(1);
    const client = await bus(prefix);
    await client.call(sanNodeService.Reregister, {}, { scopeId: nodeId });
    await eventually("second registration", () => (registrations.length >= 2 ? true : undefined));
    expect(registrations.map((r) => r.request.bootId)).toEqual([node.bootId, node.bootId]);
    expect(registrations.map((r) => r.subject)).toEqual(Array(2).fill(`${prefix}.api.v1.StorageService.RegisterSanNode.${nodeId}`));
  });

  it("san node: publishes heartbeats every interval of its clock, saying the disk is writable, and stops when the node stops", async () => {
    // Proves heartbeats follow the node's clock exactly and end with the node.
    const prefix = "hb";
    const nodeId = "san-hb";
    const watcher = await bus(prefix);
    const subject = watcher.subjects.event("san", nodeId, "heartbeat");
    const beats: v1.SanNodeHeartbeat[] = [];
    const sub = watcher.subscribe(subject, v1.SanNodeHeartbeat, (hb) => {
      beats.push(hb);
    });
    closers.push(() => sub.unsubscribe());
    await watcher.flush();
    const clock = new ManualClock(1_800_000_000_000);
    const nodeBus = await bus(prefix);
    const { node } = await startNode(nodeBus, { nodeId, clock, heartbeatIntervalMs: 100, capacityMib: 50 });
    await node.store.createVolume("vol-a", 7, "inc-a", "");
    // One beat at start, then one per 100 ms of the node's clock.
    for (let i = 1; i <= 4; i++) await clock.advanceAsync(100);
    await eventually("five heartbeats", () => (beats.length >= 5 ? true : undefined));
    expect(beats).toHaveLength(5);
    expect(beats.map((b) => b.seq)).toEqual([1, 2, 3, 4, 5]);
    expect(beats.map((b) => b.sentAtMs)).toEqual([0, 100, 200, 300, 400].map((ms) => 1_800_000_000_000 + ms));
    expect(beats.every((b) => b.nodeId === nodeId && b.bootId === node.bootId && b.capacityMib === 50)).toBe(true);
    expect(beats.every((b) => b.writable && b.problem === "")).toBe(true);
    expect(beats.at(-1)).toMatchObject({ allocatedMib: 7, volumeCount: 1 });

    await node.stop();
    await clock.advanceAsync(1_000);
    // A marker sent on the node's connection after the stop arrives after anything the node sent before it.
    nodeBus.publish(subject, v1.SanNodeHeartbeat, { nodeId: "marker" });
    await eventually("the marker", () => (beats.some((b) => b.nodeId === "marker") ? true : undefined));
    expect(beats.map((b) => b.nodeId)).toEqual([...Array(5).fill(nodeId), "marker"]);
    expect(node.health().healthy).toBe(false);
  });

  it("san node: beats at the interval the controller's registration reply gives", async () => {
    // Proves the node takes the controller's heartbeat interval, so both judge missed beats alike.
    const prefix = "hbctl";
    const nodeId = "san-hbctl";
    await standInController(prefix, (req) => ({ node: { id: req.nodeId }, heartbeatIntervalMs: 250 }));
    const watcher = await bus(prefix);
    const beats: v1.SanNodeHeartbeat[] = [];
    const sub = watcher.subscribe(watcher.subjects.event("san", nodeId, "heartbeat"), v1.SanNodeHeartbeat, (hb) => {
      beats.push(hb);
    });
    closers.push(() => sub.unsubscribe());
    await watcher.flush();
    const clock = new ManualClock();
    const { node } = await startNode(await bus(prefix), { nodeId, clock, heartbeatIntervalMs: 10_000 });
    await eventually("registration", () => (node.registered ? true : undefined));
    // The beat at start, and one more when the node takes the controller's interval.
    await eventually("two heartbeats", () => (beats.length >= 2 ? true : undefined));
    const startedAt = clock.nowMs();
    for (let i = 1; i <= 3; i++) await clock.advanceAsync(250);
    await eventually("three more heartbeats", () => (beats.length >= 5 ? true : undefined));
    expect(beats.map((b) => b.seq)).toEqual([1, 2, 3, 4, 5]);
    expect(beats.slice(2).map((b) => b.sentAtMs)).toEqual([250, 500, 750].map((ms) => startedAt + ms));
  });
});
