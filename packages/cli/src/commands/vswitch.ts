// The live data plane from the CLI: a host's vswitch (ofctl dump-flows,
// dump-ports, add-flow, del-flows) and a VM's ping. These talk to the host's
// agent directly, as ovs-ofctl talks to one switch; the controller is asked
// only where the host's agent is (or --agent says it), so they keep working
// while the controller is away.

import { computeService, hostAgentService, hostScope, hostService, type Bus } from "@simdc/bus";
import { checkName, invalidArgument } from "@simdc/common";
import { simdc } from "@simdc/proto";
import { durationFlag, intFlag, parse, positionals, stringFlag, type Parsed } from "../args.js";
import { out, plain, printJson, printTable } from "../output.js";
import type { CommandContext } from "./resources.js";

import v1 = simdc.v1;

/** The agent that runs `hostId`: --agent, or the controller's record of the host. */
async function agentOf(bus: Bus, hostId: string, flags: Parsed["flags"]): Promise<string> {
  const given = stringFlag(flags, "agent");
  if (given) return checkName("--agent", given);
  const { host } = await bus.call(hostService.GetHost, { hostId });
  return host?.agentId ?? "";
}

const hostFlags = { agent: { type: "string" } } as const;

/** simdc ofctl dump-flows|dump-ports|add-flow|del-flows HOST ... */
export async function liveOfctl(ctx: CommandContext, verb: string, argv: string[]): Promise<void> {
  switch (verb) {
    case "dump-flows": {
      const parsed = parse(argv, { ...hostFlags, table: { type: "string" } });
      const [hostId] = positionals(parsed, ["host"]);
      const bus = await ctx.bus();
      const scopeId = hostScope(await agentOf(bus, hostId!, parsed.flags), hostId!);
      const reply = await bus.call(hostAgentService.DumpFlows, { table: intFlag(parsed.flags, "table", -1, 0, 254) }, { scopeId });
      if (ctx.output === "json") return printJson(plain(v1.DumpFlowsResponse, reply));
      out(`host ${reply.hostId}: ${reply.flows.length} flows, document generation ${reply.realizedGeneration}, tables 0-${Math.max(0, reply.controllerTables - 1)} the controller's\n`);
      for (const line of reply.flows) out(` ${line}\n`);
      return;
    }
    case "dump-ports": {
      const parsed = parse(argv, hostFlags);
      const [hostId] = positionals(parsed, ["host"]);
      const bus = await ctx.bus();
      const reply = await bus.call(hostAgentService.DumpPorts, {}, { scopeId: hostScope(await agentOf(bus, hostId!, parsed.flags), hostId!) });
      if (ctx.output === "json") return printJson(plain(v1.DumpPortsResponse, reply));
      const link = reply.failOpen ? "lost; failed open (learning switch)" : reply.controllerConnected ? "connected" : "lost; flows kept, nothing new installed";
      out(`host ${reply.hostId}: fail mode ${reply.failMode}, controller ${link}, inactivity probe ${reply.inactivityProbeMs} ms\n`);
      printTable(
        ["PORT", "NAME", "MAC", "IP", "LINK", "DHCP", "RX PKTS", "TX PKTS", "RX BYTES", "TX BYTES", "DROPS"],
        reply.ports.map((p) => [String(p.ofport), p.name ?? "", p.mac ?? "", p.ip ?? "", p.up ? "up" : "down", p.dhcp ?? "", String(p.rxPackets), String(p.txPackets), String(p.rxBytes), String(p.txBytes), String(p.drops)]),
      );
      out(`cache: ${reply.cacheHits} hits, ${reply.cacheMisses} misses; ${reply.packetIns} local packet-ins (DHCP, ARP); underlay refused ${reply.underlayRefused}, MTU drops ${reply.mtuDrops}\n`);
      return;
    }
    case "add-flow":
    case "del-flows": {
      const parsed = parse(argv, { ...hostFlags, force: { type: "boolean" } });
      const [hostId, ...rest] = parsed.positionals;
      if (!hostId || (verb === "add-flow" && rest.length !== 1) || rest.length > 1) {
        throw invalidArgument(verb === "add-flow" ? "usage: simdc ofctl add-flow HOST FLOW [--force]" : "usage: simdc ofctl del-flows HOST [table=N|cookie=V/M] [--force]");
      }
      const bus = await ctx.bus();
      const scopeId = hostScope(await agentOf(bus, hostId, parsed.flags), hostId);
      const reply = await bus.call(hostAgentService.ModFlows, { flows: rest, delete: verb === "del-flows", force: parsed.flags["force"] === true }, { scopeId });
      out(`host ${hostId}: ${reply.changed} flow(s) ${verb === "add-flow" ? "added" : "deleted"}\n`);
      return;
    }
    default:
      throw invalidArgument(`unknown ofctl verb ${JSON.stringify(verb)}`);
  }
}

/** simdc vm ping VM ADDRESS [-c COUNT] [-i INTERVAL] [-W TIMEOUT] */
export async function vmPing(ctx: CommandContext, argv: string[]): Promise<void> {
  const parsed = parse(argv, { count: { type: "string", short: "c" }, interval: { type: "string", short: "i" }, timeout: { type: "string", short: "W" }, agent: { type: "string" }, host: { type: "string" } });
  const [vmId, target] = positionals(parsed, ["vm", "address"]);
  const count = intFlag(parsed.flags, "count", 4, 1, 10_000);
  const intervalMs = durationFlag(parsed.flags, "interval", 1_000, 60_000);
  const timeoutMs = durationFlag(parsed.flags, "timeout", 1_000, 60_000);
  const bus = await ctx.bus();
  let hostId = stringFlag(parsed.flags, "host");
  if (!hostId) hostId = (await bus.call(computeService.GetVm, { vmId: vmId! })).vm?.hostId ?? "";
  const scopeId = hostScope(await agentOf(bus, hostId, parsed.flags), hostId);
  // Simulated time runs at the datacenter's scale; at 1x the pings take as long as they say.
  const reply = await bus.call(hostAgentService.Ping, { vmId: vmId!, targetIp: target!, count, intervalMs, timeoutMs }, { scopeId, timeoutMs: count * intervalMs + timeoutMs + 10_000 });
  if (ctx.output === "json") return printJson(plain(v1.PingResponse, reply));
  out(`PING ${target} from ${reply.sourceIp} (vm ${vmId} on ${hostId})\n`);
  for (const r of reply.replies) out(r.received ? `seq=${r.seq} time=${(r.rttMs ?? 0).toFixed(3)} ms\n` : `seq=${r.seq} lost\n`);
  const loss = reply.sent ? (100 * (reply.sent - reply.received)) / reply.sent : 0;
  out(`${reply.sent} sent, ${reply.received} received, ${loss.toFixed(0)}% loss`);
  out(reply.received ? `; rtt min/avg/max ${reply.rttMinMs.toFixed(3)}/${reply.rttAvgMs.toFixed(3)}/${reply.rttMaxMs.toFixed(3)} ms\n` : "\n");
}
