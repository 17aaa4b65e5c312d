// Process lifecycle for every long-running simdc process: stop cleanly once on
// SIGTERM or SIGINT, and log (then exit non-zero) on what would otherwise be a
// silent crash.

import type { Logger } from "pino";
import { wallClock } from "./clock.js";

/** Grace period after a stop signal before the process exits anyway. */
export const shutdownTimeoutMs = 10_000;

/**
 * Calls `stop` on the first SIGTERM/SIGINT and exits 0 when it resolves (1 if
 * it throws or overruns shutdownTimeoutMs). Unhandled rejections and uncaught
 * exceptions are logged and end the process with code 1.
 */
export function handleProcessSignals(logger: Logger, stop: () => Promise<void>): void {
  let stopping = false;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, "stopping");
    wallClock.after(
      shutdownTimeoutMs,
      () => {
        logger.error({ timeoutMs: shutdownTimeoutMs }, "shutdown overran its time; exiting");
        process.exit(1);
      },
      { unref: true },
    );
    stop().then(
      () => {
        logger.info("stopped");
        logger.flush();
        process.exit(0);
      },
      (err: unknown) => {
        logger.error({ err }, "stop failed");
        logger.flush();
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
  process.on("unhandledRejection", (err) => {
    logger.fatal({ err }, "unhandled rejection");
    logger.flush();
    process.exit(1);
  });
  process.on("uncaughtException", (err) => {
    logger.fatal({ err }, "uncaught exception");
    logger.flush();
    process.exit(1);
  });
}
