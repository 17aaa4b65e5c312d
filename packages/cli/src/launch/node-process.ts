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
  /** The whole environment of the child; this process's when absent. */
  env?: NodeJS.ProcessEnv;
  /** Appends stdout and stderr here; piped to the parent when absent. */
  logFile?: string;
  detached?: boolean;
}

export interface NodeProcess {
  child: ChildProcess;
  pid: number;
  /** Resolves with the exit code (or signal name) once the process has exited. */
  exited: Promise<number | NodeJS.Signals>;
  signal(signal: NodeJS.Signals): void;
  /** Stops it as stopChild does: SIGCONT, SIGTERM, SIGKILL after graceMs. */
  stop(graceMs?: number): Promise<void>;
}

/**
 * With SIMDC_CPU_PROFILE_DIR set, every service writes a V8 CPU profile
 * there when it exits (node refuses --cpu-prof in NODE_OPTIONS, so it is
 * passed here): how to find where a benchmark's time goes.
 */
function profileFlags(env: NodeJS.ProcessEnv): string[] {
  const dir = env["SIMDC_CPU_PROFILE_DIR"];
  return dir ? ["--cpu-prof", `--cpu-prof-dir=${dir}`] : [];
}

export function launchNodeProcess(options: NodeProcessOptions): NodeProcess {
  const fd = options.logFile ? openSync(options.logFile, "a") : undefined;
  const env = options.env ?? process.env;
  const child = spawn(process.execPath, [...profileFlags(env), options.script, ...options.args], {
    env,
    stdio: ["ignore", fd ?? "pipe", fd ?? "pipe"],
    // Its own process group, so a Ctrl-C meant for a supervisor reaches only the
    // supervisor, which then stops its children in order.
    detached: options.detached ?? false,
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
      await stopChild(child, graceMs);
    },
  };
}
