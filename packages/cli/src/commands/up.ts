// simdc up: a whole datacenter on this machine as separate processes, in the
// foreground, supervised until Ctrl-C. Ready means the controller sees every
// host connected and every SAN node registered, observed over the bus, not
// assumed after a sleep.

import { existsSync, mkdirSync } from "node:fs";
import { createConnection } from "node:net";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { storageService, type Bus } from "@simdc/bus";
import { failedPrecondition, freshSeed, seedMax, timeScaleMax, timeScaleMin, wallClock, wallNowMs } from "@simdc/common";
import { destination, pino } from "pino";
import { simdc } from "@simdc/proto";
import { choiceFlag, intFlag, numberFlag, parse, positionals, type FlagSpec } from "../args.js";
import { connectCli, type GlobalOptions } from "../context.js";
import { ensureNatsServer } from "../launch/nats-server.js";
import { isRecordedProcess, readAnyUpRecord, readUpRecord, removeUpRecord, writeUpRecord } from "../supervisor/record.js";
import { Supervisor } from "../supervisor/supervisor.js";
import { hostsMax, hostsPerAgentMax, planTopology, type ProcessPlan } from "../supervisor/topology.js";
import { listAllHosts } from "../paging.js";
import { runDemo } from "./demo.js";

import v1 = simdc.v1;

export const upFlags: FlagSpec = {
  hosts: { type: "string" },
  san: { type: "string" },
  "hosts-per-agent": { type: "string" },
  controllers: { type: "string" },
  seed: { type: "string" },
  "time-scale": { type: "string" },
  "nats-port": { type: "string" },
  demo: { type: "boolean" },
  pcpus: { type: "string" },
  "memory-mib": { type: "string" },
  "san-capacity-mib": { type: "string" },
  "heartbeat-interval-ms": { type: "string" },
  "heartbeat-misses-max": { type: "string" },
  "cpu-overcommit": { type: "string" },
  "memory-overcommit": { type: "string" },
  "ready-timeout-ms": { type: "string" },
  "test-faults": { type: "boolean" },
  "fail-mode": { type: "string" },
  "inactivity-probe-ms": { type: "string" },
  "threads-per-core": { type: "string" },
  "core-mhz": { type: "string" },
  coscheduling: { type: "string" },
  "share-salting": { type: "string" },
  "hosted-overhead-pct": { type: "string" },
  "nic-mbps": { type: "string" },
  "nic-queue-kib": { type: "string" },
};

const packagesDir = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const say = (line: string): void => void process.stdout.write(`simdc: ${line}\n`);

