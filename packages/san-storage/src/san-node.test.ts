// Proves the SAN node on the wire against a real nats-server: every endpoint
// answers bad input (malformed bytes, defaults, bad names, unknown volumes,
// out-of-range blocks, over-limit requests) with the right typed error in the
// standard headers and leaves the disk exactly as it was; volumes and blocks
// work end to end; the node registers with a late controller stand-in while
// serving all along; and it heartbeats until stopped.

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createHash } from "node:crypto";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { connect, type NatsConnection } from "nats";
import { simdc } from "@simdc/proto";
import { createLogger, errorCodes, type ErrorCodeName } from "@simdc/common";
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
  return { node, dataDir };
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
    await client.call(sanNodeService.CreateBackingVolume, { volumeId: "vol-1", sizeMib: 4 }, { scopeId: nodeId });
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

  const methods: Method[] = ["CreateBackingVolume", "DeleteBackingVolume", "ReadBlocks", "WriteBlocks"];
  const badNames = ["../x", "a.b", "*", ">", "", "Vol-1", "vol_1", "-vol", "x".repeat(64)];
  /** A valid request for `method` naming `volumeId`, so only the name is wrong. */
  const withName = (method: Method, volumeId: string): Uint8Array => {
    switch (method) {
      case "CreateBackingVolume":
        return create({ volumeId, sizeMib: 1 });
      case "DeleteBackingVolume":
        return remove({ volumeId });
      case "ReadBlocks":
        return read({ volumeId, lba: 0, blockCount: 1 });
      case "WriteBlocks":
        return write({ volumeId, lba: 0, data: blocks(1, 3) });
    }
  };

  const cases: Case[] = [
    ...methods.flatMap((method): Case[] => [
      // Field 1 claims far more bytes than the message has.
      { method, what: "malformed protobuf", body: new Uint8Array([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01]), code: "INVALID_ARGUMENT" },
      // A varint cut off before its end.
      { method, what: "truncated varint", body: new Uint8Array([0x10, 0xff]), code: "INVALID_ARGUMENT" },
      { method, what: "invalid wire type", body: new Uint8Array([0x0f, 0x01]), code: "INVALID_ARGUMENT" },
      { method, what: "empty message (all defaults)", body: new Uint8Array(0), code: "INVALID_ARGUMENT" },
      // Decodes (unknown fields are skipped) to a message of defaults.
      { method, what: "only an unknown field", body: new Uint8Array([0xf8, 0x01, 0x05]), code: "INVALID_ARGUMENT" },
      ...badNames.map((name): Case => ({ method, what: `invalid name ${JSON.stringify(name)}`, body: withName(method, name), code: "INVALID_ARGUMENT" })),
    ]),
    { method: "CreateBackingVolume", what: "size 0", body: create({ volumeId: "vol-new", sizeMib: 0 }), code: "INVALID_ARGUMENT" },
    { method: "CreateBackingVolume", what: "absurd size", body: create({ volumeId: "vol-new", sizeMib: volumeSizeMibMax + 1 }), code: "INVALID_ARGUMENT" },
    { method: "CreateBackingVolume", what: "size 2^32-1", body: create({ volumeId: "vol-new", sizeMib: 0xffffffff }), code: "INVALID_ARGUMENT" },
    { method: "CreateBackingVolume", what: "existing volume, other size", body: create({ volumeId: "vol-1", sizeMib: 2 }), code: "ALREADY_EXISTS" },
    { method: "CreateBackingVolume", what: "over capacity", body: create({ volumeId: "vol-new", sizeMib: 5 }), code: "RESOURCE_EXHAUSTED" },
    { method: "DeleteBackingVolume", what: "unknown volume", body: remove({ volumeId: "vol-9" }), code: "NOT_FOUND" },
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
    // Every endpoint was covered, and the node still serves.
    expect(new Set(cases.map((c) => c.method))).toEqual(new Set(methods));
    const res = await client.call(sanNodeService.ReadBlocks, { volumeId: "vol-1", lba: 0, blockCount: 4 }, { scopeId: nodeId });
    expect(Buffer.from(res.data).equals(Buffer.from(blocks(4, 1)))).toBe(true);
  });
});

describe("san node: volumes and blocks over the bus", () => {
  it("san node: create, write, read, delete round-trip with the volume on disk as promised", async () => {
    const prefix = "rt";
    const nodeId = "san-rt";
    const { dataDir } = await startNode(await bus(prefix), { nodeId });
    const client = await bus(prefix);
    const call = { scopeId: nodeId };
    const created = await client.call(sanNodeService.CreateBackingVolume, { volumeId: "vol-a", sizeMib: 2 }, call);
    expect(created.volume).toMatchObject({ id: "vol-a", sizeMib: 2, blockSizeBytes: blockSize, sanNodeId: nodeId });
    const again = await client.call(sanNodeService.CreateBackingVolume, { volumeId: "vol-a", sizeMib: 2 }, call);
    expect(again.volume?.createdAtMs).toBe(created.volume?.createdAtMs);
    const data = blocks(blocksPerRequestMax, 9);
    const written = await client.call(sanNodeService.WriteBlocks, { volumeId: "vol-a", lba: 384, data }, call);
    expect(written.blocksWritten).toBe(blocksPerRequestMax);
    const read = await client.call(sanNodeService.ReadBlocks, { volumeId: "vol-a", lba: 384, blockCount: blocksPerRequestMax }, call);
    expect(Buffer.from(read.data).equals(Buffer.from(data))).toBe(true);
    const zeros = await client.call(sanNodeService.ReadBlocks, { volumeId: "vol-a", lba: 0, blockCount: 8 }, call);
    expect(Buffer.from(zeros.data).equals(Buffer.alloc(8 * blockSize))).toBe(true);
    expect(readdirSync(join(dataDir, "volumes")).sort()).toEqual(["vol-a.img", "vol-a.json"]);
    await client.call(sanNodeService.DeleteBackingVolume, { volumeId: "vol-a" }, call);
    expect(readdirSync(join(dataDir, "volumes"))).toEqual([]);
    await expect(client.call(sanNodeService.DeleteBackingVolume, { volumeId: "vol-a" }, call)).rejects.toMatchObject({
      code: "NOT_FOUND",
    });
  });
});

