// How a CLI invocation finds the datacenter: --server, else NATS_URL (the NATS
// convention), else what `simdc up` recorded in the data directory; and the
// bus connection every command but `up` uses.

import { resolve } from "node:path";
import { Bus } from "@simdc/bus";
import { createLogger, failedPrecondition } from "@simdc/common";
import { readUpRecord } from "./supervisor/record.js";

export interface GlobalOptions {
  server?: string;
  dataDir: string;
  prefix?: string;
}

export const defaultDataDir = (): string => resolve(process.env["SIMDC_DATA_DIR"] ?? ".simdc");

export interface Target {
  natsUrl: string;
  prefix: string;
}

/** @throws SimdcError FAILED_PRECONDITION when no datacenter can be found. */
export function findTarget(options: GlobalOptions): Target {
  const record = readUpRecord(options.dataDir);
  const natsUrl = options.server ?? process.env["NATS_URL"] ?? record?.natsUrl;
  if (!natsUrl) {
    throw failedPrecondition(
      `no datacenter found: start one with 'simdc up', or point at NATS with --server or NATS_URL (looked in ${options.dataDir})`,
    );
  }
  return { natsUrl, prefix: options.prefix ?? process.env["SIMDC_PREFIX"] ?? record?.prefix ?? "simdc" };
}

export async function connectCli(options: GlobalOptions): Promise<Bus> {
  const target = findTarget(options);
  return Bus.connect({
    servers: target.natsUrl,
    prefix: target.prefix,
    processId: `cli-${process.pid}`,
    role: "cli",
    logger: createLogger({ service: "cli", id: `cli-${process.pid}`, level: process.env["LOG_LEVEL"] ?? "silent" }),
    connectTimeoutMs: 3_000,
  });
}
