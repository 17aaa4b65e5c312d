// The hypervisor from the CLI: a VM's CPU and memory allocation and
// workload (at create, or later with `simdc vm resources`), `simdc top` (an
// esxtop-like view of hosts and VMs, asked of each host's agent as esxtop
// asks one host), and the memory pressure fault. Like ofctl, top talks to
// the agents directly, so it keeps working while the controller is away.

import { computeService, hostAgentService, hostScope, type Bus } from "@simdc/bus";
import { invalidArgument, wallClock } from "@simdc/common";
import { simdc } from "@simdc/proto";
import { durationFlag, intFlag, parse, positionals, stringFlag, type FlagSpec, type Parsed } from "../args.js";
import { out, plain, printJson, printTable } from "../output.js";
import { listAllHosts } from "../paging.js";
import type { CommandContext } from "./resources.js";
import { agentOf } from "./vswitch.js";

import v1 = simdc.v1;

/** Flags that set a VM's allocation and workload, on create and on `vm resources`. */
export const resourceFlags: FlagSpec = {
  "cpu-shares": { type: "string" },
  "cpu-reservation-mhz": { type: "string" },
  "cpu-limit-mhz": { type: "string" },
  "mem-shares": { type: "string" },
  "mem-reservation-mib": { type: "string" },
  workload: { type: "string" },
  phase: { type: "string", multiple: true },
  image: { type: "string" },
  "share-salt": { type: "string" },
};

const levels: Record<string, v1.SharesLevel> = {
  low: v1.SharesLevel.SHARES_LEVEL_LOW,
  normal: v1.SharesLevel.SHARES_LEVEL_NORMAL,
  high: v1.SharesLevel.SHARES_LEVEL_HIGH,
};

/** --cpu-shares high|normal|low|N (N: the VM's shares in all). */
export function sharesOf(flag: string, text: string): { sharesLevel: v1.SharesLevel; shares: number } {
  const level = levels[text];
  if (level !== undefined) return { sharesLevel: level, shares: 0 };
  if (!/^\d+$/.test(text) || Number(text) < 1) throw invalidArgument(`--${flag} must be high, normal, low or a number of shares, got ${JSON.stringify(text)}`);
  return { sharesLevel: v1.SharesLevel.SHARES_LEVEL_CUSTOM, shares: Number(text) };
}

/** KIND[,name=value...]: a workload kind or phase with its parameters. */
function kindWithParams(flag: string, text: string): { kind: string; params: Record<string, number> } {
  const [kind, ...pairs] = text.split(",");
  const params: Record<string, number> = {};
  for (const pair of pairs) {
    const [name, value] = pair.split("=");
    if (!name || value === undefined || value === "" || !Number.isFinite(Number(value))) throw invalidArgument(`--${flag}: ${JSON.stringify(pair)} is not name=number`);
    params[name] = Number(value);
  }
  return { kind: kind ?? "", params };
}

/**
 * The allocation the flags give, each part only when one of its flags is
 * there (so `vm resources` changes only what it names). The controller
 * checks the values.
 * @throws SimdcError INVALID_ARGUMENT for a malformed flag.
 */
export function resourcesOf(flags: Parsed["flags"]): { cpu?: v1.IResourceAllocation; memory?: v1.IResourceAllocation; workload?: v1.IWorkload } {
  const out: { cpu?: v1.IResourceAllocation; memory?: v1.IResourceAllocation; workload?: v1.IWorkload } = {};
  const has = (...names: string[]): boolean => names.some((n) => flags[n] !== undefined);
  if (has("cpu-shares", "cpu-reservation-mhz", "cpu-limit-mhz")) {
    out.cpu = {
      ...sharesOf("cpu-shares", stringFlag(flags, "cpu-shares") ?? "normal"),
      reservation: intFlag(flags, "cpu-reservation-mhz", 0, 0, 0xffff_ffff),
      limit: intFlag(flags, "cpu-limit-mhz", 0, 0, 0xffff_ffff),
    };
  }
  if (has("mem-shares", "mem-reservation-mib")) {
    out.memory = { ...sharesOf("mem-shares", stringFlag(flags, "mem-shares") ?? "normal"), reservation: intFlag(flags, "mem-reservation-mib", 0, 0, 0xffff_ffff) };
  }
  if (has("workload", "phase", "image", "share-salt")) {
    const steady = kindWithParams("workload", stringFlag(flags, "workload") ?? "idle");
    const phases = ((flags["phase"] as unknown as string[] | undefined) ?? []).map((text) => {
      const colon = text.indexOf(":");
      if (colon < 0) throw invalidArgument(`--phase ${JSON.stringify(text)} is not KIND:DURATION[,name=value...] (boot:30s)`);
      const comma = text.indexOf(",", colon);
      const duration = text.slice(colon + 1, comma < 0 ? undefined : comma);
      const { kind, params } = kindWithParams("phase", text.slice(0, colon) + (comma < 0 ? "" : text.slice(comma)));
      return { kind, durationMs: durationFlag({ phase: duration }, "phase", 0), params };
    });
    out.workload = { ...steady, phases, image: stringFlag(flags, "image") ?? "", shareSalt: stringFlag(flags, "share-salt") ?? "" };
  }
  return out;
}

