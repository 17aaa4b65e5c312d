// The live data plane from the CLI: a host's vswitch (ofctl dump-flows,
// dump-ports, add-flow, del-flows) and a VM's ping. These talk to the host's
// agent directly, as ovs-ofctl talks to one switch; the controller is asked
// only where the host's agent is (or --agent says it), so they keep working
// while the controller is away.

import { computeService, hostAgentService, hostScope, hostService, type Bus } from "@simdc/bus";
import { checkName, invalidArgument, SimdcError } from "@simdc/common";
import { simdc } from "@simdc/proto";
import { durationFlag, intFlag, parse, positionals, stringFlag, type Parsed } from "../args.js";
import { out, plain, printJson, printTable } from "../output.js";
import type { CommandContext } from "./resources.js";
import { listAllEndpoints, listAllVms } from "../paging.js";
import { measureReachability } from "../network/reachability.js";

import v1 = simdc.v1;

/** The agent that runs `hostId`: --agent, or the controller's record of the host. */
export async function agentOf(bus: Bus, hostId: string, flags: Parsed["flags"]): Promise<string> {
  const given = stringFlag(flags, "agent");
  if (given) return checkName("--agent", given);
  const { host } = await bus.call(hostService.GetHost, { hostId });
  return host?.agentId ?? "";
}

const hostFlags = { agent: { type: "string" } } as const;

