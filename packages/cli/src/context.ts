// How a CLI invocation finds the datacenter: --server, else NATS_URL (the NATS
// convention), else what `simdc up` recorded in the data directory; who it
// connects as: --user (the operator by default), with the password from
// SIMDC_NATS_PASSWORD or from what `simdc up` generated into the data
// directory; and the bus connection every command but `up` uses.

import { existsSync, readFileSync } from "node:fs";
import { resolve } from "node:path";
import { Bus, type RpcMethod } from "@simdc/bus";
import { createLogger, failedPrecondition, SimdcError, wallClock, wallNowMs } from "@simdc/common";
import { simdc } from "@simdc/proto";
import { readUpRecord } from "./supervisor/record.js";
import { credentialPath } from "./supervisor/supervisor.js";

export interface GlobalOptions {
  server?: string;
  dataDir: string;
  prefix?: string;
  /** The NATS user to connect as (operator, observer, ...). */
  user?: string;
}

import v1 = simdc.v1;

export const defaultDataDir = (): string => resolve(process.env["SIMDC_DATA_DIR"] ?? ".simdc");

export interface Target {
  natsUrl: string;
  prefix: string;
  user?: string;
  password?: string;
}

/** The credentials to connect with: the environment's, else those `simdc up` wrote for the user, else none. */
function credentialsOf(options: GlobalOptions): { user?: string; password?: string } {
  const user = options.user ?? process.env["SIMDC_NATS_USER"];
  const password = process.env["SIMDC_NATS_PASSWORD"];
  if (user && password) return { user, password };
  const file = credentialPath(options.dataDir, user ?? "operator");
  if (!existsSync(file)) return user ? { user } : {};
  try {
    const stored = JSON.parse(readFileSync(file, "utf8")) as { user: string; password: string };
    return { user: stored.user, password: stored.password };
  } catch {
    // A file we cannot read is no credential; the server says no if it needs one.
    return user ? { user } : {};
  }
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
  return { natsUrl, prefix: options.prefix ?? process.env["SIMDC_PREFIX"] ?? record?.prefix ?? "simdc", ...credentialsOf(options) };
}

/** Attempts at a read (List*, Get*) that finds no controller able to answer, as during a failover. */
export const readAttemptsMax = 4;

/**
 * A read is safe to repeat, so one answered UNAVAILABLE (a controller taking
 * over, or one whose lease may have lapsed) is asked again after a pause;
 * a change is never repeated behind the user's back.
 */
function retryReads(bus: Bus): Bus {
  const call = bus.call.bind(bus);
  bus.call = (async (method: RpcMethod<unknown, unknown>, request: never, options?: object) => {
    const read = /^(List|Get)/.test(method.method);
    for (let attempt = 1; ; attempt++) {
      try {
        return await call(method, request, options);
      } catch (err) {
        if (!read || attempt >= readAttemptsMax || !(err instanceof SimdcError && err.code === "UNAVAILABLE")) throw err;
        await wallClock.sleep(250 * attempt);
      }
    }
  }) as Bus["call"];
  return bus;
}

export async function connectCli(options: GlobalOptions): Promise<Bus> {
  const target = findTarget(options);
  return retryReads(await Bus.connect({
    servers: target.natsUrl,
    prefix: target.prefix,
    processId: `cli-${process.pid}`,
    role: "cli",
    logger: createLogger({ service: "cli", id: `cli-${process.pid}`, level: process.env["LOG_LEVEL"] ?? "silent" }),
    connectTimeoutMs: 3_000,
    ...(target.user ? { user: target.user, password: target.password ?? "" } : {}),
  }));
}

/**
 * The datacenter's simulated time, as its processes report it with their
 * fault rule generation (so it needs no controller), or this machine's wall
 * time when nothing answers (a datacenter at time scale 1 agrees with it).
 */
export async function datacenterNowMs(bus: Bus, known?: v1.FaultReport[]): Promise<number> {
  const asked = wallNowMs();
  const reports = (known ?? (await bus.faultReports())).filter((r) => r.nowMs > 0);
  if (reports.length === 0) return wallNowMs();
  const times = reports.map((r) => r.nowMs).sort((a, b) => a - b);
  // The median process, moved on by the time the answers took to gather.
  return times[Math.floor(times.length / 2)]! + (wallNowMs() - asked) / 2;
}
