// Where an experiment's datacenter runs: local processes under a `simdc up`
// started for it, or containers of a compose project written for its
// topology (`simdc compose`). Either way the runner gets how to reach it,
// its simulated clock, the process faults it supports, and a teardown that
// keeps the logs.

import { execFile, spawn, type ChildProcess } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { supervisorService, type Bus } from "@simdc/bus";
import { SimdcError, WallClock, wallClock, wallNowMs, type Clock } from "@simdc/common";
import type { Scenario } from "@simdc/experiment";
import { simdc } from "@simdc/proto";
import { callSupervisor } from "../commands/ops.js";
import { waitReady } from "../commands/up.js";
import { composePlans, writeComposeDeployment } from "../compose/compose-topology.js";
import { connectCli, type GlobalOptions } from "../context.js";
import { freePort } from "../launch/nats-server.js";
import { readUpRecord } from "../supervisor/record.js";

import v1 = simdc.v1;

const run = promisify(execFile);
const cliMain = join(dirname(fileURLToPath(import.meta.url)), "..", "main.js");

/** What a process fault does; disconnect and connect exist only for containers (their network). */
export type ProcessAction = "kill" | "pause" | "resume" | "restart" | "disconnect" | "connect";

export interface Deployment {
  mode: "local" | "docker";
  /** How CLI calls reach it (server, and where the operator's credentials are). */
  global: GlobalOptions;
  clock: Clock;
  /** Carries a process fault out; `bus` is the runner's connection, for the events Docker does not publish. @returns what was done. */
  signal(name: string, action: ProcessAction, cause: string, bus: Bus): Promise<string>;
  /** Stops everything it started, its logs copied into `logsDir` first. */
  stop(logsDir: string): Promise<void>;
}

/** How long the datacenter may take to be ready. */
export const readyTimeoutMs = 120_000;

const supervisorActions: Partial<Record<ProcessAction, v1.ProcessAction>> = {
  kill: v1.ProcessAction.PROCESS_ACTION_KILL,
  pause: v1.ProcessAction.PROCESS_ACTION_PAUSE,
  resume: v1.ProcessAction.PROCESS_ACTION_RESUME,
  restart: v1.ProcessAction.PROCESS_ACTION_RESTART,
};

