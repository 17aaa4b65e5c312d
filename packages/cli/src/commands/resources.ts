// simdc host|vm|volume|sync: the public API, one call a command, printed as a
// table or JSON. Changing commands take --wait none|controller|hosts (as
// ovn-nbctl's --wait) and --request-id, which makes a retried command act once.

import { resourceFlags, resourcesOf, vmResources } from "./hypervisor.js";
import { computeService, hostService, storageService, type Bus } from "@simdc/bus";
import { invalidArgument } from "@simdc/common";
import { simdc } from "@simdc/proto";
import { intFlag, parse, positionals, stringFlag, type FlagSpec, type Parsed } from "../args.js";
import { vmPing } from "./vswitch.js";
import { listAllHosts, listAllVms, listAllVolumes } from "../paging.js";
import { ago, hostState, out, plain, powerState, printJson, printTable, vmState, volumeState, type OutputFormat } from "../output.js";

import v1 = simdc.v1;

export interface CommandContext {
  bus: () => Promise<Bus>;
  output: OutputFormat;
}

/** Flags every changing command takes. */
export const mutationFlags: FlagSpec = {
  wait: { type: "string" },
  "wait-timeout-ms": { type: "string" },
  "request-id": { type: "string" },
};

const waits: Record<string, v1.WaitFor> = {
  none: v1.WaitFor.WAIT_FOR_NONE,
  controller: v1.WaitFor.WAIT_FOR_CONTROLLER,
  hosts: v1.WaitFor.WAIT_FOR_HOSTS,
};

/** The Mutation of a changing command's flags. @throws SimdcError INVALID_ARGUMENT. */
export function mutationOf(flags: Parsed["flags"]): v1.IMutation {
  const waitName = stringFlag(flags, "wait") ?? "none";
  const wait = waits[waitName];
  if (wait === undefined) throw invalidArgument(`--wait must be none, controller or hosts, got ${JSON.stringify(waitName)}`);
  return {
    wait,
    waitTimeoutMs: intFlag(flags, "wait-timeout-ms", 0, 1, 600_000),
    requestId: stringFlag(flags, "request-id") ?? "",
  };
}

function resultNote(result: v1.IMutationResult | null | undefined): string {
  const parts: string[] = [];
  if (result?.configGeneration) parts.push(`generation ${result.configGeneration}`);
  if (result?.replayed) parts.push("replayed: an earlier request with this id already did it");
  return parts.length ? ` (${parts.join("; ")})` : "";
}

const hostHeaders = ["HOST", "STATE", "AGENT", "PCPUS", "VCPUS", "MEMORY MIB", "ALLOCATED MIB", "VMS", "GEN", "REALIZED", "HEARTBEAT"];

function hostRow(h: v1.IHost): string[] {
  return [
    h.id ?? "",
    hostState(h.state ?? 0),
    h.agentId ?? "",
    String(h.capacity?.pcpus ?? 0),
    String(h.allocatedVcpus ?? 0),
    String(h.capacity?.memoryMib ?? 0),
    String(h.allocatedMemoryMib ?? 0),
    String(h.vmCount ?? 0),
    String(h.desiredGeneration ?? 0),
    String(h.realizedGeneration ?? 0),
    ago(h.lastHeartbeatMs ?? 0),
  ];
}

export async function hostCommand(ctx: CommandContext, verb: string | undefined, argv: string[]): Promise<void> {
  const bus = await ctx.bus();
  switch (verb) {
    case "list": {
      positionals(parse(argv, {}), []);
      const hosts = await listAllHosts(bus);
      if (ctx.output === "json") return printJson(hosts.map((h) => plain(v1.Host, h)));
      printTable(hostHeaders, hosts.map(hostRow));
      return;
    }
    case "get": {
      const [id] = positionals(parse(argv, {}), ["host"]);
      const { host } = await bus.call(hostService.GetHost, { hostId: id! });
      if (ctx.output === "json") return printJson(plain(v1.Host, host));
      // The list's columns, one per line, and what the list leaves out.
      const h = host ?? {};
      const row = hostRow(h);
      printTable(["FIELD", "VALUE"], [...hostHeaders.map((header, i) => [header, row[i] ?? ""]), ["NICS", String(h.capacity?.nics ?? 0)], ["VMS MAX", String(h.capacity?.vmsMax ?? 0)], ["BOOT", h.bootId ?? ""], ["UPLINK IP", h.uplinkIp ?? ""]]);
      return;
    }
    default:
      throw invalidArgument(`usage: simdc host list|get <host>`);
  }
}

