// Starts a simdc service as a child process: node spawned directly (never
// through npm or a shell, so signals reach the service itself), its output
// appended to a log file or piped to the caller.

import { spawn, type ChildProcess } from "node:child_process";
import { openSync, closeSync } from "node:fs";
import { stopChild } from "./nats-server.js";

export interface NodeProcessOptions {
  /** Absolute path of the service's main.js. */
  script: string;
  args: string[];
  env?: NodeJS.ProcessEnv;
  /** Appends stdout and stderr here; piped to the parent when absent. */
  logFile?: string;
}

export interface NodeProcess {
  child: ChildProcess;
  pid: number;
  /** Resolves with the exit code (or signal name) once the process has exited. */
  exited: Promise<number | NodeJS.Signals>;
  signal(signal: NodeJS.Signals): void;
  /** SIGCONT (in case it is paused), SIGTERM, then SIGKILL after graceMs. */
  stop(graceMs?: number): Promise<void>;
}

export function launchNodeProcess(options: NodeProcessOptions): NodeProcess {
  const fd = options.logFile ? openSync(options.logFile, "a") : undefined;
  const child = spawn(process.execPath, [options.script, ...options.args], {
    env: { ...process.env, ...options.env },
    stdio: ["ignore", fd ?? "pipe", fd ?? "pipe"],
  });
  if (fd !== undefined) closeSync(fd);
  const exited = new Promise<number | NodeJS.Signals>((resolve) => {
    child.once("exit", (code, signal) => resolve(signal ?? code ?? 0));
  });
  return {
    child,
    pid: child.pid ?? -1,
    exited,
    signal: (signal) => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    },
    stop: async (graceMs = 5_000) => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGCONT");
      await stopChild(child, graceMs);
    },
  };
}
