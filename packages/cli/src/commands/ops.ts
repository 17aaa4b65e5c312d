// simdc down|status|logs|fault: operating a running datacenter. Process
// faults go to the supervisor of `simdc up` over its control endpoint; a
// fault hits a whole process, so one host among many in an agent process is
// cut off with a bus rule instead.

import { memoryFault } from "./hypervisor.js";
import { closeSync, existsSync, openSync, readdirSync, readFileSync, readSync, statSync } from "node:fs";
import { join } from "node:path";
import {
  addFaultRule,
  checkFaultRule,
  clearFaultRules,
  faultRulePhase,
  type Bus,
  controllerService,
  hostService,
  readFaultRules,
  storageService,
  supervisorService,
  type RpcMethod,
} from "@simdc/bus";
import { checkName, failedPrecondition, invalidArgument, SimdcError, wallClock, wallNowMs } from "@simdc/common";
import { simdc } from "@simdc/proto";
import { prettyFactory } from "pino-pretty";
import { durationFlag, intFlag, parse, parseDuration, positionals, stringFlag } from "../args.js";
import { listAllHosts, listAllVms } from "../paging.js";
import { datacenterNowMs, type GlobalOptions } from "../context.js";
import { enumName, out, plain, printJson, printTable, processState, vmState } from "../output.js";
import { callControlSocket, controlSocketPath } from "../supervisor/control-socket.js";
import { operatorTokenHeader } from "../supervisor/credentials.js";
import { credentialPath } from "../supervisor/supervisor.js";
import { isAlive, isRecordedProcess, readAnyUpRecord, removeUpRecord } from "../supervisor/record.js";
import type { CommandContext } from "./resources.js";
import { nicFault } from "./vswitch.js";

import v1 = simdc.v1;

/** Stops what `up` runs from the data dir: through its supervisor, or, when that was killed, each process it left. */
export async function downCommand(global: GlobalOptions, argv: string[]): Promise<void> {
  positionals(parse(argv, {}), []);
  const record = readAnyUpRecord(global.dataDir);
  const supervisorAlive = record !== null && isAlive(record.supervisorPid);
  const orphans = supervisorAlive || !record ? [] : Object.values(record.pids ?? {}).filter((pid) => isRecordedProcess(pid, record));
  if (!supervisorAlive && orphans.length === 0) throw failedPrecondition(`no datacenter runs from ${global.dataDir}`);
  const pids = supervisorAlive ? [record!.supervisorPid] : orphans;
  for (const pid of pids) {
    // A paused process cannot act on SIGTERM until it is resumed.
    process.kill(pid, "SIGCONT");
    process.kill(pid, "SIGTERM");
  }
  const deadline = wallNowMs() + 30_000;
  while (pids.some(isAlive) && wallNowMs() < deadline) await wallClock.sleep(100);
  const left = pids.filter(isAlive);
  if (left.length > 0) throw failedPrecondition(`pids ${left.join(", ")} did not stop within 30 s`);
  if (!supervisorAlive) removeUpRecord(global.dataDir);
  out(supervisorAlive ? "simdc: datacenter stopped\n" : `simdc: stopped ${pids.length} processes left by a killed supervisor\n`);
}

/**
 * Calls the supervisor of `simdc up`: over its unix socket when this machine
 * has it (it answers while NATS is down), else over NATS.
 */
export async function callSupervisor<Req, Res>(global: GlobalOptions, ctx: CommandContext, method: RpcMethod<Req, Res>, request: Req, timeoutMs: number): Promise<Res> {
  const socket = controlSocketPath(global.dataDir);
  if (existsSync(socket)) return callControlSocket(socket, method, request, timeoutMs);
  const token = operatorToken(global.dataDir);
  try {
    return await (await ctx.bus()).call(method, request as never, { scopeId: "supervisor", timeoutMs, headers: token ? { [operatorTokenHeader]: token } : {} });
  } catch (err) {
    // No supervisor is not a fault of the datacenter: the compose deployment has Docker instead.
    if (err instanceof SimdcError && err.code === "UNAVAILABLE" && /nobody serves/.test(err.message)) {
      throw new SimdcError(
        "FAILED_PRECONDITION",
        "no 'simdc up' supervisor runs this datacenter; on the compose deployment use docker-compose kill|pause|unpause|restart|ps <service> (and bus faults: simdc fault add)",
        { cause: err },
      );
    }
    throw err;
  }
}