describe("san node: registration and heartbeats", () => {
  it("san node: registers with the volumes it found on disk and a new boot id each start", async () => {
    const prefix = "reg1";
    const nodeId = "san-reg1";
    const requests: v1.RegisterSanNodeRequest[] = [];
    const controller = await bus(prefix);
    await controller.serve({ role: "controller", description: "stand-in" }, [
      endpoint(storageService.RegisterSanNode, (req) => {
        requests.push(req);
        return { node: { id: req.nodeId, capacityMib: req.capacityMib } };
      }),
    ]);
    const first = await startNode(await bus(prefix), { nodeId, capacityMib: 100 });
    await eventually("first registration", () => (first.node.registered ? true : undefined));
    await first.node.store.createVolume("vol-a", 3);
    await first.node.store.createVolume("vol-b", 5);
    await first.node.stop();

    const second = await startNode(await bus(prefix), { nodeId, capacityMib: 100, dataDir: first.dataDir });
    await eventually("second registration", () => (second.node.registered ? true : undefined));
    expect(requests).toHaveLength(2);
    expect(requests[0]).toMatchObject({ nodeId, capacityMib: 100, blockSizeBytes: blockSize, allocatedMib: 0, volumeIds: [] });
    expect(requests[1]).toMatchObject({
      nodeId,
      capacityMib: 100,
      blockSizeBytes: blockSize,
      allocatedMib: 8,
      volumeIds: ["vol-a", "vol-b"],
      bootId: second.node.bootId,
    });
    expect(requests[0]?.bootId).toBe(first.node.bootId);
    expect(first.node.bootId).not.toBe(second.node.bootId);
    expect(second.node.health().details).toMatchObject({ registered: true, volumeCount: 2 });
  });

  it("san node: serves while the controller is away and registers once a late stand-in appears", async () => {
    const prefix = "reg2";
    const nodeId = "san-reg2";
    const { node } = await startNode(await bus(prefix), { nodeId });
    const client = await bus(prefix);
    // Serving does not wait for registration.
    await client.call(sanNodeService.CreateBackingVolume, { volumeId: "vol-early", sizeMib: 1 }, { scopeId: nodeId });
    await new Promise((r) => setTimeout(r, 800));
    expect(node.registered).toBe(false);
    expect(node.health()).toMatchObject({ healthy: true, details: { registered: false, volumeCount: 1 } });

    const requests: v1.RegisterSanNodeRequest[] = [];
    const controller = await bus(prefix);
    await controller.serve({ role: "controller", description: "late stand-in" }, [
      endpoint(storageService.RegisterSanNode, (req) => {
        requests.push(req);
        return { node: { id: req.nodeId } };
      }),
    ]);
    await eventually("registration after the stand-in appears", () => (node.registered ? true : undefined), 10_000);
    expect(requests).toHaveLength(1);
    expect(requests[0]).toMatchObject({ nodeId, volumeIds: ["vol-early"], allocatedMib: 1, bootId: node.bootId });
    expect(node.health().details).toMatchObject({ registered: true });
  });

  it("san node: keeps retrying while the controller refuses, then registers", async () => {
    const prefix = "reg3";
    const nodeId = "san-reg3";
    let refusals = 3;
    let calls = 0;
    const controller = await bus(prefix);
    await controller.serve({ role: "controller", description: "grumpy stand-in" }, [
      endpoint(storageService.RegisterSanNode, (req) => {
        calls += 1;
        if (refusals > 0) {
          refusals -= 1;
          throw new Error("not ready");
        }
        return { node: { id: req.nodeId } };
      }),
    ]);
    const { node } = await startNode(await bus(prefix), { nodeId });
    await eventually("registration after refusals", () => (node.registered ? true : undefined), 10_000);
    expect(calls).toBe(4);
  });

  it("san node: publishes heartbeats every interval and stops when the node stops", async () => {
    const prefix = "hb";
    const nodeId = "san-hb";
    const watcher = await bus(prefix);
    const beats: v1.SanNodeHeartbeat[] = [];
    const sub = watcher.subscribe(watcher.subjects.event("san", nodeId, "heartbeat"), v1.SanNodeHeartbeat, (hb) => {
      beats.push(hb);
    });
    closers.push(() => sub.unsubscribe());
    await watcher.flush();
    const { node } = await startNode(await bus(prefix), { nodeId, heartbeatIntervalMs: 100, capacityMib: 50 });
    await node.store.createVolume("vol-a", 7);
    await eventually("five heartbeats", () => (beats.length >= 5 ? true : undefined), 10_000);
    expect(beats.map((b) => b.seq)).toEqual(beats.map((_, i) => i + 1));
    expect(beats.every((b) => b.nodeId === nodeId && b.bootId === node.bootId && b.capacityMib === 50)).toBe(true);
    expect(beats.at(-1)).toMatchObject({ allocatedMib: 7, volumeCount: 1 });
    expect(Math.abs((beats.at(-1)?.sentAtMs ?? 0) - Date.now())).toBeLessThan(5_000);
    await node.stop();
    const count = beats.length;
    await new Promise((r) => setTimeout(r, 400));
    expect(beats.length).toBe(count);
    expect(node.health().healthy).toBe(false);
  });
});