export async function upCommand(global: GlobalOptions, argv: string[]): Promise<void> {
  const parsed = parse(argv, upFlags);
  positionals(parsed, []);
  const f = parsed.flags;
  const dataDir = resolve(global.dataDir);
  const prefix = global.prefix ?? "simdc";
  const natsPort = intFlag(f, "nats-port", 4222, 1, 65535);
  const heartbeatIntervalMs = intFlag(f, "heartbeat-interval-ms", 1000, 50, 60_000);
  const heartbeatMissesMax = intFlag(f, "heartbeat-misses-max", 3, 1, 100);
  const readyTimeoutMs = intFlag(f, "ready-timeout-ms", 120_000, 1_000, 3_600_000);
  const seed = intFlag(f, "seed", freshSeed(), 0, seedMax);
  const timeScale = numberFlag(f, "time-scale", 1, timeScaleMin, timeScaleMax);
  const plans = planTopology({
    hosts: intFlag(f, "hosts", 3, 1, hostsMax),
    sanNodes: intFlag(f, "san", 2, 0, 1000),
    hostsPerAgent: intFlag(f, "hosts-per-agent", 1, 1, hostsPerAgentMax),
    controllers: intFlag(f, "controllers", 1, 1, 3),
    dataDir,
    pcpus: intFlag(f, "pcpus", 16, 1, 4096),
    memoryMib: intFlag(f, "memory-mib", 65536, 1, 64 * 1024 * 1024),
    sanCapacityMib: intFlag(f, "san-capacity-mib", 102_400, 1, 1024 * 1024 * 1024),
  });
  const controllerArgs = [
    "--heartbeat-interval-ms", String(heartbeatIntervalMs),
    "--heartbeat-misses-max", String(heartbeatMissesMax),
    "--cpu-overcommit", String(numberFlag(f, "cpu-overcommit", 4, 1, 32)),
    "--memory-overcommit", String(numberFlag(f, "memory-overcommit", 1.5, 1, 20)),
  ];

  const running = readUpRecord(dataDir);
  if (running) throw failedPrecondition(`a datacenter already runs from ${dataDir} (supervisor pid ${running.supervisorPid}); 'simdc down' stops it`);
  const earlier = readAnyUpRecord(dataDir);
  const orphans = earlier ? Object.entries(earlier.pids ?? {}).filter(([, pid]) => isRecordedProcess(pid, earlier)) : [];
  if (orphans.length > 0) {
    throw failedPrecondition(`processes of an earlier 'simdc up' still run (${orphans.map(([n]) => n).join(", ")}); 'simdc down' stops them`);
  }
  for (const role of ["controller", "san-storage", "host-agent"]) {
    if (!existsSync(join(packagesDir, role, "dist", "main.js"))) {
      throw failedPrecondition(`${role} is not built: run 'bash scripts/setup.sh' (or 'npm run build') first`);
    }
  }
  if (await portInUse(natsPort)) {
    throw failedPrecondition(`port ${natsPort} is in use (another NATS or simdc up?); choose another with --nats-port`);
  }
  const natsBinary = ensureNatsServer(say);
  mkdirSync(join(dataDir, "logs"), { recursive: true });
  const logger = pino(
    { base: { service: "supervisor", id: "supervisor" }, timestamp: pino.stdTimeFunctions.isoTime },
    destination({ dest: join(dataDir, "logs", "supervisor.log"), append: true, sync: false }),
  );

  const startedAt = wallNowMs();
  const run = { seed, timeScale, timeOriginMs: startedAt };
  const agentArgs = [
    ...(f["test-faults"] ? ["--test-faults"] : []),
    "--fail-mode",
    choiceFlag(f, "fail-mode", ["secure", "standalone"]),
    "--inactivity-probe-ms",
    String(intFlag(f, "inactivity-probe-ms", 5_000, 100, 600_000)),
    "--nic-mbps",
    String(intFlag(f, "nic-mbps", 10_000, 1, 400_000)),
    "--nic-queue-kib",
    String(intFlag(f, "nic-queue-kib", 1_024, 1, 1_048_576)),
    "--threads-per-core",
    String(intFlag(f, "threads-per-core", 1, 1, 2)),
    "--core-mhz",
    String(intFlag(f, "core-mhz", 2_000, 1, 10_000)),
    "--coscheduling",
    choiceFlag(f, "coscheduling", ["relaxed", "strict"]),
    "--share-salting",
    choiceFlag(f, "share-salting", ["per-vm", "off"]),
    "--hosted-overhead-pct",
    String(intFlag(f, "hosted-overhead-pct", 0, 0, 90)),
  ];
  const supervisor = new Supervisor({ dataDir, natsBinary, natsPort, prefix, run, extraArgs: { controller: controllerArgs, "host-agent": agentArgs }, logger, say });
  let stopping = false;
  const stop = async (signal: string): Promise<void> => {
    if (stopping) return;
    stopping = true;
    say(`${signal}: stopping every process`);
    await supervisor.stop();
    removeUpRecord(dataDir);
    say("stopped");
    logger.flush();
    process.exit(0);
  };
  process.on("SIGINT", () => void stop("SIGINT"));
  process.on("SIGTERM", () => void stop("SIGTERM"));

  say(`starting nats-server on port ${natsPort} and ${plans.length} processes (data in ${dataDir})`);
  say(`seed ${seed}, time scale ${timeScale}x; the same run again: simdc up --seed ${seed} --time-scale ${timeScale} ...`);
  await supervisor.start(plans);
  // Waiting and the demo act as the operator, as a user at the terminal would.
  const operator = supervisor.credentialOf("operator");
  const bus = await connectCli({ server: supervisor.natsUrl, dataDir, prefix, user: operator.user });
  const record = { natsUrl: supervisor.natsUrl, prefix, supervisorPid: process.pid, dataDir, startedAtMs: startedAt, timeScale };
  writeUpRecord({ ...record, pids: supervisor.pids() });
  supervisor.onStarted = () => writeUpRecord({ ...record, pids: supervisor.pids() });
  const ready = await waitReady(bus, plans, readyTimeoutMs);
  const seconds = ((wallNowMs() - startedAt) / 1000).toFixed(2);
  if (ready) {
    const hosts = plans.flatMap((p) => p.hostIds).length;
    const sanNodes = plans.filter((p) => p.role === "san-storage").length;
    const controllers = plans.filter((p) => p.role === "controller").length;
    const agents = plans.filter((p) => p.role === "host-agent").length;
    say(`ready in ${seconds} s: ${hosts} hosts in ${agents} agent processes, ${sanNodes} SAN nodes, ${controllers} controller(s), NATS at ${supervisor.natsUrl}`);
  } else {
    say(`not every host and SAN node registered within ${readyTimeoutMs} ms; see the logs`);
  }
  say(`logs: ${join(dataDir, "logs")} (simdc logs [process]); stop with Ctrl-C or 'simdc down'`);
  if (f["demo"]) await runDemo(bus, say);
}

async function portInUse(port: number): Promise<boolean> {
  return new Promise((resolvePort) => {
    const socket = createConnection({ port, host: "127.0.0.1" });
    socket.once("connect", () => {
      socket.destroy();
      resolvePort(true);
    });
    socket.once("error", () => resolvePort(false));
  });
}

/** Polls the controller until every planned host is connected and every SAN node registered. */
export async function waitReady(bus: Bus, plans: ProcessPlan[], timeoutMs: number): Promise<boolean> {
  const hostIds = new Set(plans.flatMap((p) => p.hostIds));
  const sanIds = new Set(plans.filter((p) => p.role === "san-storage").map((p) => p.name));
  const deadline = wallNowMs() + timeoutMs;
  while (wallNowMs() < deadline) {
    try {
      const [hosts, { nodes }] = await Promise.all([listAllHosts(bus), bus.call(storageService.ListSanNodes, {}, { timeoutMs: 1_000 })]);
      const connected = hosts.filter((h) => h.state === v1.HostState.HOST_STATE_CONNECTED && hostIds.has(h.id ?? ""));
      const sanReady = nodes.filter((n) => n.connected && sanIds.has(n.id ?? ""));
      if (connected.length === hostIds.size && sanReady.length === sanIds.size) return true;
    } catch {
      // The controller is still starting; ask again.
    }
    await wallClock.sleep(hostIds.size > 1000 ? 500 : 50);
  }
  return false;
}