/** simdc ofctl dump-flows|dump-ports|dump-conntrack|add-flow|del-flows HOST ... */
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
      out(`cache: ${reply.cacheHits} hits, ${reply.cacheMisses} misses; ${reply.packetIns} local packet-ins (DHCP, ARP); underlay refused ${reply.underlayRefused}, throttled ${reply.underlayThrottled}, MTU drops ${reply.mtuDrops}\n`);
      for (const nic of reply.nics) {
        out(`${nic.name}: ${nic.bandwidthMbps} Mbit/s, queue ${nic.queueBytes} bytes; sent ${nic.txPackets} packets, ${nic.txBytes} bytes; dropped ${nic.drops}; backlog ${nic.backlogBytes} bytes (most ${nic.backlogBytesMax})${nic.storageBytes ? `; storage ${nic.storageBytes} bytes` : ""}\n`);
      }
      out(`reactive: ${reply.centralPacketIns} packet-ins to the controller, ${reply.flowMods} flows installed from its answers, ${reply.packetInsDropped} packets dropped (rate limit or no answer)\n`);
      return;
    }
    case "dump-conntrack": {
      const parsed = parse(argv, hostFlags);
      const [hostId] = positionals(parsed, ["host"]);
      const bus = await ctx.bus();
      const reply = await bus.call(hostAgentService.DumpConntrack, {}, { scopeId: hostScope(await agentOf(bus, hostId!, parsed.flags), hostId!) });
      if (ctx.output === "json") return printJson(plain(v1.DumpConntrackResponse, reply));
      const shown = reply.connections.length < reply.connectionsTotal ? ` (the first ${reply.connections.length} shown)` : "";
      out(`host ${reply.hostId}: ${reply.connectionsTotal} connections${shown}; ${reply.commits} commits, ${reply.expired} expired, ${reply.fullDrops} refused (table full or no NAT tuple free)\n`);
      for (const line of reply.connections) out(`${line}\n`);
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

const trafficKinds: Record<string, v1.TrafficKind> = { udp: v1.TrafficKind.TRAFFIC_KIND_UDP_STREAM, rr: v1.TrafficKind.TRAFFIC_KIND_TCP_RR };

/**
 * What arrived of each UDP flow, by flow number, counted where its target
 * runs (a VM or an external endpoint); a flow that left a NAT network
 * arrives from its host's uplink address.
 */
async function arrivals(bus: Bus, senderHost: string, sending: v1.ITrafficFlowStats[]): Promise<Map<number, v1.ITrafficReceived>> {
  const out = new Map<number, v1.ITrafficReceived>();
  const udp = sending.filter((f) => f.kind !== v1.TrafficKind.TRAFFIC_KIND_TCP_RR);
  if (udp.length === 0) return out;
  const targets = new Set(udp.map((f) => f.targetIp ?? ""));
  const uplink = (await bus.call(hostService.GetHost, { hostId: senderHost })).host?.uplinkIp ?? "";
  const hosts = new Set<string>();
  for (const vm of await listAllVms(bus)) if ((vm.spec?.nics ?? []).some((n) => targets.has(n.ip ?? ""))) hosts.add(vm.hostId ?? "");
  for (const e of await listAllEndpoints(bus)) if (targets.has(e.ip ?? "")) hosts.add(e.hostId ?? "");
  for (const hostId of hosts) {
    const agentId = (await bus.call(hostService.GetHost, { hostId })).host?.agentId ?? "";
    for (const r of (await bus.call(hostAgentService.TrafficStats, {}, { scopeId: hostScope(agentId, hostId) })).received) {
      const f = udp.find((s) => s.flowId === r.flowId && (r.sourceIp === s.sourceIp || r.sourceIp === uplink) && targets.has(s.targetIp ?? ""));
      if (f) out.set(f.flowId ?? 0, r);
    }
  }
  return out;
}

/** simdc fault nic HOST [--nic nic0] [--mbps M] [--queue-kib Q] [--for D]: a NIC's bandwidth or queue changed for a while. */
export async function nicFault(ctx: CommandContext, argv: string[]): Promise<void> {
  const parsed = parse(argv, { ...hostFlags, nic: { type: "string" }, mbps: { type: "string" }, "queue-kib": { type: "string" }, for: { type: "string" } });
  const [hostId] = positionals(parsed, ["host"]);
  const bus = await ctx.bus();
  const request = {
    nic: stringFlag(parsed.flags, "nic") ?? "nic0",
    bandwidthMbps: intFlag(parsed.flags, "mbps", 0, 1, 400_000),
    queueBytes: intFlag(parsed.flags, "queue-kib", 0, 2, 1 << 20) * 1024,
    durationMs: durationFlag(parsed.flags, "for", 0, 86_400_000),
  };
  if (!request.bandwidthMbps && !request.queueBytes) throw invalidArgument("give --mbps or --queue-kib (or both)");
  const { nic } = await bus.call(hostAgentService.SetNic, request, { scopeId: hostScope(await agentOf(bus, hostId!, parsed.flags), hostId!) });
  if (ctx.output === "json") return printJson(plain(v1.NicStats, nic));
  out(`${hostId} ${nic?.name}: now ${nic?.bandwidthMbps} Mbit/s, queue ${nic?.queueBytes} bytes${request.durationMs ? `, for ${request.durationMs / 1000} s (then as configured)` : ""}\n`);
}

/** Where a VM runs: --host/--agent, or the controller's record. */
async function placeOf(bus: Bus, vmId: string, flags: Parsed["flags"]): Promise<{ hostId: string; scopeId: string }> {
  const hostId = stringFlag(flags, "host") ?? (await bus.call(computeService.GetVm, { vmId })).vm?.hostId ?? "";
  return { hostId, scopeId: hostScope(await agentOf(bus, hostId, flags), hostId) };
}

/** simdc traffic start|stop|stats: constant-rate UDP flows between VMs, and what arrived. */
export async function trafficCommand(ctx: CommandContext, verb: string | undefined, argv: string[]): Promise<void> {
  const placeFlags = { host: { type: "string" }, agent: { type: "string" } } as const;
  const bus = await ctx.bus();
  switch (verb) {
    case "start": {
      const parsed = parse(argv, { ...placeFlags, rate: { type: "string" }, size: { type: "string" }, port: { type: "string" }, duration: { type: "string" }, kind: { type: "string" }, "response-size": { type: "string" } });
      const [vmId, target] = positionals(parsed, ["vm", "address"]);
      const kind = trafficKinds[stringFlag(parsed.flags, "kind") ?? "udp"];
      if (kind === undefined) throw invalidArgument("--kind must be udp (a constant-rate stream) or rr (TCP-like request/response)");
      const { scopeId } = await placeOf(bus, vmId!, parsed.flags);
      const sizeBytes = intFlag(parsed.flags, "size", 1_000, 64, 1_500);
      const request = {
        vmId: vmId!,
        targetIp: target!,
        kind,
        ratePps: intFlag(parsed.flags, "rate", 100, 1, 100_000),
        sizeBytes,
        responseBytes: intFlag(parsed.flags, "response-size", sizeBytes, 64, 1_500),
        dstPort: intFlag(parsed.flags, "port", 5_001, 1, 65_535),
        durationMs: parsed.flags["duration"] ? durationFlag(parsed.flags, "duration", 0, 86_400_000) : 0,
      };
      const reply = await bus.call(hostAgentService.StartTraffic, request, { scopeId });
      if (ctx.output === "json") return printJson(plain(v1.StartTrafficResponse, reply));
      const what =
        kind === v1.TrafficKind.TRAFFIC_KIND_TCP_RR
          ? `tcp/${request.dstPort} request/response, at most ${request.ratePps} transactions/s of ${request.sizeBytes} bytes out and ${request.responseBytes} back`
          : `udp/${request.dstPort}, ${request.ratePps} packets/s of ${request.sizeBytes} bytes`;
      out(`flow ${reply.flowId}: ${vmId} (${reply.sourceIp}) -> ${target} ${what}${request.durationMs ? ` for ${request.durationMs / 1000} s` : ""}\n`);
      return;
    }
    case "stop": {
      const parsed = parse(argv, placeFlags);
      const [vmId, flow] = positionals(parsed, ["vm", "flow"]);
      if (!/^\d+$/.test(flow!)) throw invalidArgument(`flow ${JSON.stringify(flow)} is not a flow number`);
      const { scopeId } = await placeOf(bus, vmId!, parsed.flags);
      const reply = await bus.call(hostAgentService.StopTraffic, { flowId: Number(flow) }, { scopeId });
      out(`flow ${flow} stopped after ${reply.flow?.sent ?? 0} packets\n`);
      return;
    }
    case "stats": {
      const parsed = parse(argv, placeFlags);
      const [vmId] = positionals(parsed, ["vm"]);
      const place = await placeOf(bus, vmId!, parsed.flags);
      const stats = await bus.call(hostAgentService.TrafficStats, {}, { scopeId: place.scopeId });
      const sending = stats.sending.filter((f) => f.vmId === vmId);
      const arrived = await arrivals(bus, place.hostId, sending);
      const rows = sending.map((f) => {
        const rr = f.kind === v1.TrafficKind.TRAFFIC_KIND_TCP_RR;
        const r = arrived.get(f.flowId ?? 0);
        // udp: from the first datagram that arrived to the last; rr: the flow's run so far.
        const activeS = rr ? ((f.running ? stats.nowMs : (f.stoppedMs ?? 0)) - (f.startedMs ?? 0)) / 1000 : r && r.lastMs! > r.firstMs! ? (r.lastMs! - r.firstMs!) / 1000 : 0;
        // A request/response flow counts at its sender: its answered requests and their round trips.
        const received = rr ? (f.transactions ?? 0) : (r?.received ?? 0);
        const lost = rr ? (f.timeouts ?? 0) : Math.max(0, (f.sent ?? 0) - received);
        const bytes = rr ? received * ((f.sizeBytes ?? 0) + (f.responseBytes ?? 0)) : (r?.bytes ?? 0);
        return {
          flow: f.flowId,
          kind: rr ? "rr" : "udp",
          to: f.targetIp,
          running: f.running,
          sent: f.sent ?? 0,
          received,
          lossPercent: f.sent ? (100 * lost) / f.sent : 0,
          mbps: activeS ? (bytes * 8) / activeS / 1e6 : 0,
          latencyAvgMs: rr ? (f.rttAvgMs ?? 0) : (r?.latencyAvgMs ?? 0),
          latencyMaxMs: rr ? (f.rttMaxMs ?? 0) : (r?.latencyMaxMs ?? 0),
        };
      });
      if (ctx.output === "json") return printJson({ vm: vmId, flows: rows, received: stats.received.filter((r) => r.vmId === vmId).map((r) => plain(v1.TrafficReceived, r)) });
      printTable(
        ["FLOW", "KIND", "TO", "STATE", "SENT", "RECEIVED", "LOSS %", "MBIT/S", "LATENCY AVG MS", "MAX MS"],
        rows.map((r) => [String(r.flow), r.kind, r.to ?? "", r.running ? "running" : "stopped", String(r.sent), String(r.received), r.lossPercent.toFixed(1), r.mbps.toFixed(2), r.latencyAvgMs.toFixed(2), r.latencyMaxMs.toFixed(1)]),
      );
      out("(udp: received where the target runs, one-way latency; rr: requests answered, round trips, requests timed out as loss)\n");
      return;
    }
    default:
      throw invalidArgument("usage: simdc traffic start <vm> <address> [--kind udp|rr] [--rate PPS] [--size B] [--response-size B] [--port P] [--duration D] | stop <vm> <flow> | stats <vm>");
  }
}

/**
 * simdc trace HOST PACKET: ofproto/trace on a live host's tables, then on
 * every host a tunnel output leads to (as ovn-trace follows a packet across
 * chassis), printing each hop's flows and outputs. Changes nothing.
 */
export async function traceCommand(ctx: CommandContext, argv: string[]): Promise<void> {
  const parsed = parse(argv, { agent: { type: "string" }, hops: { type: "string" } });
  const [hostId, packet] = positionals(parsed, ["host", "packet"]);
  const hopsMax = intFlag(parsed.flags, "hops", 8, 1, 64);
  const bus = await ctx.bus();
  const hops: v1.TraceResponse[] = [];
  let queue = [{ hostId: hostId!, agentId: await agentOf(bus, hostId!, parsed.flags), packet: packet!, fromHost: "" }];
  while (queue.length && hops.length < hopsMax) {
    const next: typeof queue = [];
    for (const hop of queue) {
      const reply = await bus.call(hostAgentService.Trace, { packet: hop.packet, fromHost: hop.fromHost }, { scopeId: hostScope(hop.agentId, hop.hostId) });
      hops.push(reply);
      for (const out of reply.outputs) if (out.hostId) next.push({ hostId: out.hostId, agentId: out.agentId ?? "", packet: reply.packet, fromHost: hop.hostId });
    }
    queue = next;
  }
  if (ctx.output === "json") return printJson(hops.map((h) => plain(v1.TraceResponse, h)));
  for (const hop of hops) {
    out(`${hop.hostId}:\n`);
    for (const flow of hop.flows) out(`  ${flow}\n`);
    const outputs = hop.outputs.map((o) => `${o.ofport} (${o.name || "no such port"})`);
    const packetIns = [hop.localPacketIns ? `${hop.localPacketIns} to the host's agent` : "", hop.controllerPacketIns ? `${hop.controllerPacketIns} to the controller` : ""].filter(Boolean);
    out(`  => ${outputs.length ? `output ${outputs.join(", ")}` : packetIns.length ? "no output" : "drop"}${packetIns.length ? `; packet-in ${packetIns.join(", ")}` : ""}\n`);
  }
}

/**
 * simdc net reachability: the reachability matrix (network/reachability.ts)
 * printed; exits non-zero on a difference from the policy, naming it.
 */
export async function reachabilityCommand(ctx: CommandContext, argv: string[]): Promise<void> {
  const parsed = parse(argv, { timeout: { type: "string" } });
  positionals(parsed, []);
  const timeoutMs = durationFlag(parsed.flags, "timeout", 300, 10_000);
  const cells = await measureReachability(await ctx.bus(), timeoutMs);
  const wrong = cells.filter((c) => c.reached !== c.allowed);
  if (ctx.output === "json") printJson({ cells, matchesPolicy: wrong.length === 0 });
  else {
    printTable(
      ["FROM", "TO", "ADDRESS", "REACHED", "POLICY"],
      cells.map((c) => [c.from, c.to, c.ip, c.reached ? "yes" : `no${c.why ? ` (${c.why})` : ""}`, c.allowed ? "allow" : "deny"]),
    );
    out(wrong.length === 0 ? `reachability matches the policy: ${cells.length} pairs\n` : `${wrong.length} of ${cells.length} pairs differ from the policy\n`);
  }
  if (wrong.length) {
    const first = wrong[0]!;
    throw new SimdcError("FAILED_PRECONDITION", `${first.from} ${first.reached ? "reached" : "did not reach"} ${first.to} (${first.ip}), which the policy ${first.allowed ? "allows" : "denies"}`);
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
