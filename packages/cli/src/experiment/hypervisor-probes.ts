// What the hypervisor's experiment parts read from and write to a live
// datacenter: a VM group's fields as the wire's VmSpec has them (what
// `simdc vm create --cpu-* --mem-* --workload --phase --image --share-salt`
// sends), and the hypervisor probe, which asks each host's agent for its
// esxtop counters (as `simdc top` does, without the controller) and keeps
// one reading per host and closed sample window, bounded in hosts and VMs.

import { hostAgentService, hostScope, type Bus } from "@simdc/bus";
import { agentOfHost, groupWorkload, hypervisorProbeLimits, memoryStates, vmCounters, vmValueKey, type HostCounter, type Plan, type VmCounter, type VmResourceFields } from "@simdc/experiment";
import { simdc } from "@simdc/proto";
import { sharesOf, sortKeys } from "../commands/hypervisor.js";

import v1 = simdc.v1;

/**
 * A group's CPU and memory allocation and workload on the wire, each only
 * when the group gives it (absent: the defaults). With bootMs, the workload
 * boots that long first.
 */
export function vmResourcesWire(g: VmResourceFields, bootMs?: number): Pick<v1.IVmSpec, "cpu" | "memory" | "workload"> {
  const out: Pick<v1.IVmSpec, "cpu" | "memory" | "workload"> = {};
  // The scenario's schema has checked the shares already, so the flag names in sharesOf's errors never show.
  if (g.cpu) out.cpu = { ...sharesOf("cpu-shares", String(g.cpu.shares ?? "normal")), reservation: g.cpu.reservationMhz ?? 0, limit: g.cpu.limitMhz ?? 0 };
  if (g.memory) out.memory = { ...sharesOf("mem-shares", String(g.memory.shares ?? "normal")), reservation: g.memory.reservationMib ?? 0 };
  if (g.workload || g.image || g.shareSalt || bootMs !== undefined) out.workload = { ...groupWorkload(g, bootMs), image: g.image ?? "", shareSalt: g.shareSalt ?? "" };
  return out;
}

/** One probe reading: a sample entry's values, which host it is of, and when its window closed. */
export interface ProbeReading {
  values: Record<string, number>;
  label?: string;
  timeMs?: number;
}

/** Each VM counter read off a VM's sample: as top reads it (its key for co-stop is esxtop's cstp), and the vCPUs. */
const vmReaders: Record<VmCounter, (s: v1.IVmStats) => number> = {
  ...(Object.fromEntries(vmCounters.map((c) => [c, sortKeys[c === "costop" ? "cstp" : c]])) as Record<VmCounter, (s: v1.IVmStats) => number>),
  vcpus: (s) => s.vcpus ?? 0,
};

/** A host's sample as a reading: its counters and its first VMs' (by id), timed at the end of its window. */
export function hostReading(reply: v1.IGetHostStatsResponse): ProbeReading {
  const h = reply.host ?? {};
  const vms = [...(reply.vms ?? [])].sort((a, b) => (a.vmId ?? "").localeCompare(b.vmId ?? ""));
  const kept = vms.slice(0, hypervisorProbeLimits.vmsPerHostMax);
  const values: Record<HostCounter, number> = {
    utilization: h.utilizationPct ?? 0,
    memoryState: Math.max(0, memoryStates.indexOf((h.memoryState ?? "high") as (typeof memoryStates)[number])),
    free: h.freeMib ?? 0,
    minFree: h.minFreeMib ?? 0,
    sharedSaved: h.sharedSavedMib ?? 0,
    sharedSavedBetweenVms: h.sharedSavedBetweenVmsMib ?? 0,
    balloon: h.balloonMib ?? 0,
    compressed: h.compressedMib ?? 0,
    swapped: h.swappedMib ?? 0,
    pressure: h.pressureMib ?? 0,
    windowMs: h.windowMs ?? 0,
    vms: kept.length,
    vmsOmitted: vms.length - kept.length,
  };
  const reading: Record<string, number> = { ...values };
  for (const vm of kept) for (const c of vmCounters) reading[vmValueKey(vm.vmId ?? "", c)] = vmReaders[c](vm);
  return { values: reading, label: reply.hostId ?? "", timeMs: h.sampledAtMs ?? 0 };
}

/** How long one host's agent may take to answer a probe. */
const statsTimeoutMs = 2_000;

/**
 * The hypervisor probe of one scenario: its hosts (those named, else the
 * topology's first, at most hypervisorProbeLimits.hostsMax), and the window
 * each last recorded, so a window probed twice is recorded once.
 */
export class HypervisorSampler {
  private readonly hosts: { hostId: string; scopeId: string }[];
  private readonly lastWindowMs = new Map<string, number>();

  constructor(
    private readonly bus: Bus,
    plan: Plan,
    hosts: string[] | undefined,
  ) {
    this.hosts = (hosts ?? plan.hosts).slice(0, hypervisorProbeLimits.hostsMax).map((hostId) => ({ hostId, scopeId: hostScope(agentOfHost(plan, hostId), hostId) }));
  }

  /** Each host's new window since the last call; a host that does not answer is a reading of errors: 1. */
  async sample(): Promise<ProbeReading[]> {
    const replies = await Promise.all(
      this.hosts.map(({ hostId, scopeId }) =>
        this.bus.call(hostAgentService.GetHostStats, {}, { scopeId, timeoutMs: statsTimeoutMs }).then(
          (reply) => ({ hostId, reply }),
          () => ({ hostId, reply: null }),
        ),
      ),
    );
    const readings: ProbeReading[] = [];
    for (const { hostId, reply } of replies) {
      if (!reply) {
        readings.push({ label: hostId, values: { errors: 1 } });
        continue;
      }
      // No window has closed yet (the host just started), or this one was recorded already.
      const closedMs = reply.host?.sampledAtMs;
      if (!closedMs || this.lastWindowMs.get(hostId) === closedMs) continue;
      this.lastWindowMs.set(hostId, closedMs);
      readings.push(hostReading(reply));
    }
    return readings;
  }
}
