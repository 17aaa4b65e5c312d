// What the SDN's probes and the final state read from a live datacenter:
// a ping between two VMs, sent by the source VM's host agent (whose host and
// agent were found before the timeline began, so a ping needs no
// controller); the hosts' vswitches (flows, controller connection); and, at
// the end, each host's installed flows against its document in KV.

import { hostAgentService, hostScope, hostService, computeService, type Bus } from "@simdc/bus";
import { simdc } from "@simdc/proto";
import { admissionFlows, formatFlow, parseFlow, reactiveCookie } from "@simdc/vswitch";
import type { FinalEntry, Plan } from "@simdc/experiment";
import { listAllEndpoints } from "../paging.js";

import v1 = simdc.v1;

interface VmPlace {
  hostId: string;
  agentId: string;
  ip: string;
}

/** Where the probed guests (VMs, or external endpoints) run, found once before the timeline starts. */
export class VmPlaces {
  private readonly places = new Map<string, VmPlace>();

  async find(bus: Bus, ids: Iterable<string>): Promise<void> {
    const endpoints = new Map((await listAllEndpoints(bus)).map((e) => [e.id ?? "", e]));
    for (const id of ids) {
      const endpoint = endpoints.get(id);
      const { hostId, ip } = endpoint ? { hostId: endpoint.hostId ?? "", ip: endpoint.ip ?? "" } : await bus.call(computeService.GetVm, { vmId: id }).then(({ vm }) => ({ hostId: vm?.hostId ?? "", ip: vm?.spec?.nics?.[0]?.ip ?? "" }));
      const { host } = await bus.call(hostService.GetHost, { hostId });
      this.places.set(id, { hostId, agentId: host?.agentId ?? "", ip });
    }
  }

  get(vmId: string): VmPlace {
    const place = this.places.get(vmId);
    if (!place) throw new Error(`vm ${vmId} was not located before the run`);
    return place;
  }
}

/** Waits until `from` pings `to` (both have their addresses by DHCP), so the timeline starts with a working network. */
export async function untilPinging(bus: Bus, places: VmPlaces, from: string, to: string, timeoutMs: number, sleep: (ms: number) => Promise<unknown>, nowMs: () => number): Promise<void> {
  const deadline = nowMs() + timeoutMs;
  for (;;) {
    const answer = await samplePing(bus, places, from, to, 500).catch((err: unknown) => ({ received: 0, error: String(err) }));
    if (answer.received) return;
    if (nowMs() > deadline) throw new Error(`vm ${from} could not ping ${to} within ${timeoutMs} ms before the run (${"error" in answer ? answer.error : "no answer"})`);
    await sleep(200);
  }
}

/** One echo from `from` to `to`'s first address: received 0 or 1, and its round trip. */
export async function samplePing(bus: Bus, places: VmPlaces, from: string, to: string, everyMs: number): Promise<Record<string, number>> {
  const source = places.get(from);
  const timeoutMs = Math.max(50, Math.min(1_000, everyMs - 20));
  const reply = await bus.call(hostAgentService.Ping, { vmId: from, targetIp: places.get(to).ip, count: 1, timeoutMs }, { scopeId: hostScope(source.agentId, source.hostId), timeoutMs: timeoutMs + 2_000 });
  return { received: reply.received, rttMs: reply.rttAvgMs };
}

/** The flows every host holds, and how many have lost their controller or failed open. */
export async function sampleFlows(bus: Bus, plan: Plan): Promise<Record<string, number>> {
  const out = { total: 0, lost: 0, failedOpen: 0, packetIns: 0 };
  await Promise.all(
    Object.entries(plan.agents).flatMap(([agentId, hosts]) =>
      hosts.map(async (hostId) => {
        const scopeId = hostScope(agentId, hostId);
        const [flows, ports] = await Promise.all([bus.call(hostAgentService.DumpFlows, { table: -1 }, { scopeId }), bus.call(hostAgentService.DumpPorts, {}, { scopeId })]);
        out.total += flows.flows.length;
        if (!ports.controllerConnected) out.lost += 1;
        if (ports.failOpen) out.failedOpen += 1;
        out.packetIns += Number(ports.centralPacketIns);
      }),
    ),
  );
  return out;
}

/** A flow as ovs-ofctl dump-flows writes it, without counters: installed and intended compare equal. */
function canonical(text: string): string {
  return formatFlow(parseFlow(text.replace(/^(n_packets=\d+, n_bytes=\d+, )/, "")));
}

/**
 * Each host's installed flows in the controller's tables against what its
 * documents intend (its own, with its guarded NICs' admissions expanded from
 * their groups' documents), for hosts with a network section.
 */
export async function finalFlows(bus: Bus, plan: Plan): Promise<NonNullable<FinalEntry["flows"]>> {
  const docs = await bus.bucket("docs", v1.HostDocument, { fenced: { epochOf: () => 0 }, bindOnly: true });
  const groupDocs = await bus.bucket("group-docs", v1.GroupDocument, { fenced: { epochOf: () => 0 }, bindOnly: true });
  const admissions = new Map<string, readonly string[]>();
  for (const [groupId, doc] of await groupDocs.loadAll(() => undefined)) admissions.set(groupId, doc.value.admissions);
  const out: NonNullable<FinalEntry["flows"]> = [];
  for (const [agentId, hosts] of Object.entries(plan.agents)) {
    for (const hostId of hosts) {
      try {
        const doc = await docs.get(`${agentId}.${hostId}.0`);
        const network = doc?.value.network;
        const expanded = (network?.ports ?? []).flatMap((p) => admissionFlows(p.ofport ?? 0, p.securityGroups ?? [], (g) => admissions.get(g)));
        const intended = [...(network?.flows ?? []), ...expanded].map(canonical);
        const dump = await bus.call(hostAgentService.DumpFlows, { table: -1 }, { scopeId: hostScope(agentId, hostId) });
        const ownedBelow = doc?.value.network?.controllerTables || dump.controllerTables;
        // The controller's answers to packet-ins (the reactive cookie) are not the document's.
        const installed = dump.flows
          .map(canonical)
          .filter((f) => !f.startsWith(`cookie=0x${reactiveCookie.toString(16)},`) && Number(/table=(\d+)/.exec(f)?.[1] ?? 0) < ownedBelow);
        if (intended.length || installed.length) out.push({ hostId, installed: installed.sort(), intended: intended.sort() });
      } catch (err) {
        out.push({ hostId, installed: [], intended: [], error: String(err) });
      }
    }
  }
  return out;
}
