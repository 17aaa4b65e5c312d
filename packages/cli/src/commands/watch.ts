// simdc events|wait: what happened and what is happening. Events come from
// the datacenter's event history (so nothing published while nobody watched
// is missed), decoded into one shape; wait follows them and asks the API for
// the truth each time its object changes (and every second, as events are
// notifications that a fault may drop).

import { appendFileSync, writeFileSync } from "node:fs";
import { computeService, hostService, storageService, type Bus } from "@simdc/bus";
import { checkName, invalidArgument, SimdcError, wallClock, wallNowMs } from "@simdc/common";
import { eventMatches, knownKinds, readEvents, vmStateName, type DatacenterEvent } from "@simdc/history";
import { simdc } from "@simdc/proto";
import { durationFlag, parse, parseDuration, positionals, stringFlag } from "../args.js";
import { datacenterNowMs } from "../context.js";
import { enumName, out } from "../output.js";
import type { CommandContext } from "./resources.js";

import v1 = simdc.v1;

export const eventsUsage = "usage: simdc events [-w] [--kind K[,K...]] [--id ID[,ID...]] [--since T] [--record FILE] [-o json]";

/** "--since": "all", a duration back from the datacenter's now ("5m"), an ISO time, or Unix ms. */
async function sinceMs(bus: Bus, raw: string): Promise<number> {
  if (raw === "all") return 0;
  if (/^\d+$/.test(raw)) return Number(raw);
  if (/^\d+(\.\d+)?(ms|s|m|h)$/.test(raw)) return (await datacenterNowMs(bus)) - parseDuration("--since", raw);
  const iso = Date.parse(raw);
  if (Number.isNaN(iso)) throw invalidArgument(`--since must be all, a duration (30s, 5m), an ISO time or Unix ms, got ${JSON.stringify(raw)}`);
  return iso;
}

function listFlag(raw: string | undefined): string[] {
  return raw ? raw.split(",").map((s) => s.trim()).filter(Boolean) : [];
}

function eventLine(e: DatacenterEvent): string {
  const time = new Date(e.timeMs).toISOString().slice(11, 23);
  const cause = e.cause ? `  (cause: ${e.cause})` : "";
  return `${time}  ${e.kind.padEnd(22)} ${`${e.objectKind}/${e.objectId}`.padEnd(24)} ${e.message}  [${e.source}]${cause}\n`;
}

/** Ends on Ctrl-C or SIGTERM, as a watch is meant to. */
function untilInterrupted(): AbortController {
  const stop = new AbortController();
  const abort = (): void => stop.abort();
  process.once("SIGINT", abort);
  process.once("SIGTERM", abort);
  return stop;
}

export async function eventsCommand(ctx: CommandContext, argv: string[]): Promise<void> {
  const parsed = parse(argv, {
    watch: { type: "boolean", short: "w" },
    kind: { type: "string" },
    id: { type: "string" },
    since: { type: "string" },
    record: { type: "string" },
  });
  positionals(parsed, []);
  const kinds = listFlag(stringFlag(parsed.flags, "kind"));
  const known = knownKinds();
  for (const k of kinds) if (!known.includes(k)) throw invalidArgument(`--kind ${k} is not a kind of event; there are: ${known.join(", ")}`);
  const ids = listFlag(stringFlag(parsed.flags, "id"));
  for (const id of ids) checkName("--id", id);
  const follow = parsed.flags["watch"] === true;
  const record = stringFlag(parsed.flags, "record");
  if (record) writeFileSync(record, "");
  const bus = await ctx.bus();
  const sinceRaw = stringFlag(parsed.flags, "since");
  // A watch with no --since shows what happens from now on; a listing shows everything kept.
  const from = sinceRaw === undefined && follow ? "new" : "all";
  const since = sinceRaw === undefined ? 0 : await sinceMs(bus, sinceRaw);
  const stop = follow ? untilInterrupted() : undefined;
  const result = await readEvents(bus, { from, follow, ...(stop ? { signal: stop.signal } : {}) }, (e) => {
    if (e.timeMs < since || !eventMatches(e, kinds, ids)) return;
    if (record) appendFileSync(record, `${JSON.stringify(e)}\n`);
    out(ctx.output === "json" ? `${JSON.stringify(e)}\n` : eventLine(e));
  });
  if (result.undecodable > 0) process.stderr.write(`simdc: skipped ${result.undecodable} messages that do not decode as events\n`);
}