/** A fresh `simdc up` of the topology in a throw-away data directory, on a free port. */
export async function startLocal(scenario: Scenario, seed: number, testFaults: boolean, signal: AbortSignal): Promise<Deployment> {
  const t = scenario.topology;
  const dataDir = mkdtempSync(join(tmpdir(), `simdc-experiment-${scenario.name}-`));
  const args = [
    cliMain, "up", "--data-dir", dataDir, "--nats-port", String(await freePort()),
    "--hosts", String(t.hosts), "--hosts-per-agent", String(t.hostsPerAgent), "--san", String(t.san), "--controllers", String(t.controllers),
    "--seed", String(seed), "--time-scale", String(t.timeScale),
    "--heartbeat-interval-ms", String(t.heartbeatIntervalMs), "--heartbeat-misses-max", String(t.heartbeatMissesMax),
    "--pcpus", String(t.pcpus), "--memory-mib", String(t.memoryMib),
    "--fail-mode", t.failMode, "--inactivity-probe-ms", String(t.inactivityProbeMs),
    "--nic-mbps", String(t.nicMbps), "--nic-queue-kib", String(t.nicQueueKib),
    "--coscheduling", t.coscheduling, "--share-salting", t.shareSalting,
    "--threads-per-core", String(t.threadsPerCore), "--core-mhz", String(t.coreMhz),
    ...(testFaults ? ["--test-faults"] : []),
  ];
  // Its own process group: Ctrl-C at the terminal reaches the runner, which stops it in order.
  const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"], detached: true });
  let output = "";
  child.stdout!.on("data", (c: Buffer) => (output += c.toString()));
  child.stderr!.on("data", (c: Buffer) => (output += c.toString()));
  const stopUp = async (): Promise<void> => stopChild(child);
  const started = wallNowMs();
  while (!output.includes("ready in")) {
    if (child.exitCode !== null) throw new SimdcError("UNAVAILABLE", `simdc up exited ${child.exitCode} before it was ready:\n${output.trim()}`);
    if (signal.aborted || wallNowMs() - started > readyTimeoutMs) {
      await stopUp();
      rmSync(dataDir, { recursive: true, force: true });
      throw new SimdcError(signal.aborted ? "UNAVAILABLE" : "DEADLINE_EXCEEDED", `the datacenter was not ready${signal.aborted ? " (interrupted)" : ` after ${readyTimeoutMs} ms`}:\n${output.trim()}`);
    }
    await wallClock.sleep(100);
  }
  const up = readUpRecord(dataDir);
  if (!up) throw new SimdcError("INTERNAL", "simdc up wrote no record");
  const global = { dataDir };
  return {
    mode: "local",
    global,
    clock: new WallClock(up.timeScale ?? t.timeScale, up.startedAtMs),
    async signal(name, action, cause, bus) {
      const supervised = supervisorActions[action];
      if (supervised === undefined) throw new SimdcError("FAILED_PRECONDITION", `${action} is a container fault; run the experiment with --docker`);
      const request = v1.SignalProcessRequest.create({ name, action: supervised, cause });
      const { process: proc } = await callSupervisor(global, { output: "table", bus: async () => bus }, supervisorService.SignalProcess, request, 15_000);
      return `${action} ${name} (pid ${proc?.pid ?? "?"})`;
    },
    async stop(logsDir) {
      await stopUp();
      cpSync(join(dataDir, "logs"), logsDir, { recursive: true });
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill("SIGTERM");
  const timer = wallClock.after(30_000, () => child.kill("SIGKILL"));
  await exited;
  timer.cancel();
}

const dockerCommands: Record<ProcessAction, string[]> = {
  kill: ["kill"],
  pause: ["pause"],
  resume: ["unpause"],
  restart: ["restart"],
  disconnect: [],
  connect: [],
};

/**
 * A compose project of the topology (written with `simdc compose` into
 * `workDir`), with the run's seed, time scale and origin in its environment.
 */
export async function startDocker(scenario: Scenario, seed: number, testFaults: boolean, signal: AbortSignal, workDir: string): Promise<Deployment> {
  const t = scenario.topology;
  const topology = { hosts: t.hosts, hostsPerAgent: t.hostsPerAgent, san: t.san, controllers: t.controllers };
  mkdirSync(workDir, { recursive: true });
  writeComposeDeployment(workDir, topology, "simdc");
  const file = join(workDir, "docker-compose.yml");
  const project = `simdc-exp-${scenario.name}-${seed}-${Math.floor(wallNowMs() % 1e6)}`;
  const originMs = wallNowMs();
  const env = {
    ...process.env,
    SIMDC_NATS_PORT: "0",
    SIMDC_SEED: String(seed),
    SIMDC_TIME_SCALE: String(t.timeScale),
    SIMDC_TIME_ORIGIN_MS: String(originMs),
    SIMDC_HEARTBEAT_INTERVAL_MS: String(t.heartbeatIntervalMs),
    SIMDC_HEARTBEAT_MISSES_MAX: String(t.heartbeatMissesMax),
    SIMDC_PCPUS: String(t.pcpus),
    SIMDC_MEMORY_MIB: String(t.memoryMib),
    SIMDC_TEST_FAULTS: testFaults ? "true" : "false",
    SIMDC_FAIL_MODE: t.failMode,
    SIMDC_INACTIVITY_PROBE_MS: String(t.inactivityProbeMs),
    SIMDC_NIC_MBPS: String(t.nicMbps),
    SIMDC_NIC_QUEUE_KIB: String(t.nicQueueKib),
    SIMDC_COSCHEDULING: t.coscheduling,
    SIMDC_SHARE_SALTING: t.shareSalting,
    SIMDC_THREADS_PER_CORE: String(t.threadsPerCore),
    SIMDC_CORE_MHZ: String(t.coreMhz),
  };
  const compose = async (...args: string[]): Promise<string> => (await run("docker-compose", ["-p", project, "-f", file, ...args], { env, maxBuffer: 256 * 1024 * 1024 })).stdout;
  const down = async (): Promise<void> => void (await compose("down", "-v", "--remove-orphans").catch(() => ""));
  try {
    await compose("up", "-d");
    const [host, port] = (await compose("port", "nats-1", "4222")).trim().split(":");
    const global: GlobalOptions = { server: `nats://${host === "0.0.0.0" ? "127.0.0.1" : host}:${port}`, dataDir: join(workDir, "deploy", ".auth") };
    const bus = await connectCli(global);
    try {
      const ready = !signal.aborted && (await waitReady(bus, composePlans(topology), readyTimeoutMs));
      if (!ready) throw new SimdcError("DEADLINE_EXCEEDED", `the compose datacenter was not ready after ${readyTimeoutMs} ms`);
    } finally {
      await bus.close();
    }
    const network = `${project}_default`;
    return {
      mode: "docker",
      global,
      clock: new WallClock(t.timeScale, originMs),
      async signal(name, action, cause, runnerBus) {
        const container = (await compose("ps", "-q", name)).trim();
        if (!container) throw new SimdcError("NOT_FOUND", `no container for ${name}`);
        if (action === "disconnect") await run("docker", ["network", "disconnect", network, container]);
        else if (action === "connect") await run("docker", ["network", "connect", "--alias", name, network, container]);
        else await compose(...dockerCommands[action], name);
        // Docker publishes no events: the runner says what it did, as simdc up's supervisor would.
        const kind = v1.EventKind.EVENT_KIND_PROCESS_SIGNALED;
        const event = { kind, objectId: name, timeMs: runnerBus.clock.nowMs(), message: `${action} ${name} (docker)`, source: runnerBus.processId, cause };
        runnerBus.publish(runnerBus.subjects.event("process", name, action), v1.Event, event);
        if (action === "kill") {
          runnerBus.publish(runnerBus.subjects.event("process", name, "exited"), v1.Event, { ...event, kind: v1.EventKind.EVENT_KIND_PROCESS_EXITED, message: `${name} exited: SIGKILL (docker kill)` });
        }
        return `${action} ${name} (container ${container.slice(0, 12)})`;
      },
      async stop(logsDir) {
        mkdirSync(logsDir, { recursive: true });
        writeFileSync(join(logsDir, "compose.log"), await compose("logs", "--no-color", "--timestamps").catch((err: unknown) => `no logs: ${String(err)}`));
        await down();
      },
    };
  } catch (err) {
    await down();
    throw err;
  }
}
