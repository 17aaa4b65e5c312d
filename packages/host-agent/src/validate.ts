// Checks every field of the documents a host realizes, at the edge, and
// turns them into typed values the VM code can trust. Documents come from KV
// through the bus; protobufjs decodes a partial message into defaults, so
// zero values and unknown enum numbers are refused here, and nothing behind
// this file re-checks them.

import { checkName, checkRange, invalidArgument } from "@simdc/common";
import { workloadSpecOf, type CpuSharesPreset } from "@simdc/hypervisor";
import { simdc } from "@simdc/proto";
import type { VmResources } from "./hypervisor.js";
import { memoryMibPerVmMax, vcpusPerVmMax } from "./limits.js";
import { checkNetworkSection, type NetworkSection } from "./network/section.js";

import v1 = simdc.v1;

const uint32Max = 0xffff_ffff;
const incarnationLengthMax = 64;

/** The power states a host can realize; UNSPECIFIED and unknown numbers are refused. */
export type DesiredPowerState = v1.PowerState.POWER_STATE_ON | v1.PowerState.POWER_STATE_OFF;

/** Where a boot volume lives; the node is "" when the controller did not know the volume. */
export interface BootLocation {
  volumeId: string;
  sanNodeId: string;
}

/** What the controller wants of one VM, checked. */
export interface DesiredVm {
  vmId: string;
  incarnation: string;
  spec: { vcpus: number; memoryMib: number; bootVolume: string };
  resources: VmResources;
  boot: BootLocation;
  powerState: DesiredPowerState;
  /** Bumped by the controller on each change of this incarnation; at least 1. */
  generation: number;
  /** As it came, for GetHostState. */
  wire: v1.DesiredVm;
}

/** A whole document (all chunks), checked. */
export interface HostPlan {
  generation: number;
  epoch: number;
  stateId: string;
  vms: DesiredVm[];
  network: NetworkSection;
}

/**
 * Checks one VM of a document field by field.
 * @throws SimdcError INVALID_ARGUMENT naming the first bad field.
 */
export function checkDesiredVm(vm: v1.DesiredVm): DesiredVm {
  const vmId = checkName("vm_id", vm.vmId);
  const incarnation = vm.incarnation;
  if (!incarnation || incarnation.length > incarnationLengthMax) throw invalidArgument(`vm ${vmId}: incarnation must be 1-${incarnationLengthMax} characters`);
  const spec = vm.spec;
  if (!spec) throw invalidArgument(`vm ${vmId}: spec is required`);
  const vcpus = checkRange(`vm ${vmId}: spec.vcpus`, spec.vcpus ?? 0, 1, vcpusPerVmMax);
  const memoryMib = checkRange(`vm ${vmId}: spec.memory_mib`, spec.memoryMib ?? 0, 1, memoryMibPerVmMax);
  const bootVolume = checkName(`vm ${vmId}: spec.boot_volume`, spec.bootVolume ?? "");
  const node = vm.bootVolume?.sanNodeId ?? "";
  const boot = { volumeId: bootVolume, sanNodeId: node ? checkName(`vm ${vmId}: boot_volume.san_node_id`, node) : "" };
  const powerState = vm.powerState;
  if (powerState !== v1.PowerState.POWER_STATE_ON && powerState !== v1.PowerState.POWER_STATE_OFF) {
    throw invalidArgument(`vm ${vmId}: power_state must be POWER_STATE_ON or POWER_STATE_OFF, got ${powerState}`);
  }
  const generation = checkRange(`vm ${vmId}: generation`, vm.generation, 1, uint32Max);
  const resources = checkResources(vmId, spec);
  return { vmId, incarnation, spec: { vcpus, memoryMib, bootVolume }, resources, boot, powerState, generation, wire: vm };
}

const presets: Record<number, CpuSharesPreset> = {
  [v1.SharesLevel.SHARES_LEVEL_UNSPECIFIED]: "normal",
  [v1.SharesLevel.SHARES_LEVEL_NORMAL]: "normal",
  [v1.SharesLevel.SHARES_LEVEL_LOW]: "low",
  [v1.SharesLevel.SHARES_LEVEL_HIGH]: "high",
};

/** A preset, or the custom number of shares. @throws SimdcError INVALID_ARGUMENT. */
function sharesOf(field: string, a: v1.IResourceAllocation | null | undefined): CpuSharesPreset | number {
  const level = a?.sharesLevel ?? v1.SharesLevel.SHARES_LEVEL_UNSPECIFIED;
  if (level === v1.SharesLevel.SHARES_LEVEL_CUSTOM) return checkRange(`${field}.shares`, a?.shares ?? 0, 1, uint32Max);
  const preset = presets[level];
  if (!preset) throw invalidArgument(`${field}.shares_level ${level} is not a known SharesLevel`);
  return preset;
}

/** The VM's allocation and workload (the model checks them against the host at power-on). @throws SimdcError INVALID_ARGUMENT. */
function checkResources(vmId: string, spec: v1.IVmSpec): VmResources {
  const limit = spec.cpu?.limit ?? 0;
  return {
    cpuShares: sharesOf(`vm ${vmId}: spec.cpu`, spec.cpu),
    cpuReservationMhz: spec.cpu?.reservation ?? 0,
    cpuLimitMhz: limit > 0 ? limit : undefined,
    memoryShares: sharesOf(`vm ${vmId}: spec.memory`, spec.memory),
    memoryReservationMib: spec.memory?.reservation ?? 0,
    workload: workloadSpecOf(spec.workload),
    image: spec.workload?.image ? checkName(`vm ${vmId}: spec.workload.image`, spec.workload.image) : undefined,
    shareSalt: spec.workload?.shareSalt || undefined,
  };
}

/**
 * Checks a document assembled from its chunks. A VM the host already holds
 * checked at the same incarnation and generation is taken as it was (its
 * spec cannot change without a new generation), so a document of many VMs
 * costs a check only for the VMs that changed.
 * @param held the host's checked VMs, by id.
 * @throws SimdcError INVALID_ARGUMENT for a bad generation, a repeated VM or a bad VM.
 */
export function checkPlan(chunks: v1.HostDocument[], held?: (vmId: string) => DesiredVm | undefined): HostPlan {
  const first = chunks[0];
  if (!first) throw invalidArgument("a document needs at least one chunk");
  const generation = checkRange("generation", first.generation, 1, uint32Max);
  const seen = new Set<string>();
  const vms: DesiredVm[] = [];
  for (const chunk of chunks) {
    for (const raw of chunk.vms) {
      const known = held?.(raw.vmId ?? "");
      const vm = known && known.incarnation === raw.incarnation && known.generation === raw.generation ? known : checkDesiredVm(v1.DesiredVm.create(raw));
      if (seen.has(vm.vmId)) throw invalidArgument(`vm ${vm.vmId} appears twice`);
      seen.add(vm.vmId);
      vms.push(vm);
    }
  }
  return { generation, epoch: first.epoch, stateId: first.stateId, vms, network: checkNetworkSection(first.network) };
}
