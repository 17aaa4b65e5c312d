// Checks on API requests, shared by the handlers. Every value that comes
// off the wire is checked here before any state is read or changed, since a
// protobuf that decodes may still hold defaults or unknown enum numbers.

import { checkName, checkRange, invalidArgument } from "@simdc/common";
import { cpuSchedulerLimits, workloadSpecOf } from "@simdc/hypervisor";
import { simdc } from "@simdc/proto";

import v1 = simdc.v1;

export const vcpusPerVmMax = 128;
export const memoryMibPerVmMax = 4 * 1024 * 1024;
export const volumeSizeMibMax = 16 * 1024 * 1024;
export const pcpusPerHostMax = 4096;
export const memoryMibPerHostMax = 64 * 1024 * 1024;
export const nicsPerHostMax = 64;
/** What a host that does not report its VM limit is assumed to hold (vSphere 7's maximum). */
export const vmsPerHostDefault = 1024;
export const vmsPerHostLimit = 100_000;
export const bootIdLengthMax = 64;
export const sanCapacityMibMax = 1024 * 1024 * 1024;

/** The checked spec of a VM. @throws SimdcError INVALID_ARGUMENT. */
export function checkVmSpec(spec: v1.VmSpec.$Properties | null | undefined): v1.VmSpec {
  if (!spec) throw invalidArgument("spec is required");
  return v1.VmSpec.create({
    vcpus: checkRange("spec.vcpus", spec.vcpus ?? 0, 1, vcpusPerVmMax),
    memoryMib: checkRange("spec.memory_mib", spec.memoryMib ?? 0, 1, memoryMibPerVmMax),
    bootVolume: checkName("spec.boot_volume", spec.bootVolume ?? ""),
    // Checked against the networks and what other NICs hold when addresses are assigned.
    nics: (spec.nics ?? []).map((nic) => v1.NicSpec.create({ ...nic, ofport: 0 })),
    ...checkVmResources(spec, spec.vcpus ?? 0, spec.memoryMib ?? 0),
  });
}

/** The most MHz one core may have (so a CPU reservation's bound). */
const coreMhzMax = cpuSchedulerLimits.coreMhzMax;
/** sched.mem.pshare.salt is a short string. */
const shareSaltLengthMax = 64;

/**
 * A VM's CPU and memory allocation and workload, each checked when given
 * (absent ones stay absent: the defaults).
 * @throws SimdcError INVALID_ARGUMENT.
 */
export function checkVmResources(
  given: { cpu?: v1.IResourceAllocation | null; memory?: v1.IResourceAllocation | null; workload?: v1.IWorkload | null },
  vcpus: number,
  memoryMib: number,
): { cpu?: v1.ResourceAllocation; memory?: v1.ResourceAllocation; workload?: v1.Workload } {
  const out: { cpu?: v1.ResourceAllocation; memory?: v1.ResourceAllocation; workload?: v1.Workload } = {};
  if (given.cpu) out.cpu = checkAllocation("spec.cpu", given.cpu, vcpus * coreMhzMax, "MHz");
  if (given.memory) {
    // vSphere's memory limit (reclaiming past it on an idle host) is not in the memory model: refused, never silently ignored.
    if (given.memory.limit) throw invalidArgument("spec.memory.limit is not modelled; leave it 0 (reservation and shares are)");
    out.memory = checkAllocation("spec.memory", given.memory, memoryMib, "MiB");
  }
  if (given.workload) {
    const w = given.workload;
    workloadSpecOf(w);
    if (w.image) checkName("spec.workload.image", w.image);
    if ((w.shareSalt ?? "").length > shareSaltLengthMax) throw invalidArgument(`spec.workload.share_salt is longer than ${shareSaltLengthMax} characters`);
    out.workload = v1.Workload.create(w);
  }
  return out;
}

/** Shares, reservation and limit of one resource. @throws SimdcError INVALID_ARGUMENT. */
function checkAllocation(field: string, a: v1.IResourceAllocation, reservationMax: number, unit: string): v1.ResourceAllocation {
  const level = a.sharesLevel ?? v1.SharesLevel.SHARES_LEVEL_UNSPECIFIED;
  if (!(level in v1.SharesLevel)) throw invalidArgument(`${field}.shares_level ${level} is not a known SharesLevel`);
  const custom = level === v1.SharesLevel.SHARES_LEVEL_CUSTOM;
  if (custom) checkRange(`${field}.shares`, a.shares ?? 0, 1, cpuSchedulerLimits.sharesMax);
  else if (a.shares) throw invalidArgument(`${field}.shares is given only with shares_level CUSTOM`);
  const reservation = checkRange(`${field}.reservation (${unit})`, a.reservation ?? 0, 0, reservationMax);
  const limit = a.limit ?? 0;
  if (limit && limit < reservation) throw invalidArgument(`${field}.limit ${limit} ${unit} is below its reservation ${reservation} ${unit}`);
  return v1.ResourceAllocation.create({ sharesLevel: level, shares: custom ? (a.shares ?? 0) : 0, reservation, limit });
}

/** ON or OFF; UNSPECIFIED means `fallback`. @throws SimdcError INVALID_ARGUMENT. */
export function checkPowerState(value: number, fallback: v1.PowerState): v1.PowerState {
  switch (value) {
    case v1.PowerState.POWER_STATE_UNSPECIFIED:
      return fallback;
    case v1.PowerState.POWER_STATE_ON:
    case v1.PowerState.POWER_STATE_OFF:
      return value;
    default:
      throw invalidArgument(`power_state ${value} is not a known PowerState`);
  }
}

/** @throws SimdcError INVALID_ARGUMENT when empty or too long. */
export function checkBootId(bootId: string): string {
  if (bootId.length === 0 || bootId.length > bootIdLengthMax) {
    throw invalidArgument(`boot_id must be 1-${bootIdLengthMax} characters`);
  }
  return bootId;
}

/** @throws SimdcError INVALID_ARGUMENT. */
export function checkHostCapacity(capacity: v1.HostCapacity.$Properties | null | undefined): v1.HostCapacity {
  if (!capacity) throw invalidArgument("capacity is required");
  return v1.HostCapacity.create({
    pcpus: checkRange("capacity.pcpus", capacity.pcpus ?? 0, 1, pcpusPerHostMax),
    memoryMib: checkRange("capacity.memory_mib", capacity.memoryMib ?? 0, 1, memoryMibPerHostMax),
    nics: checkRange("capacity.nics", capacity.nics ?? 0, 0, nicsPerHostMax),
    vmsMax: checkRange("capacity.vms_max", capacity.vmsMax || vmsPerHostDefault, 1, vmsPerHostLimit),
    threadsPerCore: checkRange("capacity.threads_per_core", capacity.threadsPerCore || 1, 1, 2),
    coreMhz: checkRange("capacity.core_mhz", capacity.coreMhz ?? 0, 0, coreMhzMax),
  });
}

/** A power of two from 512 B to 64 KiB. @throws SimdcError INVALID_ARGUMENT. */
export function checkBlockSize(bytes: number): number {
  if (!Number.isInteger(bytes) || bytes < 512 || bytes > 65536 || (bytes & (bytes - 1)) !== 0) {
    throw invalidArgument(`block_size_bytes must be a power of two from 512 to 65536, got ${bytes}`);
  }
  return bytes;
}