/** simdc vm resources VM [--cpu-* --mem-* --workload --phase --image --share-salt]. */
export async function vmResources(ctx: CommandContext, argv: string[], mutation: (flags: Parsed["flags"]) => v1.IMutation, extraFlags: FlagSpec): Promise<void> {
  const parsed = parse(argv, { ...resourceFlags, ...extraFlags });
  const [vmId] = positionals(parsed, ["vm"]);
  const given = resourcesOf(parsed.flags);
  if (!Object.keys(given).length) throw invalidArgument("give at least one of --cpu-shares, --cpu-reservation-mhz, --cpu-limit-mhz, --mem-shares, --mem-reservation-mib, --workload, --phase, --image, --share-salt");
  const { vm } = await (await ctx.bus()).call(computeService.SetVmResources, { vmId: vmId!, ...given, mutation: mutation(parsed.flags) });
  if (ctx.output === "json") return printJson(plain(v1.Vm, vm));
  out(`vm ${vmId}: ${describeResources(vm?.spec)} (vm generation ${vm?.generation})\n`);
}

/** One line: shares, reservation, limit, workload. */
export function describeResources(spec: v1.IVmSpec | null | undefined): string {
  const level = (a: v1.IResourceAllocation | null | undefined): string =>
    a?.sharesLevel === v1.SharesLevel.SHARES_LEVEL_CUSTOM ? `${a.shares} shares` : `${(v1.SharesLevel[a?.sharesLevel || v1.SharesLevel.SHARES_LEVEL_NORMAL] ?? "").replace("SHARES_LEVEL_", "").toLowerCase()} shares`;
  const cpu = `cpu ${level(spec?.cpu)}, reservation ${spec?.cpu?.reservation ?? 0} MHz, limit ${spec?.cpu?.limit ? `${spec.cpu.limit} MHz` : "none"}`;
  const memory = `memory ${level(spec?.memory)}, reservation ${spec?.memory?.reservation ?? 0} MiB`;
  const w = spec?.workload;
  const phases = (w?.phases ?? []).map((p) => `${p.kind} ${(p.durationMs ?? 0) / 1000} s`).join(", then ");
  return `${cpu}; ${memory}; workload ${phases ? `${phases}, then ` : ""}${w?.kind || "idle"}${w?.image ? ` (image ${w.image})` : ""}`;
}

const hostFlags = { agent: { type: "string" } } as const;

/** simdc fault memory HOST --pressure-mib N: memory taken outside the VMs (0 gives it back). */
export async function memoryFault(ctx: CommandContext, argv: string[]): Promise<void> {
  const parsed = parse(argv, { ...hostFlags, "pressure-mib": { type: "string" } });
  const [hostId] = positionals(parsed, ["host"]);
  if (parsed.flags["pressure-mib"] === undefined) throw invalidArgument("give --pressure-mib N (0 gives the memory back)");
  const bus = await ctx.bus();
  const pressureMib = intFlag(parsed.flags, "pressure-mib", 0, 0, 0xffff_ffff);
  const { host } = await bus.call(hostAgentService.SetMemoryPressure, { pressureMib }, { scopeId: hostScope(await agentOf(bus, hostId!, parsed.flags), hostId!) });
  if (ctx.output === "json") return printJson(plain(v1.HostStats, host));
  out(`${hostId}: ${pressureMib} MiB taken outside its VMs${host ? `; memory ${host.memoryState}, ${host.freeMib} MiB free (minFree ${host.minFreeMib} MiB) at the last sample` : ""}\n`);
}

