// simdc net create|list|get|delete: the logical networks VMs will attach to.

import { networkService } from "@simdc/bus";
import { invalidArgument } from "@simdc/common";
import { simdc } from "@simdc/proto";
import { intFlag, parse, positionals, stringFlag } from "../args.js";
import { enumName, out, plain, printJson, printTable } from "../output.js";
import { mutationFlags, mutationOf, type CommandContext } from "./resources.js";
import { reachabilityCommand } from "./vswitch.js";
import { listAllNetworks } from "../paging.js";

import v1 = simdc.v1;

const modes: Record<string, v1.NetworkMode> = {
  bridge: v1.NetworkMode.NETWORK_MODE_BRIDGE,
  "host-only": v1.NetworkMode.NETWORK_MODE_HOST_ONLY,
  nat: v1.NetworkMode.NETWORK_MODE_NAT,
};

const usage = "usage: simdc net create <name> --mode bridge|host-only|nat --subnet CIDR [--subnet CIDR ...] [--vlan N] [--flow-setup proactive|reactive] [--uplink converged|dedicated] [--tenant T] | list | get <net> | delete <net> | reachability";

const modeName = (m: number): string => enumName(v1.NetworkMode, m, "NETWORK_MODE_").replace("_", "-");
const transportName = (t: number): string => enumName(v1.NetworkTransport, t, "NETWORK_TRANSPORT_");
const flowSetupName = (f: number): string => enumName(v1.FlowSetup, f || v1.FlowSetup.FLOW_SETUP_PROACTIVE, "FLOW_SETUP_");
const flowSetups: Record<string, v1.FlowSetup> = { proactive: v1.FlowSetup.FLOW_SETUP_PROACTIVE, reactive: v1.FlowSetup.FLOW_SETUP_REACTIVE };
const uplinks: Record<string, v1.Uplink> = { converged: v1.Uplink.UPLINK_CONVERGED, dedicated: v1.Uplink.UPLINK_DEDICATED };
const uplinkName = (u: number): string => enumName(v1.Uplink, u || v1.Uplink.UPLINK_CONVERGED, "UPLINK_");

function row(n: v1.INetwork): string[] {
  return [n.id ?? "", n.tenant || "default", modeName(n.mode ?? 0), transportName(n.transport ?? 0), String(n.segmentId ?? 0), (n.subnets ?? []).map((s) => `${s.cidr} (gw ${s.gateway})`).join(", "), flowSetupName(n.flowSetup ?? 0), uplinkName(n.uplink ?? 0)];
}

const headers = ["NETWORK", "TENANT", "MODE", "TRANSPORT", "VNI/VLAN", "SUBNETS", "FLOWS", "UPLINK"];

export async function networkCommand(ctx: CommandContext, verb: string | undefined, argv: string[]): Promise<void> {
  if (verb === "reachability") return reachabilityCommand(ctx, argv);
  const bus = await ctx.bus();
  switch (verb) {
    case "create": {
      const parsed = parse(argv, { mode: { type: "string" }, subnet: { type: "string", multiple: true }, vlan: { type: "string" }, "flow-setup": { type: "string" }, uplink: { type: "string" }, tenant: { type: "string" }, ...mutationFlags });
      const [name] = positionals(parsed, ["name"]);
      const mode = modes[stringFlag(parsed.flags, "mode") ?? ""];
      if (mode === undefined) throw invalidArgument("--mode must be bridge, host-only or nat");
      const vlan = intFlag(parsed.flags, "vlan", 0, 1, 4094);
      const flowSetup = flowSetups[stringFlag(parsed.flags, "flow-setup") ?? "proactive"];
      if (flowSetup === undefined) throw invalidArgument("--flow-setup must be proactive or reactive");
      const uplink = uplinks[stringFlag(parsed.flags, "uplink") ?? "converged"];
      if (uplink === undefined) throw invalidArgument("--uplink must be converged or dedicated");
      const subnets = (parsed.flags["subnet"] as unknown as string[] | undefined) ?? [];
      const { network } = await bus.call(networkService.CreateNetwork, {
        name: name!,
        mode,
        transport: vlan ? v1.NetworkTransport.NETWORK_TRANSPORT_VLAN : v1.NetworkTransport.NETWORK_TRANSPORT_OVERLAY,
        vlanId: vlan,
        subnets,
        flowSetup,
        uplink,
        tenant: stringFlag(parsed.flags, "tenant") ?? "",
        mutation: mutationOf(parsed.flags),
      });
      if (ctx.output === "json") return printJson(plain(v1.Network, network));
      out(`network ${network?.id}: ${modeName(network?.mode ?? 0)} on ${transportName(network?.transport ?? 0)} ${network?.segmentId}; ${(network?.subnets ?? []).map((s) => `${s.cidr} (gateway ${s.gateway})`).join(", ")}${network?.flowSetup === v1.FlowSetup.FLOW_SETUP_REACTIVE ? "; reactive flow setup" : ""}${network?.uplink === v1.Uplink.UPLINK_DEDICATED ? "; dedicated uplink" : ""}\n`);
      return;
    }
    case "list": {
      positionals(parse(argv, {}), []);
      const networks = await listAllNetworks(bus);
      if (ctx.output === "json") return printJson(networks.map((n) => plain(v1.Network, n)));
      printTable(headers, networks.map(row));
      return;
    }
    case "get": {
      const [id] = positionals(parse(argv, {}), ["network"]);
      const { network } = await bus.call(networkService.GetNetwork, { networkId: id! });
      if (ctx.output === "json") return printJson(plain(v1.Network, network));
      printTable(headers, [row(network ?? {})]);
      return;
    }
    case "delete": {
      const parsed = parse(argv, mutationFlags);
      const [id] = positionals(parsed, ["network"]);
      await bus.call(networkService.DeleteNetwork, { networkId: id!, mutation: mutationOf(parsed.flags) });
      out(`network ${id} deleted\n`);
      return;
    }
    default:
      throw invalidArgument(usage);
  }
}