/** simdc sync [--wait] [--wait-timeout-ms T]: how far the hosts realized their documents (ovn-nbctl sync). */
export async function syncCommand(ctx: CommandContext, argv: string[]): Promise<void> {
  const parsed = parse(argv, { wait: { type: "boolean" }, "wait-timeout-ms": { type: "string" } });
  positionals(parsed, []);
  const status = await (await ctx.bus()).call(
    hostService.GetSyncStatus,
    { waitHosts: parsed.flags["wait"] === true, waitTimeoutMs: intFlag(parsed.flags, "wait-timeout-ms", 0, 1, 600_000) },
    { timeoutMs: 610_000 },
  );
  if (ctx.output === "json") return printJson(plain(v1.GetSyncStatusResponse, status));
  out(
    `generations: desired ${status.desiredGeneration}, written ${status.writtenGeneration}, realized by every live host ${status.realizedGeneration}; ` +
      `${status.liveHosts} live hosts, ${status.laggingCount} behind\n`,
  );
  if (status.lagging.length > 0) {
    printTable(
      ["HOST", "DOCUMENT", "REALIZED"],
      status.lagging.map((h) => [h.hostId ?? "", String(h.desiredGeneration ?? 0), String(h.realizedGeneration ?? 0)]),
    );
  }
}

export const vmCreateFlags: FlagSpec = {
  vcpus: { type: "string" },
  "memory-mib": { type: "string" },
  "boot-volume": { type: "string" },
  off: { type: "boolean" },
  nic: { type: "string", multiple: true },
  ...resourceFlags,
  ...mutationFlags,
};

/** --nic NETWORK[,mac=MAC][,ip=ADDRESS][,sg=GROUP+GROUP], once a NIC. @throws SimdcError INVALID_ARGUMENT. */
export function parseNic(text: string): v1.INicSpec {
  const [network, ...options] = text.split(",");
  const nic: v1.INicSpec = { network: network ?? "" };
  for (const option of options) {
    const [key, value = ""] = option.split("=");
    if (key === "mac") nic.mac = value;
    else if (key === "ip") nic.ip = value;
    else if (key === "sg") nic.securityGroups = value.split("+");
    else throw invalidArgument(`--nic ${text}: write NETWORK[,mac=MAC][,ip=ADDRESS][,sg=GROUP+GROUP]`);
  }
  return nic;
}

/** A VM's NICs in one cell: network and address, and the security groups guarding each. */
export function nicsText(vm: v1.Vm.$Properties): string {
  return (vm.spec?.nics ?? []).map((n) => `${n.network} ${n.ip}${n.securityGroups?.length ? ` [sg ${n.securityGroups.join("+")}]` : ""}`).join(", ");
}

function printVms(ctx: CommandContext, vms: v1.Vm.$Properties[]): void {
  if (ctx.output === "json") return printJson(vms.map((vm) => plain(v1.Vm, vm)));
  printTable(
    ["VM", "STATE", "POWER", "HOST", "VCPUS", "MEMORY MIB", "BOOT VOLUME", "NICS", "GEN", "OBSERVED", "REASON"],
    vms.map((vm) => [
      vm.id ?? "",
      vmState(vm.status?.state ?? 0),
      powerState(vm.powerState ?? 0),
      vm.hostId ?? "",
      String(vm.spec?.vcpus ?? 0),
      String(vm.spec?.memoryMib ?? 0),
      vm.spec?.bootVolume ?? "",
      nicsText(vm),
      String(vm.generation ?? 0),
      String(vm.status?.observedGeneration ?? 0),
      vm.status?.reason?.message ?? "",
    ]),
  );
}