export const waitUsage =
  "usage: simdc wait vm <vm> --for running|stopped|failed|unknown|deleted|... | host <host> --for connected|disconnected | " +
  "volume <volume> --for ready|failed|deleted [--timeout 30s]";

interface Target {
  /** Which events concern it (their object id or host). */
  id: string;
  /** Its state as the controller has it now ("deleted" when it does not exist). */
  state: (bus: Bus) => Promise<string>;
  states: string[];
}

async function orDeleted(get: () => Promise<string>): Promise<string> {
  try {
    return await get();
  } catch (err) {
    if (err instanceof SimdcError && err.code === "NOT_FOUND") return "deleted";
    throw err;
  }
}

function targetOf(kind: string | undefined, id: string): Target {
  switch (kind) {
    case "vm":
      return {
        id,
        states: ["defined", "starting", "running", "stopping", "stopped", "failed", "unknown", "deleted"],
        state: (bus) => orDeleted(async () => vmStateName((await bus.call(computeService.GetVm, { vmId: id })).vm?.status?.state ?? 0)),
      };
    case "host":
      return {
        id,
        states: ["connected", "disconnected"],
        state: (bus) => orDeleted(async () => enumName(v1.HostState, (await bus.call(hostService.GetHost, { hostId: id })).host?.state ?? 0, "HOST_STATE_")),
      };
    case "volume":
      return {
        id,
        states: ["creating", "ready", "deleting", "failed", "deleted"],
        state: (bus) => orDeleted(async () => enumName(v1.VolumeState, (await bus.call(storageService.GetVolume, { volumeId: id })).volume?.state ?? 0, "VOLUME_STATE_")),
      };
    default:
      throw invalidArgument(waitUsage);
  }
}

/** How often the state is asked for even without an event (a fault may drop events). */
const waitPollMs = 1_000;

export async function waitCommand(ctx: CommandContext, kind: string | undefined, argv: string[]): Promise<void> {
  const parsed = parse(argv, { for: { type: "string" }, timeout: { type: "string" } });
  const [id] = positionals(parsed, [kind ?? "object"]);
  const target = targetOf(kind, checkName(kind ?? "id", id!));
  const wanted = stringFlag(parsed.flags, "for");
  if (!wanted || !target.states.includes(wanted)) throw invalidArgument(`--for must be one of ${target.states.join(", ")}`);
  const timeoutMs = durationFlag(parsed.flags, "timeout", 30_000);
  const bus = await ctx.bus();
  const started = wallNowMs();
  const stop = new AbortController();
  let wake: () => void = () => undefined;
  // Events wake the check early; the poll catches what a dropped event would have said.
  const following = readEvents(bus, { from: "new", follow: true, signal: stop.signal }, (e) => {
    if (e.objectId === target.id || e.hostId === target.id) wake();
  }).catch(() => undefined);
  let last = "";
  let lastError = "";
  try {
    for (;;) {
      try {
        last = await target.state(bus);
        lastError = "";
      } catch (err) {
        // The controller may be failing over or gone for a while: keep asking until the timeout.
        lastError = err instanceof SimdcError ? err.toString() : String(err);
      }
      if (last === wanted) break;
      const leftMs = timeoutMs - (wallNowMs() - started);
      if (leftMs <= 0) {
        const now = lastError ? `could not ask (${lastError})` : `it is ${last}`;
        throw new SimdcError("DEADLINE_EXCEEDED", `${kind} ${target.id} is not ${wanted} after ${timeoutMs} ms: ${now}`);
      }
      await new Promise<void>((resolve) => {
        const timer = wallClock.after(Math.min(waitPollMs, leftMs), resolve);
        wake = () => {
          timer.cancel();
          resolve();
        };
      });
    }
  } finally {
    stop.abort();
    await following;
  }
  out(ctx.output === "json" ? `${JSON.stringify({ kind, id: target.id, state: wanted, waitedMs: wallNowMs() - started })}\n` : `${kind} ${target.id} is ${wanted} (after ${wallNowMs() - started} ms)\n`);
}
