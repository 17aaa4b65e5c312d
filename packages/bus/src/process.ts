// The common start of every long-running simdc process: read settings (flags,
// then env), log JSON with pino, connect to NATS, run the role, report health,
// and stop cleanly on SIGTERM. A bad flag ends the process with one line and
// exit code 2 before anything starts.

import {
  createLogger,
  describeSettings,
  freshSeed,
  handleProcessSignals,
  readSettings,
  Rng,
  seedMax,
  serveHealth,
  SimdcError,
  timeScaleMax,
  timeScaleMin,
  WallClock,
  type Clock,
  type HealthReport,
  type Logger,
  type Settings,
  type SettingsSpec,
} from "@simdc/common";
import { Bus } from "./bus.js";

/** Settings every process shares; a role's own spec is merged with these. */
export const busSettings = {
  "nats-url": {
    kind: "string",
    env: "NATS_URL",
    default: "nats://127.0.0.1:4222",
    help: "NATS server URL(s), comma-separated",
  },
  prefix: { kind: "string", env: "SIMDC_PREFIX", default: "simdc", help: "subject prefix of this datacenter" },
  dc: { kind: "string", env: "SIMDC_DC", default: "dc1", help: "datacenter name, in service names and metadata" },
  "health-port": {
    kind: "int",
    env: "SIMDC_HEALTH_PORT",
    default: 0,
    min: 0,
    max: 65535,
    help: "serve GET /healthz and GET /metrics (Prometheus) on this port (0: off)",
  },
  "log-level": { kind: "string", env: "LOG_LEVEL", default: "info", help: "pino log level" },
  seed: {
    kind: "int",
    env: "SIMDC_SEED",
    default: -1,
    min: -1,
    max: seedMax,
    help: `the run's seed, 0-${seedMax}; every random choice and fault decision derives from it (-1: a fresh one, logged)`,
  },
  "time-scale": {
    kind: "number",
    env: "SIMDC_TIME_SCALE",
    default: 1,
    min: timeScaleMin,
    max: timeScaleMax,
    help: "simulated ms per real ms: heartbeats, timeouts and models run this much faster",
  },
  "time-origin-ms": {
    kind: "number",
    env: "SIMDC_TIME_ORIGIN_MS",
    default: 0,
    min: 0,
    max: 8_640_000_000_000,
    help: "Unix ms where simulated and wall time agree; every process of a datacenter needs the same one",
  },
  "nats-user": { kind: "string", env: "SIMDC_NATS_USER", default: "", help: "NATS user of this process's role" },
  "nats-password": {
    kind: "string",
    env: "SIMDC_NATS_PASSWORD",
    default: "",
    help: "its password (prefer the environment variable: flags show in ps)",
  },
} as const satisfies SettingsSpec;

export interface RunningRole {
  stop(): Promise<void>;
  health(): HealthReport;
}

/** What a role is started with. */
export interface RoleContext<S> {
  bus: Bus;
  settings: S;
  logger: Logger;
  /** Simulated time at the process's time scale. */
  clock: Clock;
  /** The process's random stream, derived from the run's seed and its id; derive per host or node. */
  rng: Rng;
}

export interface ProcessSpec<T extends SettingsSpec> {
  /** controller, host-agent, san-storage. */
  service: string;
  settings: T;
  /** The process identity, from its settings. */
  idOf(settings: Settings<T & typeof busSettings>): string;
  run(context: RoleContext<Settings<T & typeof busSettings>>): Promise<RunningRole>;
}

/** Runs a role as this process's main; resolves once it is up. */
export async function runProcess<T extends SettingsSpec>(spec: ProcessSpec<T>, argv = process.argv.slice(2)): Promise<void> {
  const allSettings = { ...busSettings, ...spec.settings } as T & typeof busSettings;
  if (argv.includes("--help")) {
    process.stdout.write(`usage: ${spec.service} [flags]\n${describeSettings(allSettings)}\n`);
    process.exit(0);
  }
  let settings: Settings<T & typeof busSettings>;
  let id: string;
  try {
    settings = readSettings(allSettings, argv);
    // idOf may check the identity (a valid name) too; a bad one is a bad flag.
    id = spec.idOf(settings);
  } catch (err) {
    process.stderr.write(`${spec.service}: ${err instanceof SimdcError ? err.message : String(err)}\n`);
    process.exit(2);
  }
  const logger = createLogger({ service: spec.service, id, level: settings["log-level"] as string });
  const givenSeed = settings.seed as number;
  const seed = givenSeed >= 0 ? givenSeed : freshSeed();
  const timeScale = settings["time-scale"] as number;
  const clock = new WallClock(timeScale, settings["time-origin-ms"] as number);
  // The first line says how to run this process again the same way.
  logger.info({ seed, seedGiven: givenSeed >= 0, timeScale, timeOriginMs: settings["time-origin-ms"] }, "starting");
  try {
    const user = settings["nats-user"] as string;
    const bus = await Bus.connect({
      servers: settings["nats-url"] as string,
      prefix: settings.prefix as string,
      dc: settings.dc as string,
      processId: id,
      role: spec.service,
      logger,
      clock,
      seed,
      ...(user ? { user, password: settings["nats-password"] as string } : {}),
    });
    // Before the role starts, so its first message already obeys the rules.
    await bus.followFaultRules();
    const role = await spec.run({ bus, settings, logger, clock, rng: new Rng(seed, id) });
    const healthPort = settings["health-port"] as number;
    const health = healthPort > 0 ? await serveHealth(healthPort, () => withBus(bus, role.health()), bus.metrics) : null;
    handleProcessSignals(logger, async () => {
      health?.close();
      await role.stop();
      await bus.close();
    });
  } catch (err) {
    // A process that cannot start says why in one line and in its log, and exits 1.
    logger.fatal({ err }, "failed to start");
    logger.flush();
    process.stderr.write(`${spec.service}: failed to start: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  }
  logger.info({ natsUrl: settings["nats-url"], prefix: settings.prefix, dc: settings.dc }, "started");
}

function withBus(bus: Bus, report: HealthReport): HealthReport {
  const connected = !bus.isClosed();
  return { healthy: connected && report.healthy, details: { nats: connected ? "connected" : "closed", ...report.details } };
}