/** The token `simdc up` gave the operator for its supervisor, when this machine has it. */
function operatorToken(dataDir: string): string | undefined {
  try {
    return (JSON.parse(readFileSync(credentialPath(dataDir, "operator"), "utf8")) as { supervisorToken?: string }).supervisorToken;
  } catch {
    // No file: the supervisor will say who may drive it.
    return undefined;
  }
}

export async function statusCommand(global: GlobalOptions, ctx: CommandContext, argv: string[]): Promise<void> {
  positionals(parse(argv, {}), []);
  // The process table comes from the supervisor's socket, which needs neither NATS nor the controller.
  const supervised = await callSupervisor(global, ctx, supervisorService.ListProcesses, v1.ListProcessesRequest.create(), 2_000).catch(() => null);
  const processes = supervised?.processes ?? null;
  const view = await datacenterView(ctx).catch((err: unknown) => (err instanceof SimdcError ? err : new SimdcError("UNAVAILABLE", String(err))));
  // A datacenter that is down is shown as such; credentials NATS refuses are the caller's error, said as one.
  if (view instanceof SimdcError && (view.code !== "UNAVAILABLE" || /refused the credentials/.test(view.message))) throw view;
  if (ctx.output === "json") {
    return printJson({
      processes: processes?.map((p) => plain(v1.ManagedProcess, p)) ?? null,
      ...(view instanceof SimdcError
        ? { error: view.toString() }
        : {
            controller: plain(v1.GetControllerStatusResponse, view.controller),
            sync: plain(v1.GetSyncStatusResponse, view.sync),
            hosts: view.hosts.map((h) => plain(v1.Host, h)),
            sanNodes: view.nodes.map((n) => plain(v1.SanNode, n)),
            vms: view.vms.map((vm) => plain(v1.Vm, vm)),
          }),
    });
  }
  if (view instanceof SimdcError) {
    const seed = supervised ? `seed ${supervised.seed}, time scale ${supervised.timeScale}x; ` : "";
    out(`datacenter: ${seed}no answer from the controller (${view.toString()})\n\n`);
  } else {
    const { controller } = view;
    out(
      `datacenter: seed ${controller.seed}, time scale ${controller.timeScale}x; active controller ${controller.controllerId} ` +
        `(epoch ${controller.lease?.epoch ?? 0}); state ${controller.stateId.slice(0, 8) || "-"}\n` +
        `reproduce: simdc up --seed ${controller.seed} --time-scale ${controller.timeScale}\n\n`,
    );
  }
  if (!processes) out("processes: no 'simdc up' supervisor here (on the compose deployment: docker-compose ps)\n\n");
  if (processes) {
    printTable(
      ["PROCESS", "ROLE", "PID", "STATE", "HOSTS", "RESTARTS", "EXIT"],
      processes.map((p) => [
        p.name ?? "",
        p.role ?? "",
        String(p.pid ?? 0),
        processState(p.state ?? 0),
        summarize(p.hostIds ?? []),
        String(p.restarts ?? 0),
        p.exitReason ?? "",
      ]),
    );
    out("\n");
  }
  if (view instanceof SimdcError) {
    if (!processes) throw view;
    return;
  }
  const { hosts, nodes, vms, sync } = view;
  const connected = hosts.filter((h) => h.state === v1.HostState.HOST_STATE_CONNECTED).length;
  const sanUp = nodes.filter((n) => n.connected).length;
  const byState = new Map<string, number>();
  for (const vm of vms) {
    const state = vmState(vm.status?.state ?? 0);
    byState.set(state, (byState.get(state) ?? 0) + 1);
  }
  const vmSummary = [...byState].map(([s, n]) => `${n} ${s}`).join(", ") || "none";
  out(`hosts: ${connected}/${hosts.length} connected; SAN nodes: ${sanUp}/${nodes.length} connected; VMs: ${vmSummary}\n`);
  out(`documents: generation ${sync.desiredGeneration} written up to ${sync.writtenGeneration}, realized by every live host up to ${sync.realizedGeneration} (${sync.laggingCount} hosts behind)\n`);
}

