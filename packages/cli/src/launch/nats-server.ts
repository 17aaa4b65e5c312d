// Finds and starts nats-server with JetStream, for `simdc up` and for tests.
// It never uses a server somebody else started: each launch gets its own port
// and store directory, and is ready only when the server says so.

import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync } from "node:fs";
import { createServer } from "node:net";
import { delimiter, join } from "node:path";
import { failedPrecondition, unavailable, wallClock } from "@simdc/common";

export interface NatsServerOptions {
  /** TCP port; a free one is picked when absent. */
  port?: number;
  /** JetStream store directory. */
  storeDir: string;
  /** A configuration file (users and permissions); flags still set address, port and store. */
  configFile?: string;
  /** Where the server's own log goes (its stderr); inherited when absent. */
  logFd?: number;
  readyTimeoutMs?: number;
}

export interface NatsServerHandle {
  url: string;
  port: number;
  child: ChildProcess;
  pid: number;
  /** SIGTERM, then waits for the exit. */
  stop(): Promise<void>;
}

const installHint =
  "nats-server was not found: install it (Debian/Ubuntu: apt-get install nats-server; elsewhere see https://docs.nats.io/running-a-nats-service/introduction/installation) or set NATS_SERVER_BIN";

/** The nats-server binary: NATS_SERVER_BIN, else PATH, else /usr/sbin; null when none. */
export function findNatsServer(env: NodeJS.ProcessEnv = process.env): string | null {
  const explicit = env["NATS_SERVER_BIN"];
  if (explicit) return existsSync(explicit) ? explicit : null;
  const dirs = [...(env["PATH"] ?? "").split(delimiter), "/usr/sbin", "/usr/local/sbin"];
  for (const dir of dirs) {
    if (!dir) continue;
    const candidate = join(dir, "nats-server");
    if (existsSync(candidate)) return candidate;
  }
  return null;
}

/**
 * Finds nats-server, installing it from the OS packages when this process may
 * (root, with apt-get).
 * @throws SimdcError FAILED_PRECONDITION with a one-line hint when neither works.
 */
export function ensureNatsServer(log: (line: string) => void): string {
  const found = findNatsServer();
  if (found) return found;
  const isRoot = process.getuid?.() === 0;
  if (isRoot && existsSync("/usr/bin/apt-get")) {
    log("nats-server not found; installing it with apt-get");
    const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
    spawnSync("apt-get", ["update", "-qq"], { stdio: "ignore", env });
    spawnSync("apt-get", ["install", "-y", "-qq", "nats-server"], { stdio: "ignore", env });
    const installed = findNatsServer();
    if (installed) return installed;
  }
  throw failedPrecondition(installHint);
}

/** A TCP port nobody listens on right now. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/**
 * Starts nats-server with JetStream on 127.0.0.1 and waits for "Server is ready".
 * @throws SimdcError FAILED_PRECONDITION when there is no binary, UNAVAILABLE
 * when it exits or stays silent past readyTimeoutMs.
 */
export async function startNatsServer(binary: string, options: NatsServerOptions): Promise<NatsServerHandle> {
  const port = options.port ?? (await freePort());
  mkdirSync(options.storeDir, { recursive: true });
  const args = [...(options.configFile ? ["-c", options.configFile] : []), "-a", "127.0.0.1", "-p", String(port), "-js", "-sd", options.storeDir];
  const child = spawn(binary, args, {
    stdio: ["ignore", options.logFd ?? "ignore", "pipe"],
    // Its own process group: a Ctrl-C meant for the supervisor must not reach it first.
    detached: true,
  });
  const readyTimeoutMs = options.readyTimeoutMs ?? 10_000;
  await new Promise<void>((resolve, reject) => {
    let seen = "";
    const timer = wallClock.after(readyTimeoutMs, () => {
      child.kill("SIGKILL");
      reject(unavailable(`nats-server did not report ready within ${readyTimeoutMs} ms:\n${seen.slice(-2000)}`));
    });
    const onData = (chunk: Buffer): void => {
      seen += chunk.toString();
      if (seen.includes("Server is ready")) {
        timer.cancel();
        resolve();
      }
    };
    child.stderr!.on("data", onData);
    child.once("exit", (code) => {
      timer.cancel();
      reject(unavailable(`nats-server exited with code ${code} before it was ready:\n${seen.slice(-2000)}`));
    });
  });
  // nats-server logs to stderr; keep draining it (to the log fd when given).
  child.stderr!.removeAllListeners("data");
  if (options.logFd !== undefined) {
    const fd = options.logFd;
    const { write } = await import("node:fs");
    child.stderr!.on("data", (chunk: Buffer) => write(fd, chunk, () => undefined));
  } else {
    child.stderr!.resume();
  }
  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    child,
    pid: child.pid ?? -1,
    // nats-server exits 0 on SIGINT but 1 on SIGTERM, for the same clean shutdown.
    stop: () => stopChild(child, 5_000, "SIGINT"),
  };
}

/**
 * Stops a child and resolves once it has exited: SIGCONT (a paused process
 * cannot act on SIGTERM), `signal`, then SIGKILL after graceMs.
 */
export async function stopChild(child: ChildProcess, graceMs = 5_000, signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  await new Promise<void>((resolve) => {
    const timer = wallClock.after(graceMs, () => child.kill("SIGKILL"));
    child.once("exit", () => {
      timer.cancel();
      resolve();
    });
    child.kill("SIGCONT");
    child.kill(signal);
  });
}
