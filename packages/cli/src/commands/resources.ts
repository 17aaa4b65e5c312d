// simdc host|vm|volume: the public API, one call a command, printed as a
// table or JSON.

import { computeService, hostService, storageService, type Bus } from "@simdc/bus";
import { invalidArgument } from "@simdc/common";
import { simdc } from "@simdc/proto";
import { intFlag, parse, positionals, stringFlag, type FlagSpec } from "../args.js";
import { listAllVms, listAllVolumes } from "../paging.js";
import { ago, hostState, plain, powerState, printJson, printTable, vmState, type OutputFormat } from "../output.js";

import v1 = simdc.v1;

export interface CommandContext {
  bus: () => Promise<Bus>;
  output: OutputFormat;
}

export async function hostCommand(ctx: CommandContext, verb: string | undefined, argv: string[]): Promise<void> {
  const bus = await ctx.bus();
  switch (verb) {
    case "list": {
      positionals(parse(argv, {}), []);
      const { hosts } = await bus.call(hostService.ListHosts, {});
      if (ctx.output === "json") return printJson(hosts.map((h) => plain(v1.Host, h)));
      printTable(
        ["HOST", "STATE", "AGENT", "PCPUS", "VCPUS", "MEMORY MIB", "ALLOCATED MIB", "VMS", "HEARTBEAT"],
        hosts.map((h) => [
          h.id ?? "",
          hostState(h.state ?? 0),
          h.agentId ?? "",
          String(h.capacity?.pcpus ?? 0),
          String(h.allocatedVcpus ?? 0),
          String(h.capacity?.memoryMib ?? 0),
          String(h.allocatedMemoryMib ?? 0),
          String(h.vmCount ?? 0),
          ago(h.lastHeartbeatMs ?? 0),
        ]),
      );
      return;
    }
    case "get": {
      const [id] = positionals(parse(argv, {}), ["host"]);
      const { host } = await bus.call(hostService.GetHost, { hostId: id! });
      return printJson(plain(v1.Host, host));
    }
    default:
      throw invalidArgument(`usage: simdc host list|get <host>`);
  }
}

const vmCreateFlags: FlagSpec = {
  vcpus: { type: "string" },
  "memory-mib": { type: "string" },
  "boot-volume": { type: "string" },
  off: { type: "boolean" },
};

function printVms(ctx: CommandContext, vms: v1.Vm.$Properties[]): void {
  if (ctx.output === "json") return printJson(vms.map((vm) => plain(v1.Vm, vm)));
  printTable(
    ["VM", "STATE", "POWER", "HOST", "VCPUS", "MEMORY MIB", "BOOT VOLUME", "GEN", "OBSERVED", "REASON"],
    vms.map((vm) => [
      vm.id ?? "",
      vmState(vm.status?.state ?? 0),
      powerState(vm.powerState ?? 0),
      vm.hostId ?? "",
      String(vm.spec?.vcpus ?? 0),
      String(vm.spec?.memoryMib ?? 0),
      vm.spec?.bootVolume ?? "",
      String(vm.generation ?? 0),
      String(vm.status?.observedGeneration ?? 0),
      vm.status?.reason?.message ?? "",
    ]),
  );
}

export async function vmCommand(ctx: CommandContext, verb: string | undefined, argv: string[]): Promise<void> {
  switch (verb) {
    case "create": {
      const parsed = parse(argv, vmCreateFlags);
      const [name] = positionals(parsed, ["name"]);
      const bootVolume = stringFlag(parsed.flags, "boot-volume");
      if (!bootVolume) throw invalidArgument("--boot-volume is required");
      const bus = await ctx.bus();
      const { vm, placement } = await bus.call(computeService.CreateVm, {
        name: name!,
        spec: {
          vcpus: intFlag(parsed.flags, "vcpus", 1, 0, 1_000_000),
          memoryMib: intFlag(parsed.flags, "memory-mib", 512, 0, 1_000_000_000),
          bootVolume,
        },
        powerState: parsed.flags["off"] ? v1.PowerState.POWER_STATE_OFF : v1.PowerState.POWER_STATE_ON,
      });
      if (ctx.output === "json") return printJson({ vm: plain(v1.Vm, vm), placement: plain(v1.Placement, placement) });
      process.stdout.write(`vm ${vm?.id} placed on ${placement?.hostId}: ${placement?.reason}\n`);
      return;
    }
    case "list": {
      const parsed = parse(argv, { host: { type: "string" } });
      positionals(parsed, []);
      const bus = await ctx.bus();
      const vms = await listAllVms(bus, stringFlag(parsed.flags, "host") ?? "");
      return printVms(ctx, vms);
    }
    case "get": {
      const [id] = positionals(parse(argv, {}), ["vm"]);
      const { vm } = await (await ctx.bus()).call(computeService.GetVm, { vmId: id! });
      return printJson(plain(v1.Vm, vm));
    }
    case "delete": {
      const [id] = positionals(parse(argv, {}), ["vm"]);
      await (await ctx.bus()).call(computeService.DeleteVm, { vmId: id! });
      process.stdout.write(`vm ${id} deleted\n`);
      return;
    }
    case "start":
    case "stop": {
      const [id] = positionals(parse(argv, {}), ["vm"]);
      const method = verb === "start" ? computeService.StartVm : computeService.StopVm;
      const { vm } = await (await ctx.bus()).call(method, { vmId: id! });
      if (ctx.output === "json") return printJson(plain(v1.Vm, vm));
      process.stdout.write(`vm ${id}: power ${powerState(vm?.powerState ?? 0)} (generation ${vm?.generation})\n`);
      return;
    }
    default:
      throw invalidArgument("usage: simdc vm create|list|get|delete|start|stop ...");
  }
}

export async function volumeCommand(ctx: CommandContext, verb: string | undefined, argv: string[]): Promise<void> {
  switch (verb) {
    case "create": {
      const parsed = parse(argv, { "size-mib": { type: "string" } });
      const [name] = positionals(parsed, ["name"]);
      const sizeMib = intFlag(parsed.flags, "size-mib", 1024, 0, 1_000_000_000);
      const { volume } = await (await ctx.bus()).call(storageService.CreateVolume, { name: name!, sizeMib });
      if (ctx.output === "json") return printJson(plain(v1.Volume, volume));
      process.stdout.write(`volume ${volume?.id} (${volume?.sizeMib} MiB) on ${volume?.sanNodeId}\n`);
      return;
    }
    case "list": {
      positionals(parse(argv, {}), []);
      const volumes = await listAllVolumes(await ctx.bus());
      if (ctx.output === "json") return printJson(volumes.map((v) => plain(v1.Volume, v)));
      printTable(
        ["VOLUME", "SIZE MIB", "BLOCK SIZE", "SAN NODE"],
        volumes.map((v) => [v.id ?? "", String(v.sizeMib ?? 0), String(v.blockSizeBytes ?? 0), v.sanNodeId ?? ""]),
      );
      return;
    }
    case "get": {
      const [id] = positionals(parse(argv, {}), ["volume"]);
      const { volume } = await (await ctx.bus()).call(storageService.GetVolume, { volumeId: id! });
      return printJson(plain(v1.Volume, volume));
    }
    case "delete": {
      const [id] = positionals(parse(argv, {}), ["volume"]);
      await (await ctx.bus()).call(storageService.DeleteVolume, { volumeId: id! });
      process.stdout.write(`volume ${id} deleted\n`);
      return;
    }
    default:
      throw invalidArgument("usage: simdc volume create|list|get|delete ...");
  }
}
