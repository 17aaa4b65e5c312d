// Proves the durability rule on the real process, where a SIGKILL test cannot
// (the page cache outlives the process, so an unsynced write still reads
// back): the san-storage process runs under strace, takes writes one at a
// time over NATS, and in the system-call trace every write to a volume's
// image file is followed by an fdatasync (or fsync) of that same file before
// the node writes its reply to the NATS socket. Image files are told from
// other files by the openat that returned their fd, and the NATS socket by
// its connect to the test server's port. Without strace the test is skipped,
// except under CI=true, where it fails.

import { afterAll, describe, expect, it } from "vitest";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { sanNodeService, type Bus } from "@simdc/bus";
import { SimdcError } from "@simdc/common";
import { connectTestBus, eventually, serviceScript, startTestNats, tempDir, type TestNats } from "@simdc/testkit";

const mainPath = serviceScript("san-storage");
const blockSize = 4096;
const inCi = process.env["CI"] === "true" || process.env["CI"] === "1";
/** The client's inbox: replies to it are the node's acknowledgements. */
const clientProcessId = "trace-client";
const traced = ["openat", "close", "connect", "pwrite64", "pwritev", "pwritev2", "fdatasync", "fsync", "write", "writev", "sendto", "sendmsg"];
const dataWrites = new Set(["pwrite64", "pwritev", "pwritev2", "write", "writev"]);
const socketWrites = new Set(["write", "writev", "sendto", "sendmsg"]);

const cleanups: (() => Promise<void> | void)[] = [];

afterAll(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** One system call from the trace: where it started and ended (lines differ when strace split it), its fd and result. */
interface Call {
  name: string;
  /** The first argument when it is a file descriptor. */
  fd: number | null;
  /** What it returned (-1 on error). */
  result: number;
  startLine: number;
  endLine: number;
  text: string;
}

/**
 * Parses an `strace -f -o` file. A call another thread interrupted is
 * printed as `<unfinished ...>` and later `<... name resumed>`; the two
 * halves become one call that started at the first line and ended at the second.
 */
function parseTrace(text: string): Call[] {
  const calls: Call[] = [];
  const unfinished = new Map<string, { text: string; line: number }>();
  const lines = text.split("\n");
  for (const [line, raw] of lines.entries()) {
    const m = /^(\d+)\s+(.*)$/.exec(raw);
    if (!m) continue;
    const [, pid, rest] = m as unknown as [string, string, string];
    let body = rest;
    let startLine = line;
    const resumed = /^<\.\.\. \w+ resumed>(.*)$/.exec(rest);
    if (resumed) {
      const head = unfinished.get(pid);
      if (!head) continue;
      unfinished.delete(pid);
      body = head.text + resumed[1];
      startLine = head.line;
    } else if (rest.endsWith(" <unfinished ...>")) {
      unfinished.set(pid, { text: rest.slice(0, -" <unfinished ...>".length), line });
      continue;
    }
    const call = /^(\w+)\((.*)\)\s+=\s+(-?\d+)/s.exec(body);
    if (!call) continue;
    const [, name, args, result] = call as unknown as [string, string, string, string];
    const fd = /^(\d+)[,)]?/.exec(args);
    calls.push({ name, fd: fd ? Number(fd[1]) : null, result: Number(result), startLine, endLine: line, text: body });
  }
  return calls.sort((a, b) => a.endLine - b.endLine);
}

/**
 * Every write to an image file that is not followed, before the next reply
 * to the client on the NATS socket, by a successful fdatasync or fsync of the
 * same fd that began after the write ended.
 */
function unsyncedWrites(calls: Call[], natsPort: number): { violations: string[]; imageWrites: number; replies: number } {
  const pathOf = new Map<number, string>();
  const natsSockets = new Set<number>();
  const writes: { call: Call; path: string }[] = [];
  const replies: Call[] = [];
  for (const call of calls) {
    if (call.name === "openat" && call.result >= 0) {
      const path = /^AT_FDCWD, "([^"]*)"/.exec(call.text.slice(call.text.indexOf("(") + 1));
      if (path) pathOf.set(call.result, path[1]!);
    } else if (call.name === "close" && call.fd !== null) {
      pathOf.delete(call.fd);
      natsSockets.delete(call.fd);
    } else if (call.name === "connect" && call.fd !== null && call.text.includes(`sin_port=htons(${natsPort})`)) {
      natsSockets.add(call.fd);
    } else if (call.fd !== null && natsSockets.has(call.fd) && socketWrites.has(call.name)) {
      // A reply to a request of the test's client (HPUB for error replies contains it too).
      if (call.text.includes(`PUB _INBOX.${clientProcessId}.`)) replies.push(call);
    } else if (call.fd !== null && dataWrites.has(call.name) && pathOf.get(call.fd)?.endsWith(".img")) {
      writes.push({ call, path: pathOf.get(call.fd)! });
    }
  }
  const violations: string[] = [];
  for (const { call: write, path } of writes) {
    const what = `${write.name} of ${write.result} bytes to ${path} (fd ${write.fd}, trace line ${write.endLine + 1})`;
    const reply = replies.find((r) => r.startLine > write.endLine);
    if (!reply) {
      violations.push(`${what} has no reply after it`);
      continue;
    }
    const synced = calls.some(
      (c) =>
        (c.name === "fdatasync" || c.name === "fsync") &&
        c.fd === write.fd &&
        c.result === 0 &&
        c.startLine > write.endLine &&
        c.endLine < reply.startLine,
    );
    if (!synced) violations.push(`${what} was not fdatasynced before the reply on trace line ${reply.startLine + 1}`);
  }
  return { violations, imageWrites: writes.length, replies: replies.length };
}

