// Chooses a host for a VM, the way a scheduler with filters and weighers does
// (OpenStack's filter scheduler, vSphere's initial placement): filters drop
// hosts that cannot take the VM and say why, the weigher ranks the rest by
// how loaded they are now, least loaded first. Pure: it reads a snapshot of
// hosts and allocations and changes nothing. This is the full scan; the
// controller keeps a ranking (host-ranking.ts) so that a create looks at a
// few hosts, and uses the scan only to explain a refusal.

import { simdc } from "@simdc/proto";

import v1 = simdc.v1;

export interface PlacementHost {
  id: string;
  connected: boolean;
  pcpus: number;
  memoryMib: number;
  allocatedVcpus: number;
  allocatedMemoryMib: number;
  vmCount: number;
  vmsMax: number;
  /** One core's MHz (CPU reservations are in MHz of the host's cores); 0: not reported. */
  coreMhz?: number;
  /** Logical CPUs per core (2 with hyperthreading); a VM is at most as wide as the host's logical CPUs. */
  threadsPerCore?: number;
  /** Reservations of the VMs the host holds. */
  reservedMhz?: number;
  reservedMib?: number;
  /** What the host last measured of itself (its hypervisor's sample): how busy its cores were, 0-100. */
  measuredCpuPct?: number;
  /** Its memory state then (high, clear, soft, hard, low). */
  memoryState?: string;
}

export interface PlacementRequest {
  vcpus: number;
  memoryMib: number;
  /** Its CPU reservation in MHz, memory reservation in MiB. */
  reservationMhz?: number;
  reservationMib?: number;
}

/** What placement reads of a host's last hypervisor sample (nothing before its first). */
export function measuredOf(stats: v1.IHostStats | undefined): Pick<PlacementHost, "measuredCpuPct" | "memoryState"> {
  return stats?.memoryState ? { measuredCpuPct: stats.utilizationPct ?? 0, memoryState: stats.memoryState } : {};
}

/** A VM's demands on its host, from its spec. */
export function placementRequestOf(spec: v1.IVmSpec): PlacementRequest {
  return { vcpus: spec.vcpus ?? 0, memoryMib: spec.memoryMib ?? 0, reservationMhz: spec.cpu?.reservation ?? 0, reservationMib: spec.memory?.reservation ?? 0 };
}

export interface OvercommitRatios {
  /** vCPUs per physical CPU. */
  cpu: number;
  /** VM memory per MiB of host memory. */
  memory: number;
}

export interface Rejection {
  hostId: string;
  reason: string;
}

export type PlacementResult =
  | { ok: true; hostId: string; reason: string; rejected: Rejection[] }
  | { ok: false; reason: string; rejected: Rejection[] };

/** Limits how many rejections a result lists, so a reply stays small with hundreds of hosts. */
export const rejectionsListedMax = 32;

/** The capacity a host may promise under the ratios (floored: a fraction of a vCPU cannot be placed). */
export function placeableVcpus(host: PlacementHost, ratios: OvercommitRatios): number {
  return Math.floor(host.pcpus * ratios.cpu);
}

export function placeableMemoryMib(host: PlacementHost, ratios: OvercommitRatios): number {
  return Math.floor(host.memoryMib * ratios.memory);
}

