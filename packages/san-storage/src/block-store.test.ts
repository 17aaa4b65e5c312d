// Proves the block store on real files, without NATS: blocks round-trip and
// never-written blocks read as zeros, volumes are sparse, create is idempotent
// only for the same size and incarnation and delete only removes the
// incarnation it names, list() and the metadata (format 2, with format 1
// still read) say what the node holds, a restart finds what was written, a
// scan survives garbage in the data dir, the open-file cache stays within its
// limit, concurrent writers sharing fdatasyncs all land, and no write is
// acknowledged before an fdatasync that began after it.

import { afterEach, describe, expect, it, vi } from "vitest";
import { existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, statSync, writeFileSync } from "node:fs";
import { open, type FileHandle } from "node:fs/promises";
import { join } from "node:path";
import { pino } from "pino";
import { createLogger } from "@simdc/common";
import { tempDir } from "@simdc/testkit";
import {
  BlockStore,
  blockRequestsInFlightMax,
  blockRequestsQueuedMax,
  blocksPerRequestMax,
  bytesPerMib,
  volumeOpsQueuedMax,
} from "./mod.js";

/** The incarnation and state id most tests create volumes with; the incarnation tests use others. */
const inc = "inc-1";
const stateId = "state-1";

const silent = createLogger({ service: "test", id: "block-store", level: process.env["LOG_LEVEL"] ?? "silent" });
const cleanups: (() => Promise<void> | void)[] = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function openStore(
  options: { dataDir?: string; capacityMib?: number; blockSizeBytes?: number; openVolumesMax?: number; logger?: typeof silent } = {},
): Promise<{ store: BlockStore; dataDir: string }> {
  let dataDir = options.dataDir;
  if (!dataDir) {
    const dir = tempDir("san-store");
    cleanups.push(() => dir.remove());
    dataDir = dir.path;
  }
  const store = await BlockStore.open({
    dataDir,
    capacityMib: options.capacityMib ?? 1024,
    blockSizeBytes: options.blockSizeBytes ?? 4096,
    logger: options.logger ?? silent,
    ...(options.openVolumesMax !== undefined ? { openVolumesMax: options.openVolumesMax } : {}),
  });
  cleanups.push(() => store.close());
  return { store, dataDir };
}

/** Blocks whose every byte says which block and which write they came from. */
function pattern(blockCount: number, blockSizeBytes: number, seed: number): Buffer {
  const data = Buffer.alloc(blockCount * blockSizeBytes);
  for (let i = 0; i < data.length; i++) data[i] = (seed * 131 + Math.floor(i / blockSizeBytes) * 17 + i) & 0xff;
  return data;
}

/** Image files of `dataDir` this process holds open, from /proc/self/fd. */
function openImages(dataDir: string): string[] {
  const open: string[] = [];
  for (const fd of readdirSync("/proc/self/fd")) {
    try {
      const target = readlinkSync(`/proc/self/fd/${fd}`);
      if (target.startsWith(dataDir) && target.endsWith(".img")) open.push(target);
    } catch {
      // The fd closed between the listing and the readlink (the listing's own fd).
    }
  }
  return open;
}