/** The pids of a process's children, from /proc. */
function childrenOf(pid: number): number[] {
  const path = `/proc/${pid}/task/${pid}/children`;
  if (!existsSync(path)) return [];
  return readFileSync(path, "utf8").trim().split(/\s+/).filter(Boolean).map(Number);
}

function exitOf(child: ChildProcess): Promise<number | NodeJS.Signals> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.signalCode ?? child.exitCode ?? 0);
  return new Promise((resolve) => child.once("exit", (code, signal) => resolve(signal ?? code ?? 0)));
}

describe("fdatasync trace", () => {
  it("fdatasync trace: the process fdatasyncs every write to a volume image before it sends the acknowledgement", async ({ skip }) => {
    // Proves, from the kernel's view of the real process, that no acknowledgement leaves before its write was
    // fdatasynced.
    const probe = spawnSync("strace", ["-V"], { encoding: "utf8" });
    if (probe.error || probe.status !== 0) {
      const reason = `strace is not usable here (${probe.error?.message ?? probe.stderr.trim()}); scripts/setup.sh installs it`;
      if (inCi) throw new Error(`${reason}; CI=true, so this test must run`);
      skip(reason);
    }
    if (!existsSync(mainPath)) throw new Error(`${mainPath} is missing: build first (npx tsc -b packages/san-storage)`);

    const nats: TestNats = await startTestNats();
    cleanups.push(() => nats.dispose());
    const natsPort = Number(new URL(nats.url).port);
    const client: Bus = await connectTestBus(nats.url, { processId: clientProcessId });
    cleanups.push(() => client.close());
    const dir = tempDir("san-trace");
    cleanups.push(() => dir.remove());
    const traceFile = join(dir.path, "trace.txt");
    const dataDir = join(dir.path, "data");
    const nodeId = "san-trace";

    const env = Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith("SIMDC_") && key !== "NATS_URL"));
    const strace = spawn(
      "strace",
      [
        "-f",
        "-qq",
        "-s",
        "1024",
        "-e",
        `trace=${traced.join(",")}`,
        "-e",
        "signal=none",
        "-o",
        traceFile,
        process.execPath,
        mainPath,
        "--nats-url",
        nats.url,
        "--node-id",
        nodeId,
        "--data-dir",
        dataDir,
        // One heartbeat at start and none while writing, to keep the socket quiet.
        "--heartbeat-interval-ms",
        "60000",
        "--log-level",
        "warn",
      ],
      // libuv may submit file I/O through io_uring, which strace would see only
      // as io_uring_enter; the thread pool makes each pwrite and fdatasync a call.
      { env: { ...env, UV_USE_IO_URING: "0", LOG_LEVEL: "warn" }, stdio: ["ignore", "pipe", "pipe"] },
    );
    let output = "";
    strace.stdout?.on("data", (chunk: Buffer) => (output += chunk.toString()));
    strace.stderr?.on("data", (chunk: Buffer) => (output += chunk.toString()));
    const exited = exitOf(strace);
    cleanups.push(async () => {
      for (const pid of childrenOf(strace.pid ?? -1)) process.kill(pid, "SIGKILL");
      strace.kill("SIGKILL");
      await exited;
    });

    await eventually(
      "the traced node serving",
      async () => {
        if (strace.exitCode !== null) throw new Error(`strace exited early:\n${output}`);
        try {
          await client.call(sanNodeService.ListBackingVolumes, {}, { scopeId: nodeId, timeoutMs: 1_000 });
          return true;
        } catch (err) {
          if (err instanceof SimdcError && err.code === "UNAVAILABLE") return undefined;
          throw err;
        }
      },
      30_000,
    );
    const volumeId = "vol-t";
    await client.call(sanNodeService.CreateBackingVolume, { volumeId, sizeMib: 1, incarnation: "inc-t" }, { scopeId: nodeId });
    // One write at a time, each awaited, so each acknowledgement follows exactly one image write.
    const writes = 20;
    for (let i = 0; i < writes; i++) {
      const count = 1 + (i % 3);
      const data = new Uint8Array(count * blockSize).fill(i + 1);
      const res = await client.call(sanNodeService.WriteBlocks, { volumeId, lba: i * 4, data }, { scopeId: nodeId });
      expect(res.blocksWritten).toBe(count);
    }

    const [nodePid] = childrenOf(strace.pid ?? -1);
    expect(nodePid, "the node's pid under strace").toBeDefined();
    process.kill(nodePid!, "SIGTERM");
    // strace exits with its tracee's status once the node has exited and the trace is complete.
    expect(await exited, output).toBe(0);

    const calls = parseTrace(readFileSync(traceFile, "utf8"));
    const { violations, imageWrites, replies } = unsyncedWrites(calls, natsPort);
    // The trace saw what the test did: one image write per WriteBlocks, and a
    // reply to each request (the waits for serving, the create and the writes).
    expect(imageWrites).toBe(writes);
    expect(replies).toBeGreaterThanOrEqual(writes + 2);
    expect(violations).toEqual([]);
  });
});
