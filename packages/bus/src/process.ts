// The common start of every long-running simdc process: read settings (flags,
// then env), log JSON with pino, connect to NATS, run the role, report health,
// and stop cleanly on SIGTERM. A bad flag ends the process with one line and
// exit code 2 before anything starts.

import {
  createLogger,
  describeSettings,
  handleProcessSignals,
  readSettings,
  serveHealth,
  SimdcError,
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
    help: "serve GET /healthz on this port (0: off)",
  },
  "log-level": { kind: "string", env: "LOG_LEVEL", default: "info", help: "pino log level" },
} as const satisfies SettingsSpec;

export interface RunningRole {
  stop(): Promise<void>;
  health(): HealthReport;
}

export interface ProcessSpec<T extends SettingsSpec> {
  /** controller, host-agent, san-storage. */
  service: string;
  settings: T;
  /** The process identity, from its settings. */
  idOf(settings: Settings<T & typeof busSettings>): string;
  run(context: { bus: Bus; settings: Settings<T & typeof busSettings>; logger: Logger }): Promise<RunningRole>;
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
  try {
    const bus = await Bus.connect({
      servers: settings["nats-url"] as string,
      prefix: settings.prefix as string,
      dc: settings.dc as string,
      processId: id,
      role: spec.service,
      logger,
    });
    // Before the role starts, so its first message already obeys the rules.
    await bus.followFaultRules();
    const role = await spec.run({ bus, settings, logger });
    const healthPort = settings["health-port"] as number;
    const health = healthPort > 0 ? await serveHealth(healthPort, () => withBus(bus, role.health())) : null;
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