/** What the controller says of the datacenter. @throws SimdcError when NATS or the controller does not answer. */
async function datacenterView(ctx: CommandContext) {
  const bus = await ctx.bus();
  const [controller, hosts, vms, nodes, sync] = await Promise.all([
    bus.call(controllerService.GetControllerStatus, {}, { timeoutMs: 2_000 }),
    listAllHosts(bus),
    listAllVms(bus),
    bus.call(storageService.ListSanNodes, {}).then((r) => r.nodes),
    bus.call(hostService.GetSyncStatus, {}),
  ]);
  return { controller, hosts, vms, nodes, sync };
}

function summarize(ids: string[]): string {
  if (ids.length <= 3) return ids.join(",");
  return `${ids[0]}..${ids[ids.length - 1]} (${ids.length})`;
}

const actions: Record<string, v1.ProcessAction> = {
  kill: v1.ProcessAction.PROCESS_ACTION_KILL,
  pause: v1.ProcessAction.PROCESS_ACTION_PAUSE,
  resume: v1.ProcessAction.PROCESS_ACTION_RESUME,
  restart: v1.ProcessAction.PROCESS_ACTION_RESTART,
};

export const ruleActions: Record<string, v1.FaultAction> = {
  drop: v1.FaultAction.FAULT_ACTION_DROP,
  delay: v1.FaultAction.FAULT_ACTION_DELAY,
  duplicate: v1.FaultAction.FAULT_ACTION_DUPLICATE,
  partition: v1.FaultAction.FAULT_ACTION_PARTITION,
};

const faultUsage =
  "usage: simdc fault add <id> --action drop|delay|duplicate|partition [--subject S] [--from ID] [--to ID] " +
  "[--percent P] [--delay-ms D] [--jitter-ms J] [--copies N] [--after D] [--duration D] [--wait] | list | clear [id] [--wait] | " +
  "kill|pause|resume|restart <process> | nic <host> [--nic nic0|nic1] [--mbps M] [--queue-kib Q] [--for D] | memory <host> --pressure-mib N";

export async function faultCommand(global: GlobalOptions, ctx: CommandContext, verb: string | undefined, argv: string[]): Promise<void> {
  if (verb === "add" || verb === "list" || verb === "clear") return faultRuleCommand(ctx, verb, argv);
  if (verb === "nic") return nicFault(ctx, argv);
  if (verb === "memory") return memoryFault(ctx, argv);
  const action = verb ? actions[verb] : undefined;
  if (action === undefined) throw invalidArgument(faultUsage);
  const [name] = positionals(parse(argv, {}), ["process"]);
  const request = v1.SignalProcessRequest.create({ name: checkName("process", name!), action });
  const { process: proc } = await callSupervisor(global, ctx, supervisorService.SignalProcess, request, 15_000);
  if (ctx.output === "json") return printJson(plain(v1.ManagedProcess, proc));
  out(`${verb} ${proc?.name}: now ${processState(proc?.state ?? 0)} (pid ${proc?.pid})\n`);
}

