// Proves what a SAN node does when its disk stops taking writes, on real
// read-only mounts (root only): reads keep working, writes and creates fail
// with FAILED_PRECONDITION naming the read-only disk, heartbeats say
// writable=false with the problem, health() is unhealthy, and once the disk
// takes writes again the next write succeeds and clears all of that.
//
// Two mechanisms, since Linux refuses `mount -o remount,ro` while any file on
// the mount is open for writing (the node keeps its images open read-write):
// - a disk that goes read-only under the running node: an ext4 image on a
//   loop device mounted errors=remount-ro, failed on purpose through ext4's
//   sysfs trigger_fs_error, which is what the kernel does to a disk with
//   errors; ext4 keeps that mount read-only until it is unmounted;
// - a disk that is read-only when the node starts and is remounted
//   read-write while the node runs: a tmpfs remounted ro, then rw.
// Without root or mount support the tests are skipped, except under CI=true,
// where a missing mechanism fails them.

import { afterEach, describe, expect, it } from "vitest";
import { execFileSync } from "node:child_process";
import { closeSync, existsSync, mkdirSync, openSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import { simdc } from "@simdc/proto";
import { createLogger, ManualClock, Rng, type Clock } from "@simdc/common";
import { sanNodeService, type Bus } from "@simdc/bus";
import { connectTestBus, eventually, startTestNats, tempDir, type TestNats } from "@simdc/testkit";
import { SanNode, diskProbeEveryBeats } from "./mod.js";

import v1 = simdc.v1;

const logger = createLogger({ service: "test", id: "read-only-disk", level: process.env["LOG_LEVEL"] ?? "silent" });
const blockSize = 4096;
const heartbeatIntervalMs = 1000;
const readOnlyProblem = "the disk is read-only";
const inCi = process.env["CI"] === "true" || process.env["CI"] === "1";

const cleanups: (() => Promise<void> | void)[] = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** Runs a command; throws with its stderr when it fails. */
function run(command: string, args: string[]): string {
  try {
    return execFileSync(command, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`${command} ${args.join(" ")} failed: ${(e.stderr ?? "").trim() || e.message}`);
  }
}

/** Unmounts, lazily when something still holds the mount (a failed test's leftovers). */
function unmount(mountPoint: string): void {
  try {
    run("umount", [mountPoint]);
  } catch {
    // Busy: detach it now and let the kernel finish once the files close.
    run("umount", ["-l", mountPoint]);
  }
}

/**
 * Mounts with `mountArgs` on a fresh directory, or says why that is not
 * possible here: skipped on a developer's machine, a failure under CI.
 */
function mountOrSkip(skip: (note: string) => never, what: string, mountArgs: (mountPoint: string, dir: string) => string[], prepare?: (dir: string) => void): { dir: string; mountPoint: string } {
  const dir = tempDir("san-ro");
  cleanups.push(() => dir.remove());
  const mountPoint = join(dir.path, "disk");
  mkdirSync(mountPoint);
  try {
    if (process.getuid?.() !== 0) throw new Error("not running as root");
    prepare?.(dir.path);
    run("mount", mountArgs(mountPoint, dir.path));
  } catch (err) {
    const reason = `cannot make a ${what} here: ${(err as Error).message}`;
    if (inCi) throw new Error(`${reason} (CI=true: this test must run, so the machine must allow it)`);
    skip(reason);
  }
  cleanups.push(() => unmount(mountPoint));
  return { dir: dir.path, mountPoint };
}

/** True when a file can be created on `dir` right now. */
function takesWrites(dir: string): boolean {
  const probe = join(dir, "probe");
  try {
    closeSync(openSync(probe, "w"));
    run("rm", ["-f", probe]);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EROFS") return false;
    throw err;
  }
}

function blocks(count: number, seed: number): Uint8Array {
  const data = new Uint8Array(count * blockSize);
  for (let i = 0; i < data.length; i++) data[i] = (seed * 7 + i * 13) & 0xff;
  return data;
}

interface Harness {
  nats: TestNats;
  client: Bus;
  beats: v1.SanNodeHeartbeat[];
  start(dataDir: string, nodeId: string, clock: Clock): Promise<SanNode>;
}

async function harness(prefix: string, nodeId: string): Promise<Harness> {
  const nats = await startTestNats();
  cleanups.push(() => nats.dispose());
  const client = await connectTestBus(nats.url, { prefix });
  cleanups.push(() => client.close());
  const beats: v1.SanNodeHeartbeat[] = [];
  const sub = client.subscribe(client.subjects.event("san", nodeId, "heartbeat"), v1.SanNodeHeartbeat, (hb) => {
    beats.push(hb);
  });
  cleanups.push(() => sub.unsubscribe());
  await client.flush();
  return {
    nats,
    client,
    beats,
    async start(dataDir, id, clock) {
      const nodeBus = await connectTestBus(nats.url, { prefix });
      cleanups.push(() => nodeBus.close());
      const node = await SanNode.start({
        bus: nodeBus,
        logger,
        clock,
        random: new Rng(1, "san").random,
        nodeId: id,
        dataDir,
        capacityMib: 32,
        blockSizeBytes: blockSize,
        heartbeatIntervalMs,
      });
      cleanups.push(() => node.stop());
      // The server has the node's subscriptions once its connection's flush returns.
      await nodeBus.flush();
      return node;
    },
  };
}

/** Moves the node's clock one interval on and returns the heartbeat it sends then. */
async function nextBeat(h: Harness, clock: ManualClock, node: SanNode): Promise<v1.SanNodeHeartbeat> {
  const seen = h.beats.length;
  await clock.advanceAsync(heartbeatIntervalMs);
  return eventually("the next heartbeat", () => h.beats.slice(seen).find((b) => b.bootId === node.bootId));
}

describe("read-only disk", () => {
  it("read-only disk: a disk that goes read-only under a running node keeps serving reads, refuses writes and creates as FAILED_PRECONDITION, and the node reports it", async ({ skip }) => {
    // Proves the node degrades to read-only service, typed and reported, when its disk fails under it.
    const { mountPoint } = mountOrSkip(
      skip,
      "loop-mounted ext4 that errors to read-only",
      (mnt, dir) => ["-o", "loop,errors=remount-ro", join(dir, "disk.img"), mnt],
      (dir) => {
        run("truncate", ["-s", "64M", join(dir, "disk.img")]);
        // No journal: nothing to replay or abort, the error only flips the mount to read-only.
        run("mkfs.ext4", ["-q", "-F", "-O", "^has_journal", join(dir, "disk.img")]);
      },
    );
    const device = basename(run("findmnt", ["-n", "-o", "SOURCE", mountPoint]).trim());
    const trigger = `/sys/fs/ext4/${device}/trigger_fs_error`;
    if (!existsSync(trigger)) {
      if (inCi) throw new Error(`${trigger} is missing: this kernel cannot fail an ext4 mount on purpose`);
      skip(`${trigger} is missing`);
    }

    const nodeId = "san-ro-live";
    const h = await harness("rolive", nodeId);
    const clock = new ManualClock();
    const node = await h.start(mountPoint, nodeId, clock);
    const call = { scopeId: nodeId };
    await h.client.call(sanNodeService.CreateBackingVolume, { volumeId: "vol-a", sizeMib: 4, incarnation: "inc-a" }, call);
    // vol-c is never touched before the disk fails, so the node has no open file for it.
    await h.client.call(sanNodeService.CreateBackingVolume, { volumeId: "vol-c", sizeMib: 1, incarnation: "inc-c" }, call);
    const data = blocks(8, 1);
    await h.client.call(sanNodeService.WriteBlocks, { volumeId: "vol-a", lba: 16, data }, call);
    expect(await nextBeat(h, clock, node)).toMatchObject({ writable: true, problem: "" });

    // What the kernel does to a disk with errors: the mount turns read-only under the open files.
    writeFileSync(trigger, "1");
    expect(takesWrites(mountPoint)).toBe(false);

    const read = await h.client.call(sanNodeService.ReadBlocks, { volumeId: "vol-a", lba: 16, blockCount: 8 }, call);
    expect(Buffer.from(read.data).equals(Buffer.from(data))).toBe(true);
    const refused = h.client.call(sanNodeService.WriteBlocks, { volumeId: "vol-a", lba: 0, data: blocks(1, 2) }, call);
    await expect(refused).rejects.toMatchObject({ code: "FAILED_PRECONDITION", message: expect.stringContaining(readOnlyProblem) });
    // A volume opened only now is read through a read-only file.
    const fresh = await h.client.call(sanNodeService.ReadBlocks, { volumeId: "vol-c", lba: 0, blockCount: 2 }, call);
    expect(Buffer.from(fresh.data).equals(Buffer.alloc(2 * blockSize))).toBe(true);
    await expect(h.client.call(sanNodeService.WriteBlocks, { volumeId: "vol-c", lba: 0, data: blocks(1, 3) }, call)).rejects.toMatchObject({
      code: "FAILED_PRECONDITION",
      message: expect.stringContaining(readOnlyProblem),
    });
    await expect(
      h.client.call(sanNodeService.CreateBackingVolume, { volumeId: "vol-b", sizeMib: 1, incarnation: "inc-b" }, call),
    ).rejects.toMatchObject({ code: "FAILED_PRECONDITION", message: expect.stringContaining(readOnlyProblem) });

    expect(node.health()).toMatchObject({ healthy: false, details: { writable: false, problem: readOnlyProblem } });
    expect(await nextBeat(h, clock, node)).toMatchObject({ writable: false, problem: readOnlyProblem });
    // The inventory is still served, unchanged.
    const listed = await h.client.call(sanNodeService.ListBackingVolumes, {}, call);
    expect(listed.volumes.map((v) => v.volumeId)).toEqual(["vol-a", "vol-c"]);
  });

  it("read-only disk: a node started on a read-only disk serves reads, and once the disk is remounted read-write the next write succeeds and clears the problem", async ({ skip }) => {
    // Proves the node recovers by itself once the disk takes writes again, even for a volume it was reading through a
    // read-only file.
    const { mountPoint } = mountOrSkip(skip, "tmpfs", (mnt) => ["-t", "tmpfs", "-o", "size=48m", "simdc-san-ro", mnt]);
    const nodeId = "san-ro-remount";
    const h = await harness("roremount", nodeId);
    const call = { scopeId: nodeId };
    const first = await h.start(mountPoint, nodeId, new ManualClock());
    await h.client.call(sanNodeService.CreateBackingVolume, { volumeId: "vol-a", sizeMib: 2, incarnation: "inc-a" }, call);
    await h.client.call(sanNodeService.CreateBackingVolume, { volumeId: "vol-b", sizeMib: 2, incarnation: "inc-b" }, call);
    const data = blocks(4, 4);
    await h.client.call(sanNodeService.WriteBlocks, { volumeId: "vol-a", lba: 0, data }, call);
    // The running node holds its images open read-write, and Linux refuses a
    // read-only remount under open writers, so the node stops first.
    await first.stop();
    run("mount", ["-o", "remount,ro", mountPoint]);
    expect(takesWrites(mountPoint)).toBe(false);

    const clock = new ManualClock();
    const node = await h.start(mountPoint, nodeId, clock);
    const read = await h.client.call(sanNodeService.ReadBlocks, { volumeId: "vol-a", lba: 0, blockCount: 4 }, call);
    expect(Buffer.from(read.data).equals(Buffer.from(data))).toBe(true);
    for (const volumeId of ["vol-a", "vol-b"]) {
      await expect(h.client.call(sanNodeService.WriteBlocks, { volumeId, lba: 8, data: blocks(1, 5) }, call), volumeId).rejects.toMatchObject({
        code: "FAILED_PRECONDITION",
        message: expect.stringContaining(readOnlyProblem),
      });
    }
    expect(node.health()).toMatchObject({ healthy: false, details: { writable: false, problem: readOnlyProblem } });
    expect(await nextBeat(h, clock, node)).toMatchObject({ writable: false, problem: readOnlyProblem });

    run("mount", ["-o", "remount,rw", mountPoint]);
    expect(takesWrites(mountPoint)).toBe(true);
    // The first write after the repair lands, on the volume the node was reading through a read-only file.
    const repaired = blocks(1, 6);
    const written = await h.client.call(sanNodeService.WriteBlocks, { volumeId: "vol-a", lba: 8, data: repaired }, call);
    expect(written.blocksWritten).toBe(1);
    expect(node.health()).toMatchObject({ healthy: true, details: { writable: true, problem: null } });
    expect(await nextBeat(h, clock, node)).toMatchObject({ writable: true, problem: "" });
    const back = await h.client.call(sanNodeService.ReadBlocks, { volumeId: "vol-a", lba: 0, blockCount: 9 }, call);
    expect(Buffer.from(back.data).equals(Buffer.concat([data, Buffer.alloc(4 * blockSize), repaired]))).toBe(true);
    await h.client.call(sanNodeService.WriteBlocks, { volumeId: "vol-b", lba: 8, data: repaired }, call);
  });

  it("read-only disk: the node's disk probe finds a disk that went read-only, and one that came back, with no write at all", async ({ skip }) => {
    // Proves a node reports its disk truthfully even while nobody writes: a
    // node whose disk went read-only must not keep saying it is healthy.
    const { mountPoint } = mountOrSkip(skip, "tmpfs", (mnt) => ["-t", "tmpfs", "-o", "size=16m", "simdc-san-probe", mnt]);
    const nodeId = "san-probe";
    const h = await harness("probe", nodeId);
    const clock = new ManualClock();
    const node = await h.start(mountPoint, nodeId, clock);
    const beatsUntil = async (writable: boolean): Promise<v1.SanNodeHeartbeat> => {
      for (let i = 0; i < 3 * diskProbeEveryBeats; i++) {
        const beat = await nextBeat(h, clock, node);
        if (beat.writable === writable) return beat;
      }
      throw new Error(`no heartbeat said writable=${writable} within ${3 * diskProbeEveryBeats} beats`);
    };
    expect((await beatsUntil(true)).problem).toBe("");
    // The node holds no file open for writing, so the disk can be remounted under it.
    run("mount", ["-o", "remount,ro", mountPoint]);
    expect(await beatsUntil(false)).toMatchObject({ writable: false, problem: readOnlyProblem });
    expect(node.health()).toMatchObject({ healthy: false, details: { writable: false } });
    run("mount", ["-o", "remount,rw", mountPoint]);
    expect(await beatsUntil(true)).toMatchObject({ writable: true, problem: "" });
    expect(node.health().healthy).toBe(true);
  });
});
