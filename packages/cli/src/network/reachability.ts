// The reachability matrix of a live datacenter: every running VM with a NIC
// and every external endpoint pings every other one's addresses (one echo
// each, from its host's vswitch, through the data plane only), and each pair
// is set beside what the policy allows (reachability-policy.ts). Used by
// `simdc net reachability` and by experiments' final state.

import { hostAgentService, hostScope, hostService, type Bus } from "@simdc/bus";
import { simdc } from "@simdc/proto";
import { listAllEndpoints, listAllNetworks, listAllRouters, listAllSecurityGroups, listAllVms } from "../paging.js";
import { policyAllows, type Guest, type PolicyWorld } from "./reachability-policy.js";

import v1 = simdc.v1;

export interface ReachabilityCell {
  from: string;
  to: string;
  ip: string;
  reached: boolean;
  allowed: boolean;
  /** Why it was not reached: no answer, or the sender's error. */
  why: string;
}

/**
 * @param retries how many more echoes a pair that differs from the policy
 * gets before it counts as differing (one lost echo under load is not a
 * hole in the policy).
 */
export async function measureReachability(bus: Bus, timeoutMs: number, retries = 0): Promise<ReachabilityCell[]> {
  const vms = (await listAllVms(bus)).filter((vm) => (vm.spec?.nics ?? []).length > 0 && vm.status?.state === v1.VmState.VM_STATE_RUNNING);
  const endpoints = await listAllEndpoints(bus);
  const groups = new Map((await listAllSecurityGroups(bus)).map((g) => [g.id ?? "", g]));
  const modes = new Map((await listAllNetworks(bus)).map((n) => [n.id ?? "", n.mode ?? 0]));
  const routers = new Map((await listAllRouters(bus)).flatMap((r) => (r.networks ?? []).map((n) => [n, r.id ?? ""])));
  const world: PolicyWorld = { modeOf: (id) => modes.get(id), securityGroup: (id) => groups.get(id), routerOf: (id) => routers.get(id) };
  const guests: { guest: Guest; hostId: string; addresses: string[] }[] = [
    ...vms.map((vm) => {
      const nics = (vm.spec?.nics ?? []).map((n) => ({ network: n.network ?? "", ip: n.ip ?? "", securityGroups: n.securityGroups ?? [] }));
      return { guest: { kind: "vm", id: vm.id ?? "", nics } as Guest, hostId: vm.hostId ?? "", addresses: nics.map((n) => n.ip) };
    }),
    ...endpoints.map((e) => ({ guest: { kind: "endpoint", id: e.id ?? "", ip: e.ip ?? "" } as Guest, hostId: e.hostId ?? "", addresses: [e.ip ?? ""] })),
  ];
  const agents = new Map<string, string>();
  for (const { hostId } of guests) if (!agents.has(hostId)) agents.set(hostId, (await bus.call(hostService.GetHost, { hostId })).host?.agentId ?? "");
  const cells: ReachabilityCell[] = [];
  await Promise.all(
    guests.map(async (source) => {
      const scopeId = hostScope(agents.get(source.hostId)!, source.hostId);
      const echo = async (ip: string): Promise<{ reached: boolean; why: string }> => {
        try {
          const reached = (await bus.call(hostAgentService.Ping, { vmId: source.guest.id, targetIp: ip, count: 1, timeoutMs }, { scopeId, timeoutMs: timeoutMs + 5_000 })).received > 0;
          return { reached, why: reached ? "" : "no answer" };
        } catch (err) {
          return { reached: false, why: err instanceof Error ? err.message : String(err) };
        }
      };
      for (const target of guests) {
        if (target.guest.id === source.guest.id) continue;
        for (const ip of target.addresses) {
          const allowed = policyAllows(source.guest, target.guest, ip, world);
          let answer = await echo(ip);
          for (let i = 0; i < retries && answer.reached !== allowed; i++) answer = await echo(ip);
          cells.push({ from: source.guest.id, to: target.guest.id, ip, allowed, ...answer });
        }
      }
    }),
  );
  return cells.sort((a, b) => (a.from === b.from ? (a.to === b.to ? a.ip.localeCompare(b.ip) : a.to.localeCompare(b.to)) : a.from.localeCompare(b.from)));
}