/** What top sorts VMs by, each read off a VM's sample (descending); the experiments' hypervisor probe reads the same. */
export const sortKeys: Record<string, (s: v1.IVmStats) => number> = {
  ready: (s) => s.readyPct ?? 0,
  used: (s) => s.usedPct ?? 0,
  cstp: (s) => s.costopPct ?? 0,
  mlmtd: (s) => s.maxLimitedPct ?? 0,
  swpwt: (s) => s.swapWaitPct ?? 0,
  lost: (s) => s.lostWorkPct ?? 0,
  granted: (s) => s.grantedMib ?? 0,
  balloon: (s) => s.balloonMib ?? 0,
  swapped: (s) => s.swappedMib ?? 0,
};

/** One sample of every host asked (in parallel, a few agents at a time). */
async function sampleHosts(bus: Bus, hostIds: string[] | null): Promise<v1.GetHostStatsResponse[]> {
  const hosts = (await listAllHosts(bus)).filter((h) => h.state === v1.HostState.HOST_STATE_CONNECTED && (!hostIds || hostIds.includes(h.id ?? "")));
  const replies: v1.GetHostStatsResponse[] = [];
  const inFlightMax = 32;
  for (let i = 0; i < hosts.length; i += inFlightMax) {
    const batch = hosts.slice(i, i + inFlightMax).map((h) =>
      bus.call(hostAgentService.GetHostStats, {}, { scopeId: hostScope(h.agentId ?? "", h.id ?? ""), timeoutMs: 2_000 }).then(
        (r) => r,
        // A host that does not answer this refresh is left out of it, not fatal.
        () => null,
      ),
    );
    for (const r of await Promise.all(batch)) if (r) replies.push(r);
  }
  return replies.sort((a, b) => a.hostId.localeCompare(b.hostId));
}

const pct = (n: number | null | undefined): string => (n ?? 0).toFixed(1);
const mib = (n: number | null | undefined): string => String(Math.round(n ?? 0));

function render(samples: v1.GetHostStatsResponse[], sort: string, rowsMax: number): void {
  printTable(
    ["HOST", "CORES", "LCPUS", "VCPUS", "VCPU:CORE", "UTIL%", "MEMSTATE", "FREE MIB", "MINFREE MIB", "SHARED SAVED", "BALLOON", "COMPRESSED", "SWAPPED", "PRESSURE"],
    samples.map((s) => {
      const h = s.host;
      return [s.hostId, String(h?.cores ?? 0), String(h?.logicalCpus ?? 0), String(h?.vcpus ?? 0), (h?.vcpuRatio ?? 0).toFixed(2), pct(h?.utilizationPct), h?.memoryState || "-", mib(h?.freeMib), mib(h?.minFreeMib), mib(h?.sharedSavedMib), mib(h?.balloonMib), mib(h?.compressedMib), mib(h?.swappedMib), mib(h?.pressureMib)];
    }),
  );
  out("\n");
  const vms = samples.flatMap((s) => s.vms.map((vm) => ({ hostId: s.hostId, vm })));
  const key = sortKeys[sort]!;
  vms.sort((a, b) => key(b.vm) - key(a.vm) || (a.vm.vmId ?? "").localeCompare(b.vm.vmId ?? ""));
  printTable(
    ["VM", "HOST", "WORKLOAD", "VCPUS", "%USED", "%RUN", "%RDY", "%CSTP", "%MLMTD", "%SWPWT", "LOST%", "GRANTED", "ACTIVE", "SHARED", "BALLOON", "COMPRESSED", "SWAPPED"],
    vms.slice(0, rowsMax).map(({ hostId, vm }) => [vm.vmId ?? "", hostId, vm.workload ?? "", String(vm.vcpus ?? 0), pct(vm.usedPct), pct(vm.runPct), pct(vm.readyPct), pct(vm.costopPct), pct(vm.maxLimitedPct), pct(vm.swapWaitPct), pct(vm.lostWorkPct), mib(vm.grantedMib), mib(vm.activeMib), mib(vm.sharedMib), mib(vm.balloonMib), mib(vm.compressedMib), mib(vm.swappedMib)]),
  );
  if (vms.length > rowsMax) out(`(${vms.length - rowsMax} more VMs; --rows N shows more)\n`);
}

/**
 * simdc top --history --hosts H | --vm VM: the ring of past samples a host
 * keeps of itself (ten minutes) or of one of its VMs (five), oldest first.
 */