/** Why `host` cannot take `vm`, or null when it can. */
export function rejectionReason(host: PlacementHost, vm: PlacementRequest, ratios: OvercommitRatios): string | null {
  if (!host.connected) return "disconnected";
  if (host.vmCount >= host.vmsMax) return `VMs: holds ${host.vmCount}, its limit`;
  // A host in the low state blocks its VMs' allocations: a new VM would stall there at once.
  if (host.memoryState === "low") return "memory: the host is in the low state (its VMs' allocations block)";
  const logicalCpus = host.pcpus * (host.threadsPerCore || 1);
  if (vm.vcpus > logicalCpus) return `width: ${vm.vcpus} vCPUs > ${logicalCpus} logical CPUs`;
  const vcpusMax = placeableVcpus(host, ratios);
  if (host.allocatedVcpus + vm.vcpus > vcpusMax) {
    return `CPU: ${host.allocatedVcpus}+${vm.vcpus} vCPUs > ${vcpusMax} (${host.pcpus} pCPUs x ${ratios.cpu})`;
  }
  const memoryMax = placeableMemoryMib(host, ratios);
  if (host.allocatedMemoryMib + vm.memoryMib > memoryMax) {
    return `memory: ${host.allocatedMemoryMib}+${vm.memoryMib} MiB > ${memoryMax} MiB (${host.memoryMib} MiB x ${ratios.memory})`;
  }
  // Reservations are guarantees: never overcommitted, whatever the ratios.
  if (vm.reservationMhz) {
    const capacityMhz = host.pcpus * (host.coreMhz ?? 0);
    const reserved = host.reservedMhz ?? 0;
    if (reserved + vm.reservationMhz > capacityMhz) return `CPU reservation: ${reserved}+${vm.reservationMhz} MHz > ${capacityMhz} MHz (${host.pcpus} cores x ${host.coreMhz ?? 0} MHz)`;
  }
  if (vm.reservationMib) {
    const reserved = host.reservedMib ?? 0;
    if (reserved + vm.reservationMib > host.memoryMib) return `memory reservation: ${reserved}+${vm.reservationMib} MiB > ${host.memoryMib} MiB`;
  }
  return null;
}

/**
 * The free share of the tighter resource, after placing `vm` when given:
 * higher is less loaded. CPU is the tighter of what is allocated and what the
 * host measured busy, so a host whose few VMs burn its cores is not "empty".
 */
export function freeShare(host: PlacementHost, ratios: OvercommitRatios, vm: PlacementRequest = { vcpus: 0, memoryMib: 0 }): number {
  const cpuFree = 1 - (host.allocatedVcpus + vm.vcpus) / Math.max(1, placeableVcpus(host, ratios));
  const measuredFree = host.measuredCpuPct === undefined ? 1 : 1 - host.measuredCpuPct / 100;
  const memoryFree = 1 - (host.allocatedMemoryMib + vm.memoryMib) / Math.max(1, placeableMemoryMib(host, ratios));
  return Math.min(cpuFree, measuredFree, memoryFree);
}

/** The explanation of a choice: how much of the chosen host's tighter resource stays free, and what it measured. */
export function chosenReason(host: PlacementHost, vm: PlacementRequest, ratios: OvercommitRatios, of: string): string {
  const percent = Math.round(freeShare(host, ratios, vm) * 100);
  const measured = host.measuredCpuPct === undefined ? "" : ` (it measured its cores ${Math.round(host.measuredCpuPct)}% busy, memory ${host.memoryState || "high"})`;
  return `least loaded of ${of}: ${percent}% of its tighter resource stays free${measured}`;
}

/**
 * Filters (connected, CPU and memory under the overcommit ratios), then weighs
 * by least loaded; ties go to the lower id so placement is deterministic.
 */
export function placeVm(hosts: Iterable<PlacementHost>, vm: PlacementRequest, ratios: OvercommitRatios): PlacementResult {
  const rejected: Rejection[] = [];
  let rejectedCount = 0;
  let best: PlacementHost | null = null;
  let bestScore = -Infinity;
  let candidates = 0;
  for (const host of hosts) {
    const reason = rejectionReason(host, vm, ratios);
    if (reason !== null) {
      rejectedCount += 1;
      if (rejected.length < rejectionsListedMax) rejected.push({ hostId: host.id, reason });
      continue;
    }
    candidates += 1;
    const score = freeShare(host, ratios);
    if (score > bestScore || (score === bestScore && best !== null && host.id < best.id)) {
      best = host;
      bestScore = score;
    }
  }
  if (best === null) {
    const total = rejectedCount === 0 ? "no hosts are registered" : `all ${rejectedCount} hosts were filtered out`;
    return { ok: false, reason: `no host fits ${vm.vcpus} vCPUs and ${vm.memoryMib} MiB: ${total}`, rejected };
  }
  return { ok: true, hostId: best.id, reason: chosenReason(best, vm, ratios, `${candidates} fitting hosts`), rejected };
}