async function faultRuleCommand(ctx: CommandContext, verb: "add" | "list" | "clear", argv: string[]): Promise<void> {
  const bus = await ctx.bus();
  if (verb === "add") {
    const parsed = parse(argv, {
      action: { type: "string" },
      subject: { type: "string" },
      from: { type: "string" },
      to: { type: "string" },
      percent: { type: "string" },
      "delay-ms": { type: "string" },
      "jitter-ms": { type: "string" },
      copies: { type: "string" },
      after: { type: "string" },
      duration: { type: "string" },
      wait: { type: "boolean" },
    });
    const [id] = positionals(parsed, ["id"]);
    const actionName = stringFlag(parsed.flags, "action") ?? "";
    const action = ruleActions[actionName];
    if (action === undefined) throw invalidArgument(`--action must be drop, delay, duplicate or partition`);
    const afterMs = durationFlag(parsed.flags, "after", 0);
    const durationMs = durationFlag(parsed.flags, "duration", 0);
    if (parsed.flags["duration"] !== undefined && durationMs === 0) throw invalidArgument("--duration must be longer than 0");
    const rule: v1.FaultRule.$Properties = {
      id: id!,
      action,
      subject: stringFlag(parsed.flags, "subject") ?? "",
      source: stringFlag(parsed.flags, "from") ?? "",
      destination: stringFlag(parsed.flags, "to") ?? "",
      percent: intFlag(parsed.flags, "percent", 100, 1, 100),
      delayMs: intFlag(parsed.flags, "delay-ms", 0, 0, 1_000_000),
      jitterMs: intFlag(parsed.flags, "jitter-ms", 0, 0, 1_000_000),
      copies: intFlag(parsed.flags, "copies", 1, 1, 1_000),
    };
    checkFaultRule(rule);
    // Who is there, for the warning about identities, and the datacenter's time, for --after and --duration.
    const reports = await bus.faultReports();
    const known = new Set(reports.flatMap((r) => r.identities));
    for (const who of [rule.source, rule.destination]) {
      if (who && !known.has(who)) process.stderr.write(`simdc: warning: no process answers as ${who}; rule ${id} matches nothing until one does\n`);
    }
    if (afterMs || durationMs) {
      const startsAtMs = (await datacenterNowMs(bus, reports)) + afterMs;
      rule.startsAtMs = afterMs ? startsAtMs : 0;
      rule.endsAtMs = durationMs ? startsAtMs + durationMs : 0;
    }
    const set = await addFaultRule(bus, rule);
    publishFaultEvent(bus, id!, "added", `fault rule ${id} added: ${describeRule(rule)}`);
    if (parsed.flags["wait"]) await waitApplied(bus, set.generation);
    out(`fault rule ${id} added (generation ${set.generation}${parsed.flags["wait"] ? ", applied by every process" : ""})\n`);
    return;
  }
  if (verb === "clear") {
    const parsed = parse(argv, { wait: { type: "boolean" } });
    if (parsed.positionals.length > 1) throw invalidArgument("usage: simdc fault clear [id] [--wait]");
    const id = parsed.positionals[0];
    const set = await clearFaultRules(bus, id);
    publishFaultEvent(bus, id ?? "all", "cleared", `fault rules cleared: ${id ?? "all"}`);
    if (parsed.flags["wait"]) await waitApplied(bus, set.generation);
    out(`fault rules cleared: ${id ?? "all"} (generation ${set.generation})\n`);
    return;
  }
  positionals(parse(argv, {}), []);
  const [set, reports] = await Promise.all([readFaultRules(bus), bus.faultReports()]);
  const others = reports.sort((a, b) => (a.processId < b.processId ? -1 : 1));
  const nowMs = others.length ? others.map((r) => r.nowMs).sort((a, b) => a - b)[Math.floor(others.length / 2)]! : wallNowMs();
  const counts = ruleTotals(others);
  const rules = set.rules.map((r) => checkFaultRule(r));
  if (ctx.output === "json") {
    return printJson({
      rules: rules.map((r) => ({ ...plain(v1.FaultRule, r), phase: faultRulePhase(r, nowMs), ...counts.get(r.id) })),
      generation: set.generation,
      processes: others.map((r) => plain(v1.FaultReport, r)),
    });
  }
  out(`fault rules, generation ${set.generation}:\n`);
  printTable(
    ["RULE", "ACTION", "SUBJECT", "FROM", "TO", "PERCENT", "DELAY MS", "WHEN", "DROPPED", "DELAYED", "HELD", "DUPLICATED"],
    rules.map((r) => {
      const c = counts.get(r.id);
      return [
        r.id,
        enumName(v1.FaultAction, r.action, "FAULT_ACTION_"),
        r.subject || ">",
        r.source || "*",
        r.destination || "*",
        String(r.percent),
        r.jitterMs ? `${r.delayMs}+${r.jitterMs}` : String(r.delayMs),
        ruleWindow(r, nowMs),
        String(c?.dropped ?? 0),
        String(c?.delayed ?? 0),
        String(c?.held ?? 0),
        String(c?.duplicated ?? 0),
      ];
    }),
  );
  out(`\napplied by ${others.length} processes:\n`);
  printTable(
    ["PROCESS", "GENERATION", "DROPPED", "DELAYED", "HELD", "DUPLICATED", "IDENTITIES"],
    others.map((r) => [
      r.processId,
      `${r.generation}${r.generation === set.generation ? "" : " (stale)"}`,
      String(r.dropped),
      String(r.delayed),
      String(r.held),
      String(r.duplicated),
      summarize(r.identities),
    ]),
  );
}

