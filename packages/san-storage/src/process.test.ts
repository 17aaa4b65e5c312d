// Proves the san-storage process as a real child (node packages/san-storage/
// dist/main.js; build first): every write it acknowledged before a SIGKILL
// under concurrent load reads back exactly after a restart on the same data
// dir (a write in flight at the kill may read old or new, block by block); it
// reports its health over HTTP and exits 0 on SIGTERM; and a bad flag ends it
// with exit code 2 and one line. A SIGKILL leaves the page cache alone, so
// this cannot see a missing fdatasync: fdatasync-trace.test.ts does.

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { existsSync } from "node:fs";
import { sanNodeService, type Bus } from "@simdc/bus";
import { SimdcError } from "@simdc/common";
import {
  connectTestBus,
  eventually,
  freePort,
  serviceScript,
  startService,
  startTestNats,
  tempDir,
  type TestNats,
  type TestService,
} from "@simdc/testkit";

const mainPath = serviceScript("san-storage");
const blockSize = 4096;

let nats: TestNats;
let client: Bus;
const children: TestService[] = [];
const dirs: { remove(): void }[] = [];

beforeAll(async () => {
  if (!existsSync(mainPath)) throw new Error(`${mainPath} is missing: build first (npx tsc -b packages/san-storage)`);
  nats = await startTestNats();
  client = await connectTestBus(nats.url);
});

afterAll(async () => {
  for (const child of children) child.signal("SIGKILL");
  await client?.close();
  await nats?.dispose();
  for (const dir of dirs) dir.remove();
});

function spawnNode(args: string[]): TestService {
  const child = startService("san-storage", args);
  children.push(child);
  return child;
}

function startNode(nodeId: string, dataDir: string, extraArgs: string[] = []): TestService {
  return spawnNode([
    ...extraArgs,
    "--nats-url",
    nats.url,
    "--node-id",
    nodeId,
    "--data-dir",
    dataDir,
    "--heartbeat-interval-ms",
    "200",
    "--log-level",
    "warn",
  ]);
}


/** Waits until the node answers on the bus; returns the volumes it holds. */
async function waitServing(nodeId: string, child: TestService): Promise<string[]> {
  return eventually(
    `${nodeId} serving`,
    async () => {
      if (child.child.exitCode !== null) throw new Error(`exited early:\n${child.output()}`);
      try {
        const listed = await client.call(sanNodeService.ListBackingVolumes, {}, { scopeId: nodeId, timeoutMs: 1_000 });
        return listed.volumes.map((v) => v.volumeId ?? "");
      } catch (err) {
        // Not serving yet: nobody answers until the node has subscribed.
        if (err instanceof SimdcError && err.code === "UNAVAILABLE") return undefined;
        throw err;
      }
    },
    30_000,
  );
}

/** One block of a write: every byte depends on the writer, the write and the block. */
function fillBlock(target: Uint8Array, offset: number, writer: number, seq: number, lba: number): void {
  const view = new DataView(target.buffer, target.byteOffset + offset, blockSize);
  view.setUint32(0, writer);
  view.setUint32(4, seq);
  view.setUint32(8, lba);
  for (let i = 12; i < blockSize; i++) target[offset + i] = (writer * 31 + seq * 7 + lba * 3 + i) & 0xff;
}

