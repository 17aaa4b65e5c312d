// Starts a local datacenter with the real `simdc up` command (the README's
// run command) in a throw-away data directory, and gives tests the CLI, the
// operator's credentials and a way to stop it. It starts nothing itself but
// the command; everything else is what `simdc up` does.

import { spawn, execFile, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { connect, type NatsConnection } from "nats";
import { eventually } from "@simdc/testkit";
import { freePort } from "@simdc/cli";

const run = promisify(execFile);
export const cli = join(dirname(fileURLToPath(import.meta.url)), "..", "packages", "cli", "dist", "main.js");

export interface UpDatacenter {
  dataDir: string;
  process: ChildProcess;
  /** What `simdc up` printed so far. */
  output(): string;
  /** Runs the CLI against this datacenter; rejects with the exec error (code, stderr) on a non-zero exit. */
  simdc(...args: string[]): Promise<string>;
  json<T>(...args: string[]): Promise<T>;
  /** The credentials `up` generated for a user (operator, observer, agent-1, ...). */
  credential(user: string): { user: string; password: string };
  natsUrl(): string;
  /** A raw NATS connection as `user` (operator by default). */
  nats(user?: string): Promise<NatsConnection>;
  /** SIGTERM, wait for the exit, remove the data directory. */
  stop(): Promise<void>;
}

/** Starts `simdc up` with `args` and waits until it printed `readyText`. */
export async function startUp(args: string[], readyText = "ready in", timeoutMs = 90_000): Promise<UpDatacenter> {
  const dataDir = mkdtempSync(join(tmpdir(), "simdc-up-"));
  const port = await freePort();
  const child = spawn(process.execPath, [cli, "up", "--data-dir", dataDir, "--nats-port", String(port), ...args], { stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout!.on("data", (c: Buffer) => (output += c.toString()));
  child.stderr!.on("data", (c: Buffer) => (output += c.toString()));
  const exited = new Promise((r) => child.once("exit", r));
  await eventually(`simdc up to print "${readyText}"`, () => {
    if (child.exitCode !== null) throw new Error(`simdc up exited ${child.exitCode}:\n${output}`);
    return output.includes(readyText) ? true : undefined;
  }, timeoutMs);
  const simdc = async (...cmd: string[]): Promise<string> => (await run(process.execPath, [cli, "--data-dir", dataDir, ...cmd], { timeout: 60_000, maxBuffer: 256 * 1024 * 1024 })).stdout;
  const credential = (user: string) => JSON.parse(readFileSync(join(dataDir, "auth", `${user}.json`), "utf8")) as { user: string; password: string };
  const natsUrl = () => `nats://127.0.0.1:${port}`;
  return {
    dataDir,
    process: child,
    output: () => output,
    simdc,
    json: async <T>(...cmd: string[]) => JSON.parse(await simdc("-o", "json", ...cmd)) as T,
    credential,
    natsUrl,
    nats: (user = "operator") => {
      const c = credential(user);
      // Replies come under the user's own inbox, as NATS permissions require of every role but the operator.
      return connect({ servers: natsUrl(), user: c.user, pass: c.password, inboxPrefix: `_INBOX.${c.user}` });
    },
    stop: async () => {
      if (child.exitCode === null) {
        child.kill("SIGTERM");
        await exited;
      }
      // SIMDC_KEEP_DATA=1 keeps the data directory, so a failed run's process logs can be read.
      if (!process.env["SIMDC_KEEP_DATA"]) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