/** What every process counted for each rule, summed. */
function ruleTotals(reports: v1.FaultReport[]): Map<string, { dropped: number; delayed: number; duplicated: number; held: number }> {
  const totals = new Map<string, { dropped: number; delayed: number; duplicated: number; held: number }>();
  for (const report of reports) {
    for (const c of report.rules) {
      const ruleId = c.ruleId ?? "";
      const t = totals.get(ruleId) ?? { dropped: 0, delayed: 0, duplicated: 0, held: 0 };
      t.dropped += c.dropped ?? 0;
      t.delayed += c.delayed ?? 0;
      t.duplicated += c.duplicated ?? 0;
      t.held += c.held ?? 0;
      totals.set(ruleId, t);
    }
  }
  return totals;
}

/** "active, ends in 12 s", "starts in 3 s", "ended 4 s ago", "active". */
function ruleWindow(rule: v1.FaultRule, nowMs: number): string {
  const secs = (ms: number): string => `${Math.round(ms / 100) / 10} s`;
  switch (faultRulePhase(rule, nowMs)) {
    case "pending":
      return `starts in ${secs(rule.startsAtMs - nowMs)}`;
    case "ended":
      return `ended ${secs(nowMs - rule.endsAtMs)} ago`;
    default:
      return rule.endsAtMs ? `active, ends in ${secs(rule.endsAtMs - nowMs)}` : "active";
  }
}

export function describeRule(rule: v1.FaultRule.$Properties): string {
  const parts = [enumName(v1.FaultAction, rule.action ?? 0, "FAULT_ACTION_")];
  if (rule.subject) parts.push(`on ${rule.subject}`);
  if (rule.source) parts.push(`from ${rule.source}`);
  if (rule.destination) parts.push(`to ${rule.destination}`);
  if (rule.percent && rule.percent < 100) parts.push(`${rule.percent}%`);
  if (rule.delayMs) parts.push(`${rule.delayMs} ms`);
  return parts.join(" ");
}

/** Says on the bus that a rule was added or cleared, and by whom. */
export function publishFaultEvent(bus: Bus, id: string, name: "added" | "cleared", message: string, cause = "cli", timeMs = bus.clock.nowMs()): void {
  const kind = name === "added" ? v1.EventKind.EVENT_KIND_FAULT_ADDED : v1.EventKind.EVENT_KIND_FAULT_CLEARED;
  bus.publish(bus.subjects.event("fault", id, name), v1.Event, { kind, objectId: id, timeMs, message, source: bus.processId, cause });
}

/** How long `--wait` gives every process to apply a new rule set. */
const applyWaitMs = 15_000;

/** Until every process that answers reports `generation` (or a later one). */
async function waitApplied(bus: Bus, generation: number): Promise<void> {
  const started = wallNowMs();
  for (;;) {
    const reports = await bus.faultReports();
    const behind = reports.filter((r) => r.generation < generation).map((r) => r.processId);
    if (behind.length === 0) return;
    if (wallNowMs() - started > applyWaitMs) {
      throw new SimdcError("DEADLINE_EXCEEDED", `after ${applyWaitMs} ms these processes have not applied generation ${generation}: ${behind.join(", ")}`);
    }
  }
}

const levels: Record<string, number> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60 };