describe("block store", () => {
  it("block store: blocks round-trip and never-written blocks read as zeros", async () => {
    // Proves the basic contract of a block device: what is written reads back, anything else reads as zeros, up to
    // the last block and the largest request.
    const { store } = await openStore();
    await store.createVolume("vol-1", 4, inc, stateId);
    const data = pattern(3, 4096, 1);
    expect(await store.writeBlocks("vol-1", 10, data)).toBe(3);
    expect((await store.readBlocks("vol-1", 10, 3)).equals(data)).toBe(true);
    // A read spanning written and never-written blocks.
    const mixed = await store.readBlocks("vol-1", 8, 6);
    expect(mixed.subarray(0, 2 * 4096).equals(Buffer.alloc(2 * 4096))).toBe(true);
    expect(mixed.subarray(2 * 4096, 5 * 4096).equals(data)).toBe(true);
    expect(mixed.subarray(5 * 4096).equals(Buffer.alloc(4096))).toBe(true);
    // The last block of the volume, and the largest request.
    const last = pattern(1, 4096, 2);
    await store.writeBlocks("vol-1", 1023, last);
    expect((await store.readBlocks("vol-1", 1023, 1)).equals(last)).toBe(true);
    const big = pattern(blocksPerRequestMax, 4096, 3);
    await store.writeBlocks("vol-1", 200, big);
    expect((await store.readBlocks("vol-1", 200, blocksPerRequestMax)).equals(big)).toBe(true);
  });

  it("block store: a volume is a sparse file of its full size that uses little disk", async () => {
    // Proves volumes are thin (a sparse image) and that the metadata file is format 2 with every field.
    const { store, dataDir } = await openStore();
    await store.createVolume("vol-big", 256, inc, stateId);
    await store.writeBlocks("vol-big", 0, pattern(1, 4096, 4));
    const image = statSync(join(dataDir, "volumes", "vol-big.img"));
    expect(image.size).toBe(256 * bytesPerMib);
    // Allocated 512-byte units: one written block plus file-system slack, far below 256 MiB.
    expect(image.blocks * 512).toBeLessThan(1 * bytesPerMib);
    const meta: unknown = JSON.parse(readFileSync(join(dataDir, "volumes", "vol-big.json"), "utf8"));
    expect(meta).toEqual({
      version: 2,
      volumeId: "vol-big",
      sizeMib: 256,
      blockSizeBytes: 4096,
      createdAtMs: store.volume("vol-big")?.createdAtMs,
      incarnation: inc,
      stateId,
    });
  });

  it("block store: a volume's block size is its own, so a node restarted with another setting addresses it the same", async () => {
    // Proves a volume keeps the block size it was created with across a restart with another setting.
    const { store, dataDir } = await openStore({ blockSizeBytes: 512 });
    await store.createVolume("vol-512", 1, inc, stateId);
    const data = pattern(2, 512, 5);
    await store.writeBlocks("vol-512", 2047, data.subarray(0, 512));
    await store.close();
    const { store: again } = await openStore({ dataDir, blockSizeBytes: 4096 });
    expect(again.volume("vol-512")?.blockSizeBytes).toBe(512);
    expect((await again.readBlocks("vol-512", 2047, 1)).equals(data.subarray(0, 512))).toBe(true);
    await again.createVolume("vol-4k", 1, inc, stateId);
    expect(again.volume("vol-4k")?.blockSizeBytes).toBe(4096);
  });

  it("block store: create is idempotent for the same size and incarnation and refuses another size or too much", async () => {
    // Proves a retried create returns the existing volume, and a create that does not fit is refused.
    const { store } = await openStore({ capacityMib: 10 });
    const first = await store.createVolume("vol-1", 4, inc, stateId);
    expect(first.created).toBe(true);
    const second = await store.createVolume("vol-1", 4, inc, stateId);
    expect(second).toEqual({ volume: first.volume, created: false });
    await expect(store.createVolume("vol-1", 5, inc, stateId)).rejects.toMatchObject({ code: "ALREADY_EXISTS" });
    await expect(store.createVolume("vol-2", 7, inc, stateId)).rejects.toMatchObject({ code: "RESOURCE_EXHAUSTED" });
    await store.createVolume("vol-2", 6, inc, stateId);
    expect(store.allocatedMib).toBe(10);
    expect(store.volumeIds()).toEqual(["vol-1", "vol-2"]);
  });

  it("block store: a create of another incarnation of a held volume is ALREADY_EXISTS and leaves the volume as it was", async () => {
    // Proves a new incarnation never silently takes over (or truncates) the one the node holds.
    const { store, dataDir } = await openStore();
    const first = await store.createVolume("vol-1", 4, "inc-a", "state-a");
    const data = pattern(2, 4096, 11);
    await store.writeBlocks("vol-1", 0, data);
    // The same incarnation again, even under another state id, is the volume that exists.
    expect(await store.createVolume("vol-1", 4, "inc-a", "state-b")).toEqual({ volume: first.volume, created: false });
    const metaBefore = readFileSync(join(dataDir, "volumes", "vol-1.json"), "utf8");
    for (const [size, incarnation] of [
      [4, "inc-b"],
      [4, ""],
      [5, "inc-b"],
    ] as const) {
      const refused = store.createVolume("vol-1", size, incarnation, "state-a");
      await expect(refused, `${size} MiB as ${incarnation}`).rejects.toMatchObject({ code: "ALREADY_EXISTS" });
      await expect(refused).rejects.toThrow(/inc-a/);
    }
    expect(store.volume("vol-1")).toEqual(first.volume);
    expect(readFileSync(join(dataDir, "volumes", "vol-1.json"), "utf8")).toBe(metaBefore);
    expect((await store.readBlocks("vol-1", 0, 2)).equals(data)).toBe(true);
    expect(store.allocatedMib).toBe(4);
  });

  it("block store: a delete naming another incarnation is FAILED_PRECONDITION and keeps the volume; naming its own or none deletes it", async () => {
    // Proves a late delete of an old incarnation cannot remove a re-created volume.
    const { store, dataDir } = await openStore();
    await store.createVolume("vol-1", 1, "inc-a", stateId);
    await store.createVolume("vol-2", 1, "inc-c", stateId);
    const data = pattern(1, 4096, 12);
    await store.writeBlocks("vol-1", 3, data);
    await expect(store.deleteVolume("vol-1", "inc-b")).rejects.toMatchObject({ code: "FAILED_PRECONDITION" });
    expect(store.volumeIds()).toEqual(["vol-1", "vol-2"]);
    expect(readdirSync(join(dataDir, "volumes")).sort()).toEqual(["vol-1.img", "vol-1.json", "vol-2.img", "vol-2.json"]);
    expect((await store.readBlocks("vol-1", 3, 1)).equals(data)).toBe(true);

    await store.deleteVolume("vol-1", "inc-a");
    // No incarnation means whichever the node holds.
    await store.deleteVolume("vol-2");
    expect(store.volumeIds()).toEqual([]);
    expect(readdirSync(join(dataDir, "volumes"))).toEqual([]);
    await expect(store.deleteVolume("vol-1", "inc-a")).rejects.toMatchObject({ code: "NOT_FOUND" });
  });

  it("block store: list() gives every volume with its size, incarnation and state id, in id order, also after a restart", async () => {
    // Proves the inventory the controller reads comes from the metadata on disk, the same before and after a restart.
    const { store, dataDir } = await openStore({ blockSizeBytes: 512 });
    await store.createVolume("vol-b", 2, "inc-b", "state-1");
    await store.createVolume("vol-a", 1, "inc-a", "state-2");
    await store.createVolume("vol-c", 3, "inc-c", "");
    const expected = [
      { volumeId: "vol-a", sizeMib: 1, blockSizeBytes: 512, incarnation: "inc-a", stateId: "state-2" },
      { volumeId: "vol-b", sizeMib: 2, blockSizeBytes: 512, incarnation: "inc-b", stateId: "state-1" },
      { volumeId: "vol-c", sizeMib: 3, blockSizeBytes: 512, incarnation: "inc-c", stateId: "" },
    ];
    const listed = store.list();
    expect(listed).toMatchObject(expected);
    expect(listed.every((v) => typeof v.createdAtMs === "number" && v.createdAtMs > 0)).toBe(true);
    await store.deleteVolume("vol-b", "inc-b");
    await store.close();
    const { store: again } = await openStore({ dataDir });
    expect(again.list()).toEqual(listed.filter((v) => v.volumeId !== "vol-b"));
  });

  it("block store: a volume whose metadata is format 1 still loads, with an empty incarnation and state id", async () => {
    // Proves volumes written before incarnations existed survive the upgrade, readable and deletable.
    const { store, dataDir } = await openStore();
    await store.close();
    const dir = join(dataDir, "volumes");
    // What a node of format 1 wrote: no incarnation, no state id.
    writeFileSync(join(dir, "vol-old.json"), `${JSON.stringify({ version: 1, volumeId: "vol-old", sizeMib: 2, blockSizeBytes: 4096, createdAtMs: 1_600_000_000_000 })}\n`);
    const data = pattern(3, 4096, 13);
    const image = Buffer.alloc(2 * bytesPerMib);
    data.copy(image, 7 * 4096);
    writeFileSync(join(dir, "vol-old.img"), image);

    const { store: again } = await openStore({ dataDir });
    expect(again.list()).toEqual([
      { volumeId: "vol-old", sizeMib: 2, blockSizeBytes: 4096, createdAtMs: 1_600_000_000_000, incarnation: "", stateId: "" },
    ]);
    expect(again.allocatedMib).toBe(2);
    expect((await again.readBlocks("vol-old", 7, 3)).equals(data)).toBe(true);
    // Its incarnation is "": creating it as that is idempotent, as any other is not.
    expect((await again.createVolume("vol-old", 2, "", "")).created).toBe(false);
    await expect(again.createVolume("vol-old", 2, inc, stateId)).rejects.toMatchObject({ code: "ALREADY_EXISTS" });
    await expect(again.deleteVolume("vol-old", inc)).rejects.toMatchObject({ code: "FAILED_PRECONDITION" });
    // Its file is left as it was until it is deleted.
    expect(JSON.parse(readFileSync(join(dir, "vol-old.json"), "utf8"))).toMatchObject({ version: 1 });
    await again.deleteVolume("vol-old");
    expect(readdirSync(dir)).toEqual([]);
  });

  it("block store: delete removes both files, and a re-created volume reads as zeros", async () => {
    // Proves a delete leaves nothing behind, so a new volume of the same id never sees the old data.
    const { store, dataDir } = await openStore();
    await store.createVolume("vol-1", 1, inc, stateId);
    await store.writeBlocks("vol-1", 0, pattern(4, 4096, 6));
    await store.deleteVolume("vol-1");
    expect(readdirSync(join(dataDir, "volumes"))).toEqual([]);
    await expect(store.deleteVolume("vol-1")).rejects.toMatchObject({ code: "NOT_FOUND" });
    await expect(store.readBlocks("vol-1", 0, 1)).rejects.toMatchObject({ code: "NOT_FOUND" });
    await store.createVolume("vol-1", 1, inc, stateId);
    expect((await store.readBlocks("vol-1", 0, 4)).equals(Buffer.alloc(4 * 4096))).toBe(true);
  });

  it("block store: a delete waits for writes in flight and later requests see NOT_FOUND", async () => {
    // Proves a delete neither closes a file under a running write nor lets a later request reach the file.
    const { store } = await openStore();
    await store.createVolume("vol-1", 1, inc, stateId);
    const writes = Array.from({ length: 16 }, (_, i) => store.writeBlocks("vol-1", i, pattern(1, 4096, i)));
    const deleted = store.deleteVolume("vol-1");
    // Every write started before the delete completes normally.
    expect(await Promise.all(writes)).toEqual(Array(16).fill(1));
    await deleted;
    await expect(store.writeBlocks("vol-1", 0, pattern(1, 4096, 0))).rejects.toMatchObject({ code: "NOT_FOUND" });
  });

  it("block store: a reopened store finds its volumes and their blocks", async () => {
    // Proves a restart finds every volume and its data.
    const { store, dataDir } = await openStore();
    await store.createVolume("vol-a", 2, inc, stateId);
    await store.createVolume("vol-b", 3, inc, stateId);
    const data = pattern(5, 4096, 7);
    await store.writeBlocks("vol-b", 100, data);
    await store.close();
    const { store: again } = await openStore({ dataDir });
    expect(again.volumeIds()).toEqual(["vol-a", "vol-b"]);
    expect(again.allocatedMib).toBe(5);
    expect((await again.readBlocks("vol-b", 100, 5)).equals(data)).toBe(true);
  });

  it("block store: the scan logs and skips garbage, never failing", async () => {
    // Proves a data dir with broken, foreign or half-written files (format 1 and 2) still opens, keeping only good
    // volumes and deleting nothing but temp files.
    const { store, dataDir } = await openStore();
    await store.createVolume("vol-good", 1, inc, stateId);
    await store.close();
    const dir = join(dataDir, "volumes");
    writeFileSync(join(dir, "vol-garbage.json"), "{not json");
    writeFileSync(join(dir, "vol-garbage.img"), "");
    writeFileSync(join(dir, "vol-noimage.json"), JSON.stringify({ version: 1, volumeId: "vol-noimage", sizeMib: 1, blockSizeBytes: 4096, createdAtMs: 1 }));
    writeFileSync(join(dir, "vol-other.json"), JSON.stringify({ version: 1, volumeId: "vol-good", sizeMib: 1, blockSizeBytes: 4096, createdAtMs: 1 }));
    writeFileSync(join(dir, "vol-other.img"), "");
    writeFileSync(join(dir, "vol-badsize.json"), JSON.stringify({ version: 1, volumeId: "vol-badsize", sizeMib: 0, blockSizeBytes: 4096, createdAtMs: 1 }));
    writeFileSync(join(dir, "vol-shortimg.json"), JSON.stringify({ version: 1, volumeId: "vol-shortimg", sizeMib: 1, blockSizeBytes: 4096, createdAtMs: 1 }));
    writeFileSync(join(dir, "vol-shortimg.img"), "short");
    const v2 = { version: 2, sizeMib: 1, blockSizeBytes: 4096, createdAtMs: 1, stateId: "" };
    writeFileSync(join(dir, "vol-noinc.json"), JSON.stringify({ ...v2, volumeId: "vol-noinc" }));
    writeFileSync(join(dir, "vol-noinc.img"), Buffer.alloc(bytesPerMib));
    writeFileSync(join(dir, "vol-numinc.json"), JSON.stringify({ ...v2, volumeId: "vol-numinc", incarnation: 7 }));
    writeFileSync(join(dir, "vol-numinc.img"), Buffer.alloc(bytesPerMib));
    writeFileSync(join(dir, "vol-longinc.json"), JSON.stringify({ ...v2, volumeId: "vol-longinc", incarnation: "x".repeat(65) }));
    writeFileSync(join(dir, "vol-longinc.img"), Buffer.alloc(bytesPerMib));
    writeFileSync(join(dir, "vol-v3.json"), JSON.stringify({ ...v2, version: 3, volumeId: "vol-v3", incarnation: "i" }));
    writeFileSync(join(dir, "vol-v3.img"), Buffer.alloc(bytesPerMib));
    writeFileSync(join(dir, "Bad.Name.json"), "{}");
    writeFileSync(join(dir, "vol-orphan.img"), "");
    writeFileSync(join(dir, "vol-x.json.tmp"), "half");
    writeFileSync(join(dir, "notes.txt"), "hello");
    mkdirSync(join(dir, "vol-dir.json"));

    const lines: string[] = [];
    const logger = pino({ level: "info" }, { write: (line: string) => void lines.push(line) });
    const { store: again } = await openStore({ dataDir, logger });
    expect(again.volumeIds()).toEqual(["vol-good"]);
    const skipped = lines
      .map((line) => JSON.parse(line) as { msg: string; file?: string })
      .filter((l) => l.msg === "skipped an unusable volume")
      .map((l) => l.file)
      .sort();
    expect(skipped).toEqual([
      "Bad.Name.json",
      "vol-badsize.json",
      "vol-dir.json",
      "vol-garbage.json",
      "vol-longinc.json",
      "vol-noimage.json",
      "vol-noinc.json",
      "vol-numinc.json",
      "vol-other.json",
      "vol-shortimg.json",
      "vol-v3.json",
    ]);
    expect(lines.some((l) => l.includes("vol-orphan.img") && l.includes("image without metadata"))).toBe(true);
    expect(existsSync(join(dir, "vol-x.json.tmp"))).toBe(false);
    // The garbage stays where it was: a scan never deletes what might be data.
    expect(existsSync(join(dir, "vol-garbage.json"))).toBe(true);
    expect(existsSync(join(dir, "vol-orphan.img"))).toBe(true);
  });

  it("block store: the open-file cache stays within its limit while I/O moves across volumes", async () => {
    // Proves the cache bounds the open image files (counted in /proc) and closes them all on close().
    const { store, dataDir } = await openStore({ openVolumesMax: 2 });
    const ids = ["vol-1", "vol-2", "vol-3", "vol-4", "vol-5"];
    for (const id of ids) await store.createVolume(id, 1, inc, stateId);
    for (let round = 0; round < 3; round++) {
      for (const [i, id] of ids.entries()) {
        await store.writeBlocks(id, round, pattern(1, 4096, i * 10 + round));
        expect(store.openFileCount).toBeLessThanOrEqual(2);
        expect(openImages(dataDir).length).toBeLessThanOrEqual(2);
      }
    }
    for (const [i, id] of ids.entries()) {
      for (let round = 0; round < 3; round++) {
        expect((await store.readBlocks(id, round, 1)).equals(pattern(1, 4096, i * 10 + round))).toBe(true);
      }
    }
    await store.close();
    expect(openImages(dataDir)).toEqual([]);
  });

  it("block store: many concurrent writers sharing fdatasyncs all land", async () => {
    // Proves group commit loses no write.
    const { store, dataDir } = await openStore();
    await store.createVolume("vol-1", 4, inc, stateId);
    const writes = Array.from({ length: 60 }, (_, i) => store.writeBlocks("vol-1", i * 4, pattern(4, 4096, 100 + i)));
    expect(await Promise.all(writes)).toEqual(Array(60).fill(4));
    await store.close();
    const { store: again } = await openStore({ dataDir });
    for (let i = 0; i < 60; i++) {
      expect((await again.readBlocks("vol-1", i * 4, 4)).equals(pattern(4, 4096, 100 + i))).toBe(true);
    }
  });

  it("block store: no write resolves before an fdatasync that began after its bytes were written", async () => {
    // Proves the durability rule in process, by watching every FileHandle's write and datasync.
    const { store, dataDir } = await openStore();
    await store.createVolume("vol-1", 4, inc, stateId);
    // Watch every FileHandle's write and datasync through their shared prototype.
    const probe = await open(join(dataDir, "volumes", "vol-1.img"), "r");
    const proto = Object.getPrototypeOf(probe) as FileHandle;
    await probe.close();
    let tick = 0;
    const writtenAt = new Map<number, number>();
    const syncs: { startedAt: number; endedAt: number }[] = [];
    const originalWrite = proto.write;
    const originalSync = proto.datasync;
    vi.spyOn(proto, "write").mockImplementation(async function (this: FileHandle, ...args: unknown[]) {
      const result = await (originalWrite as (...a: unknown[]) => Promise<unknown>).apply(this, args);
      writtenAt.set(args[3] as number, ++tick);
      return result as never;
    });
    vi.spyOn(proto, "datasync").mockImplementation(async function (this: FileHandle) {
      const sync = { startedAt: ++tick, endedAt: Infinity };
      syncs.push(sync);
      await originalSync.call(this);
      sync.endedAt = ++tick;
    });
    cleanups.push(() => {
      vi.restoreAllMocks();
    });
    const ackedAt = new Map<number, number>();
    await Promise.all(
      Array.from({ length: 40 }, async (_, i) => {
        await store.writeBlocks("vol-1", i, pattern(1, 4096, i));
        ackedAt.set(i * 4096, ++tick);
      }),
    );
    expect(ackedAt.size).toBe(40);
    for (const [position, acked] of ackedAt) {
      const written = writtenAt.get(position);
      expect(written).toBeDefined();
      const covering = syncs.find((s) => s.startedAt > written! && s.endedAt < acked);
      expect(covering, `write at ${position}`).toBeDefined();
    }
    // Group commit: far fewer fdatasyncs than writes.
    expect(syncs.length).toBeLessThan(40);
  });

  it("block store: requests beyond the in-flight and queue limits are refused RESOURCE_EXHAUSTED, the rest land", async () => {
    // Proves the block request and volume operation limits hold exactly, failing only what is past them.
    const { store } = await openStore({ capacityMib: 4096 });
    await store.createVolume("vol-1", 2, inc, stateId); // 512 blocks: room for every write below
    const writes = await Promise.allSettled(
      Array.from({ length: blockRequestsInFlightMax + blockRequestsQueuedMax + 10 }, (_, i) =>
        store.writeBlocks("vol-1", i, pattern(1, 4096, i)),
      ),
    );
    // In flight and waiting in line all land; only those past the line are refused.
    const refused = writes.filter((w) => w.status === "rejected");
    expect(refused).toHaveLength(10);
    for (const r of refused) expect((r as PromiseRejectedResult).reason).toMatchObject({ code: "RESOURCE_EXHAUSTED" });
    expect(writes.filter((w) => w.status === "fulfilled")).toHaveLength(blockRequestsInFlightMax + blockRequestsQueuedMax);

    const creates = await Promise.allSettled(
      Array.from({ length: volumeOpsQueuedMax + 5 }, (_, i) => store.createVolume(`vol-q${i}`, 1, inc, stateId)),
    );
    const queueFull = creates.filter((c) => c.status === "rejected");
    expect(queueFull).toHaveLength(5);
    for (const r of queueFull) expect((r as PromiseRejectedResult).reason).toMatchObject({ code: "RESOURCE_EXHAUSTED" });
    expect(store.volumeCount).toBe(1 + volumeOpsQueuedMax);
  });

  it("block store: bad ids never become paths", async () => {
    // Proves no request can name a file outside the volumes directory.
    const { store, dataDir } = await openStore();
    for (const id of ["../x", "a.b", "*", ">", "", "../../etc/passwd", "A"]) {
      await expect(store.createVolume(id, 1, inc, stateId)).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
      await expect(store.deleteVolume(id, inc)).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
      await expect(store.readBlocks(id, 0, 1)).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
      await expect(store.writeBlocks(id, 0, pattern(1, 4096, 0))).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
    }
    expect(readdirSync(join(dataDir, "volumes"))).toEqual([]);
    expect(readdirSync(dataDir)).toEqual(["volumes"]);
  });
});
