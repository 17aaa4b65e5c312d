// Buses for tests: a real connection with a silent (or LOG_LEVEL) logger.

import { Bus } from "@simdc/bus";
import { createLogger, wallClock, wallNowMs } from "@simdc/common";

let counter = 0;

export async function connectTestBus(
  url: string,
  options: { prefix?: string; processId?: string; seed?: number; user?: string; password?: string; role?: string } = {},
): Promise<Bus> {
  counter += 1;
  const processId = options.processId ?? `test-${process.pid}-${counter}`;
  const logger = createLogger({ service: "test", id: processId, level: process.env["LOG_LEVEL"] ?? "silent" });
  return Bus.connect({
    servers: url,
    processId,
    logger,
    connectTimeoutMs: 5_000,
    ...(options.prefix ? { prefix: options.prefix } : {}),
    ...(options.seed !== undefined ? { seed: options.seed } : {}),
    ...(options.user ? { user: options.user, password: options.password ?? "" } : {}),
    ...(options.role ? { role: options.role } : {}),
  });
}

/** Polls `check` until it returns a value that is not undefined, or throws after timeoutMs. */
export async function eventually<T>(
  what: string,
  check: () => Promise<T | undefined> | T | undefined,
  timeoutMs = 10_000,
  intervalMs = 50,
): Promise<T> {
  const deadline = wallNowMs() + timeoutMs;
  let lastError: unknown;
  while (wallNowMs() < deadline) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (err) {
      lastError = err;
    }
    await wallClock.sleep(intervalMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError ? `: ${String(lastError)}` : ""}`);
}