export async function vmCommand(ctx: CommandContext, verb: string | undefined, argv: string[]): Promise<void> {
  // A wait for the hosts can take as long as the caller allows; the call waits a little longer.
  const callTimeout = (flags: Parsed["flags"]): { timeoutMs: number } => ({ timeoutMs: intFlag(flags, "wait-timeout-ms", 30_000, 1, 600_000) + 10_000 });
  switch (verb) {
    case "create": {
      const parsed = parse(argv, vmCreateFlags);
      const [name] = positionals(parsed, ["name"]);
      const bootVolume = stringFlag(parsed.flags, "boot-volume");
      if (!bootVolume) throw invalidArgument("--boot-volume is required");
      const request = {
        name: name!,
        spec: {
          vcpus: intFlag(parsed.flags, "vcpus", 1, 0, 1_000_000),
          memoryMib: intFlag(parsed.flags, "memory-mib", 512, 0, 1_000_000_000),
          bootVolume,
          nics: ((parsed.flags["nic"] as unknown as string[] | undefined) ?? []).map(parseNic),
          ...resourcesOf(parsed.flags),
        },
        powerState: parsed.flags["off"] ? v1.PowerState.POWER_STATE_OFF : v1.PowerState.POWER_STATE_ON,
        mutation: mutationOf(parsed.flags),
      };
      const { vm, placement, result } = await (await ctx.bus()).call(computeService.CreateVm, request, callTimeout(parsed.flags));
      if (ctx.output === "json") return printJson({ vm: plain(v1.Vm, vm), placement: plain(v1.Placement, placement), result: plain(v1.MutationResult, result) });
      out(`vm ${vm?.id} placed on ${placement?.hostId}: ${placement?.reason}${resultNote(result)}\n`);
      return;
    }
    case "ping":
      return vmPing(ctx, argv);
    case "resources":
      return vmResources(ctx, argv, mutationOf, mutationFlags);
    case "nic": {
      const parsed = parse(argv, { ...mutationFlags, sg: { type: "string" }, network: { type: "string" }, mac: { type: "string" }, ip: { type: "string" } });
      const [action, id, what] = parsed.positionals;
      const addressed = ["network", "mac", "ip"].some((f) => parsed.flags[f] !== undefined);
      const grouped = parsed.flags["sg"] !== undefined;
      const usage = "usage: simdc vm nic add <vm> NET[,mac=M][,ip=A][,sg=G+G] | remove <vm> <index> | set <vm> <index> --sg G+G (--sg '' for none) | set <vm> <index> [--network NET] [--mac M] [--ip A]";
      if ((action !== "add" && action !== "remove" && action !== "set") || !id || !what || parsed.positionals.length !== 3) throw invalidArgument(usage);
      if ((action === "set") !== (addressed || grouped)) throw invalidArgument(usage);
      if (addressed && grouped) throw invalidArgument("vm nic set changes a NIC's groups (--sg) or its network and addresses (--network, --mac, --ip), not both at once");
      const bus = await ctx.bus();
      const mutation = mutationOf(parsed.flags);
      let vm: v1.IVm | null | undefined;
      let result: v1.IMutationResult | null | undefined;
      if (action === "add") ({ vm, result } = await bus.call(computeService.AttachNic, { vmId: id, nic: parseNic(what), mutation }, callTimeout(parsed.flags)));
      else {
        if (!/^\d+$/.test(what)) throw invalidArgument(`${JSON.stringify(what)} is not a NIC index (0 for eth0)`);
        const index = Number(what);
        if (grouped) {
          const securityGroups = (stringFlag(parsed.flags, "sg") ?? "").split("+").filter(Boolean);
          ({ vm, result } = await bus.call(computeService.SetNicSecurityGroups, { vmId: id, index, securityGroups, mutation }, callTimeout(parsed.flags)));
        } else if (addressed) {
          const change = { network: stringFlag(parsed.flags, "network") ?? "", mac: stringFlag(parsed.flags, "mac") ?? "", ip: stringFlag(parsed.flags, "ip") ?? "" };
          ({ vm, result } = await bus.call(computeService.UpdateNic, { vmId: id, index, ...change, mutation }, callTimeout(parsed.flags)));
        } else ({ vm, result } = await bus.call(computeService.DetachNic, { vmId: id, index, mutation }, callTimeout(parsed.flags)));
      }
      if (ctx.output === "json") return printJson(plain(v1.Vm, vm));
      const nics = (vm?.spec?.nics ?? []).map((n, i) => `eth${i} ${n.network} ${n.ip} ${n.mac}${n.securityGroups?.length ? ` sg ${n.securityGroups.join("+")}` : ""}`).join("; ") || "no NICs";
      out(`vm ${id}: ${nics} (vm generation ${vm?.generation})${resultNote(result)}\n`);
      return;
    }
    case "list": {
      const parsed = parse(argv, { host: { type: "string" } });
      positionals(parsed, []);
      const vms = await listAllVms(await ctx.bus(), stringFlag(parsed.flags, "host") ?? "");
      return printVms(ctx, vms);
    }
    case "get": {
      const [id] = positionals(parse(argv, {}), ["vm"]);
      const { vm } = await (await ctx.bus()).call(computeService.GetVm, { vmId: id! });
      return printJson(plain(v1.Vm, vm));
    }
    case "delete": {
      const parsed = parse(argv, mutationFlags);
      const [id] = positionals(parsed, ["vm"]);
      const { result } = await (await ctx.bus()).call(computeService.DeleteVm, { vmId: id!, mutation: mutationOf(parsed.flags) }, callTimeout(parsed.flags));
      out(`vm ${id} deleted${resultNote(result)}\n`);
      return;
    }
    case "start":
    case "stop": {
      const parsed = parse(argv, mutationFlags);
      const [id] = positionals(parsed, ["vm"]);
      const method = verb === "start" ? computeService.StartVm : computeService.StopVm;
      const { vm, result } = await (await ctx.bus()).call(method, { vmId: id!, mutation: mutationOf(parsed.flags) }, callTimeout(parsed.flags));
      if (ctx.output === "json") return printJson(plain(v1.Vm, vm));
      out(`vm ${id}: power ${powerState(vm?.powerState ?? 0)} (vm generation ${vm?.generation})${resultNote(result)}\n`);
      return;
    }
    default:
      throw invalidArgument("usage: simdc vm create|list|get|delete|start|stop|ping|nic ...");
  }
}

