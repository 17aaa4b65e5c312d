// The one way simdc processes log: JSON lines from pino, each carrying the
// service and the id of the process (or simulated host) that wrote it.

import { destination, pino, type Logger } from "pino";

export type { Logger };

export interface LoggerOptions {
  /** controller, host-agent, san-storage, cli, ... */
  service: string;
  /** The process identity: agent id, node id, controller id. */
  id: string;
  /** pino level; defaults to LOG_LEVEL or "info". */
  level?: string;
}

/**
 * A pino logger writing JSON to stdout with `service` and `id` on every line.
 * Writes are synchronous: a process killed by a fault (SIGKILL, a crash
 * point) keeps every line it logged before, which is what an experiment
 * looks at afterwards; nothing hot logs, so the cost is a syscall per line.
 */
export function createLogger(options: LoggerOptions): Logger {
  return pino(
    {
      level: options.level ?? process.env["LOG_LEVEL"] ?? "info",
      base: { service: options.service, id: options.id, pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    destination({ dest: 1, sync: true }),
  );
}