function expectedBlock(writer: number, seq: number, lba: number): Uint8Array {
  const block = new Uint8Array(blockSize);
  fillBlock(block, 0, writer, seq, lba);
  return block;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

describe("san-storage process", () => {
  it(
    "san-storage process: every write acknowledged before a SIGKILL under load reads back after restart",
    async () => {
      // Proves no acknowledged write is lost or torn by a crash under load, and that the check reached the writes
      // acknowledged just before the kill.
      const nodeId = "san-kill";
      const dir = tempDir("san-kill");
      dirs.push(dir);
      const first = startNode(nodeId, dir.path);
      await waitServing(nodeId, first);
      const volumeId = "vol-load";
      await client.call(sanNodeService.CreateBackingVolume, { volumeId, sizeMib: 2, incarnation: "inc-load" }, { scopeId: nodeId });

      // Each writer owns a disjoint run of blocks and has one write in flight at
      // a time, so for every block the acknowledged content is exact and at most
      // one unacknowledged write may also have landed.
      const writers = 32;
      const blocksPerWriter = 16;
      const blockCount = writers * blocksPerWriter;
      // For each block, the last acknowledged write to it (null: never, so zeros).
      const acked: ({ seq: number; ackIndex: number } | null)[] = Array(blockCount).fill(null);
      const inFlight: ({ seq: number; lba: number; count: number } | null)[] = Array(writers).fill(null);
      const errorsBeforeKill: string[] = [];
      let ackCount = 0;
      let killed = false;

      const runWriter = async (writer: number): Promise<void> => {
        for (let seq = 1; !killed; seq++) {
          const ownFirst = writer * blocksPerWriter;
          const offset = (seq * 5 + writer) % blocksPerWriter;
          const count = Math.min(1 + ((seq + writer) % 8), blocksPerWriter - offset);
          const lba = ownFirst + offset;
          const data = new Uint8Array(count * blockSize);
          for (let b = 0; b < count; b++) fillBlock(data, b * blockSize, writer, seq, lba + b);
          inFlight[writer] = { seq, lba, count };
          try {
            const res = await client.call(sanNodeService.WriteBlocks, { volumeId, lba, data }, { scopeId: nodeId, timeoutMs: 3_000 });
            if (res.blocksWritten !== count) throw new Error(`write ${writer}/${seq}: ${res.blocksWritten} of ${count} blocks written`);
            const ackIndex = ackCount++;
            for (let b = 0; b < count; b++) acked[lba + b] = { seq, ackIndex };
            inFlight[writer] = null;
          } catch (err) {
            // After the kill a write in flight fails; it stays in inFlight as
            // "may or may not have landed". Before the kill nothing may fail.
            if (!killed) errorsBeforeKill.push(String(err));
            return;
          }
        }
      };

      const load = Array.from({ length: writers }, (_, w) => runWriter(w));
      await eventually("400 acknowledged writes", () => (ackCount >= 400 ? true : undefined), 60_000, 5);
      first.signal("SIGKILL");
      killed = true;
      const ackedAtKill = ackCount;
      const pendingAtKill = inFlight.filter((w) => w !== null).length;
      await Promise.all(load);
      expect(await first.exited).toBe("SIGKILL");
      expect(errorsBeforeKill).toEqual([]);
      expect(pendingAtKill).toBeGreaterThan(0);

      const second = startNode(nodeId, dir.path);
      expect(await waitServing(nodeId, second)).toEqual([volumeId]);
      const image = new Uint8Array(blockCount * blockSize);
      for (let lba = 0; lba < blockCount; lba += 128) {
        const res = await client.call(sanNodeService.ReadBlocks, { volumeId, lba, blockCount: 128 }, { scopeId: nodeId });
        image.set(res.data, lba * blockSize);
      }

      /** What a block holds, from the header every written block carries. */
      const describeBlock = (block: Uint8Array): string => {
        if (sameBytes(block, new Uint8Array(blockSize))) return "zeros";
        const view = new DataView(block.buffer, block.byteOffset, blockSize);
        return `writer ${view.getUint32(0)} write ${view.getUint32(4)} block ${view.getUint32(8)}`;
      };
      const lost: string[] = [];
      const verifiedAckIndexes = new Set<number>();
      let landedUnacked = 0;
      for (let lba = 0; lba < blockCount; lba++) {
        const writer = Math.floor(lba / blocksPerWriter);
        const got = image.subarray(lba * blockSize, (lba + 1) * blockSize);
        const last = acked[lba] ?? null;
        const accepted = last === null ? new Uint8Array(blockSize) : expectedBlock(writer, last.seq, lba);
        if (sameBytes(got, accepted)) {
          if (last !== null) verifiedAckIndexes.add(last.ackIndex);
          continue;
        }
        // Only the writer's write in flight at the kill may have replaced it, whole block by whole block.
        const pending = inFlight[writer];
        if (pending && lba >= pending.lba && lba < pending.lba + pending.count && sameBytes(got, expectedBlock(writer, pending.seq, lba))) {
          landedUnacked += 1;
          continue;
        }
        lost.push(`block ${lba} holds ${describeBlock(got)}, not ${last === null ? "zeros" : `its acknowledged write ${last.seq}`}`);
      }
      expect(lost).toEqual([]);
      // The check reached the writes acknowledged last before the kill, the
      // ones a node that acknowledged before writing would lose: at least one
      // block of most of them still shows (the rest were overwritten by an
      // acknowledged or in-flight write of the same writer).
      const lastBeforeKill = Array.from({ length: writers }, (_, i) => ackedAtKill - 1 - i);
      const lastVerified = lastBeforeKill.filter((i) => verifiedAckIndexes.has(i)).length;
      // Visible when run with --reporter=verbose; either outcome is allowed for unacked writes.
      console.info(
        `acked writes ${ackCount} (${ackCount - ackedAtKill} after the kill signal), in flight at kill ${pendingAtKill}, ` +
          `unacked blocks that landed ${landedUnacked}, last ${writers} acked before the kill seen on disk ${lastVerified}`,
      );
      expect(lastVerified).toBeGreaterThan(writers / 2);

      second.signal("SIGTERM");
      expect(await second.exited).toBe(0);
    },
    180_000,
  );

  it("san-storage process: reports its health over HTTP and exits 0 on SIGTERM", async () => {
    // Proves the process reports its health (including a writable disk) over HTTP and stops cleanly.
    const nodeId = "san-term";
    const dir = tempDir("san-term");
    dirs.push(dir);
    const healthPort = await freePort();
    const child = startNode(nodeId, dir.path, ["--health-port", String(healthPort)]);
    await waitServing(nodeId, child);
    await client.call(sanNodeService.CreateBackingVolume, { volumeId: "vol-a", sizeMib: 1, incarnation: "inc-a" }, { scopeId: nodeId });
    // No controller runs here, so the node serves unregistered and says so.
    const health = await fetch(`http://127.0.0.1:${healthPort}/healthz`);
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({ status: "ok", nats: "connected", nodeId, registered: false, volumeCount: 1, writable: true, problem: null });
    child.signal("SIGTERM");
    expect(await child.exited, child.output()).toBe(0);
    expect(child.output()).not.toMatch(/"level":(50|60)/);
  });

  it("san-storage process: a bad flag exits 2 with one line on stderr", async () => {
    // Proves bad settings end the process before it connects, with one line a user can act on.
    for (const args of [
      ["--bogus"],
      ["--data-dir", "/tmp/x"],
      ["--node-id", "../x", "--data-dir", "/tmp/x"],
      ["--node-id", "san-1", "--data-dir", "/tmp/x", "--block-size-bytes", "1000"],
      ["--node-id", "san-1", "--data-dir", "/tmp/x", "--capacity-mib", "0"],
    ]) {
      const child = spawnNode(args);
      expect(await child.exited, args.join(" ")).toBe(2);
      expect(child.stderr(), args.join(" ")).toMatch(/^san-storage: [^\n]+\n$/);
      expect(child.stdout()).toBe("");
    }
  });
});