export async function volumeCommand(ctx: CommandContext, verb: string | undefined, argv: string[]): Promise<void> {
  switch (verb) {
    case "create": {
      const parsed = parse(argv, { "size-mib": { type: "string" }, ...mutationFlags });
      const [name] = positionals(parsed, ["name"]);
      const sizeMib = intFlag(parsed.flags, "size-mib", 1024, 0, 1_000_000_000);
      const { volume, result } = await (await ctx.bus()).call(
        storageService.CreateVolume,
        { name: name!, sizeMib, mutation: mutationOf(parsed.flags) },
        { timeoutMs: 30_000 },
      );
      if (ctx.output === "json") return printJson(plain(v1.Volume, volume));
      out(`volume ${volume?.id} (${volume?.sizeMib} MiB) on ${volume?.sanNodeId}: ${volumeState(volume?.state ?? 0)}${resultNote(result)}\n`);
      return;
    }
    case "list": {
      positionals(parse(argv, {}), []);
      const volumes = await listAllVolumes(await ctx.bus());
      if (ctx.output === "json") return printJson(volumes.map((v) => plain(v1.Volume, v)));
      printTable(
        ["VOLUME", "STATE", "SIZE MIB", "BLOCK SIZE", "SAN NODE", "REASON"],
        volumes.map((v) => [v.id ?? "", volumeState(v.state ?? 0), String(v.sizeMib ?? 0), String(v.blockSizeBytes ?? 0), v.sanNodeId ?? "", v.reason?.message ?? ""]),
      );
      return;
    }
    case "get": {
      const [id] = positionals(parse(argv, {}), ["volume"]);
      const { volume } = await (await ctx.bus()).call(storageService.GetVolume, { volumeId: id! });
      return printJson(plain(v1.Volume, volume));
    }
    case "delete": {
      const parsed = parse(argv, mutationFlags);
      const [id] = positionals(parsed, ["volume"]);
      const { result } = await (await ctx.bus()).call(storageService.DeleteVolume, { volumeId: id!, mutation: mutationOf(parsed.flags) }, { timeoutMs: 30_000 });
      out(`volume ${id} deleted${resultNote(result)}\n`);
      return;
    }
    default:
      throw invalidArgument("usage: simdc volume create|list|get|delete ...");
  }
}