async function topHistory(ctx: CommandContext, flags: Parsed["flags"]): Promise<void> {
  const bus = await ctx.bus();
  const vmId = stringFlag(flags, "vm");
  const hostId = vmId ? ((await bus.call(computeService.GetVm, { vmId })).vm?.hostId ?? "") : stringFlag(flags, "hosts");
  if (!hostId || hostId.includes(",")) throw invalidArgument("--history needs one host (--hosts H) or --vm VM");
  const reply = await bus.call(hostAgentService.GetHostStats, { history: !vmId, vmId: vmId ?? "" }, { scopeId: hostScope(await agentOf(bus, hostId, flags), hostId) });
  if (ctx.output === "json") return printJson(vmId ? reply.vmHistory.map((x) => plain(v1.VmStats, x)) : reply.history.map((x) => plain(v1.HostStats, x)));
  const clock = (ms: number | null | undefined): string => new Date(ms ?? 0).toISOString().slice(11, 19);
  if (vmId) {
    out(`vm ${vmId} on ${hostId}: ${reply.vmHistory.length} samples, oldest first\n`);
    printTable(
      ["TIME", "%USED", "%RDY", "%CSTP", "%MLMTD", "%SWPWT", "LOST%", "GRANTED", "ACTIVE", "SHARED", "BALLOON", "COMPRESSED", "SWAPPED"],
      reply.vmHistory.map((x) => [clock(x.sampledAtMs), pct(x.usedPct), pct(x.readyPct), pct(x.costopPct), pct(x.maxLimitedPct), pct(x.swapWaitPct), pct(x.lostWorkPct), mib(x.grantedMib), mib(x.activeMib), mib(x.sharedMib), mib(x.balloonMib), mib(x.compressedMib), mib(x.swappedMib)]),
    );
    return;
  }
  out(`host ${hostId}: ${reply.history.length} samples, oldest first\n`);
  printTable(
    ["TIME", "UTIL%", "VCPUS", "MEMSTATE", "FREE MIB", "SHARED SAVED", "BALLOON", "COMPRESSED", "SWAPPED", "PRESSURE"],
    reply.history.map((h) => [clock(h.sampledAtMs), pct(h.utilizationPct), String(h.vcpus ?? 0), h.memoryState ?? "", mib(h.freeMib), mib(h.sharedSavedMib), mib(h.balloonMib), mib(h.compressedMib), mib(h.swappedMib), mib(h.pressureMib)]),
  );
}

/**
 * simdc top [--hosts h1,h2] [--sort ready|used|...] [--rows N] [--delay D] [--iterations N]:
 * refreshes in place until interrupted (or N times); -o json prints one sample.
 */
export async function topCommand(ctx: CommandContext, argv: string[]): Promise<void> {
  const parsed = parse(argv, { hosts: { type: "string" }, sort: { type: "string" }, rows: { type: "string" }, delay: { type: "string" }, iterations: { type: "string" }, history: { type: "boolean" }, vm: { type: "string" } });
  positionals(parsed, []);
  if (parsed.flags["history"] || parsed.flags["vm"] !== undefined) return topHistory(ctx, parsed.flags);
  const sort = stringFlag(parsed.flags, "sort") ?? "ready";
  if (!sortKeys[sort]) throw invalidArgument(`--sort must be one of ${Object.keys(sortKeys).join(", ")}, got ${JSON.stringify(sort)}`);
  const hostIds = stringFlag(parsed.flags, "hosts")?.split(",").filter(Boolean) ?? null;
  const rowsMax = intFlag(parsed.flags, "rows", 40, 1, 100_000);
  const delayMs = durationFlag(parsed.flags, "delay", 5_000, 3_600_000);
  const iterations = intFlag(parsed.flags, "iterations", ctx.output === "json" || !process.stdout.isTTY ? 1 : 0, 0, 1_000_000);
  const bus = await ctx.bus();
  for (let i = 0; iterations === 0 || i < iterations; i++) {
    if (i > 0) await wallClock.sleep(delayMs);
    const samples = await sampleHosts(bus, hostIds);
    if (ctx.output === "json") {
      printJson(samples.map((s) => plain(v1.GetHostStatsResponse, s)));
      continue;
    }
    // In place on a terminal, as esxtop refreshes; one after another into a pipe.
    if (process.stdout.isTTY) out("\x1b[H\x1b[2J");
    const windowS = (samples[0]?.host?.windowMs ?? 0) / 1000;
    out(`simdc top: ${samples.length} hosts, samples of ${windowS} s simulated, sorted by ${sort} (refresh every ${delayMs / 1000} s real)\n\n`);
    render(samples, sort, rowsMax);
  }
}