/** Prints logs pretty; with no name, every process's, merged by time; --since, --level and --grep filter them. */
export async function logsCommand(global: GlobalOptions, argv: string[]): Promise<void> {
  const parsed = parse(argv, {
    follow: { type: "boolean", short: "f" },
    lines: { type: "string", short: "n" },
    since: { type: "string" },
    level: { type: "string" },
    grep: { type: "string" },
  });
  if (parsed.positionals.length > 1) throw invalidArgument("usage: simdc logs [process] [-f] [-n N] [--since 5m|ISO] [--level warn] [--grep TEXT]");
  const logsDir = join(global.dataDir, "logs");
  if (!existsSync(logsDir)) throw failedPrecondition(`no logs in ${logsDir}: has 'simdc up' run with this --data-dir? (for the compose deployment: docker-compose logs)`);
  const available = readdirSync(logsDir).filter((f) => f.endsWith(".log")).map((f) => f.slice(0, -4)).sort();
  const name = parsed.positionals[0];
  if (name !== undefined && !available.includes(name)) {
    throw invalidArgument(`no log for ${name}; there are: ${available.join(", ")}`);
  }
  const names = name ? [name] : available;
  const linesMax = intFlag(parsed.flags, "lines", 200, 0, 1_000_000);
  const levelName = stringFlag(parsed.flags, "level");
  if (levelName !== undefined && !(levelName in levels)) throw invalidArgument(`--level must be one of ${Object.keys(levels).join(", ")}`);
  const levelMin = levelName ? levels[levelName]! : 0;
  const sinceRaw = stringFlag(parsed.flags, "since");
  const since = sinceRaw === undefined ? "" : /^\d+(\.\d+)?(ms|s|m|h)$/.test(sinceRaw) ? new Date(wallNowMs() - parseDuration("--since", sinceRaw)).toISOString() : isoOf(sinceRaw);
  const grep = stringFlag(parsed.flags, "grep");
  const pretty = prettyFactory({ colorize: process.stdout.isTTY, translateTime: "SYS:HH:MM:ss.l", ignore: "pid,hostname", singleLine: true });
  // A line passes by its level and time (pino's JSON; other lines, as nats-server's, have neither) and its text.
  const passes = (line: string): boolean => {
    if (grep !== undefined && !line.includes(grep)) return false;
    if (levelMin > 0) {
      const level = Number(/"level":(\d+)/.exec(line)?.[1] ?? NaN);
      if (!(level >= levelMin)) return false;
    }
    return !since || timeOf(line) >= since;
  };
  const show = (source: string, line: string): void => {
    if (!line.trim() || !passes(line)) return;
    const text = line.startsWith("{") ? pretty(line).trimEnd() : line;
    out(names.length > 1 ? `${source.padEnd(10)} ${text}\n` : `${text}\n`);
  };
  const entries: { at: string; source: string; line: string }[] = [];
  const offsets = new Map<string, number>();
  for (const n of names) {
    const file = join(logsDir, `${n}.log`);
    const text = readFileSync(file, "utf8");
    offsets.set(n, Buffer.byteLength(text));
    for (const line of text.split("\n")) if (line && passes(line)) entries.push({ at: timeOf(line), source: n, line });
  }
  entries.sort((a, b) => (a.at < b.at ? -1 : a.at > b.at ? 1 : 0));
  if (linesMax > 0) for (const e of entries.slice(-linesMax)) show(e.source, e.line);
  if (!parsed.flags["follow"]) return;
  for (;;) {
    await wallClock.sleep(250);
    for (const n of names) {
      const file = join(logsDir, `${n}.log`);
      const size = statSync(file).size;
      const from = offsets.get(n) ?? 0;
      if (size <= from) continue;
      const buf = Buffer.alloc(size - from);
      const fd = openSync(file, "r");
      readSync(fd, buf, 0, buf.length, from);
      closeSync(fd);
      offsets.set(n, size);
      for (const line of buf.toString("utf8").split("\n")) show(n, line);
    }
  }
}

/** An ISO time for --since. @throws SimdcError INVALID_ARGUMENT. */
function isoOf(raw: string): string {
  const ms = /^\d+$/.test(raw) ? Number(raw) : Date.parse(raw);
  if (Number.isNaN(ms)) throw invalidArgument(`--since must be a duration (30s, 5m), an ISO time or Unix ms, got ${JSON.stringify(raw)}`);
  return new Date(ms).toISOString();
}

/** The ISO time of a pino line, or "" for other lines (they sort first). */
function timeOf(line: string): string {
  const m = /"time":"([^"]+)"/.exec(line);
  return m?.[1] ?? "";
}
