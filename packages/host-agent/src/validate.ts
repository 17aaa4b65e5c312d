// Checks every field of the requests a host serves, at the edge, and turns
// them into typed values the VM code can trust. protobufjs decodes an empty or
// partial message into defaults, so zero values and unknown enum numbers are
// refused here; nothing behind this file re-checks them.

import { checkName, checkRange, invalidArgument } from "@simdc/common";
import { simdc } from "@simdc/proto";
import { memoryMibPerVmMax, vcpusPerVmMax } from "./limits.js";

import v1 = simdc.v1;

const uint32Max = 0xffff_ffff;

/** The power states a host can realize; UNSPECIFIED and unknown numbers are refused. */
export type DesiredPowerState = v1.PowerState.POWER_STATE_ON | v1.PowerState.POWER_STATE_OFF;

/** What the controller wants of one VM, checked. */
export interface DesiredVm {
  vmId: string;
  spec: { vcpus: number; memoryMib: number; bootVolume: string };
  powerState: DesiredPowerState;
  /** Bumped by the controller on each change; at least 1. */
  generation: number;
}

/**
 * Checks an ApplyVm request field by field.
 * @throws SimdcError INVALID_ARGUMENT naming the first bad field.
 */
export function checkApplyVm(request: v1.ApplyVmRequest): DesiredVm {
  const vmId = checkName("vm_id", request.vmId);
  const spec = request.spec;
  if (!spec) throw invalidArgument("spec is required");
  const vcpus = checkRange("spec.vcpus", spec.vcpus ?? 0, 1, vcpusPerVmMax);
  const memoryMib = checkRange("spec.memory_mib", spec.memoryMib ?? 0, 1, memoryMibPerVmMax);
  const bootVolume = checkName("spec.boot_volume", spec.bootVolume ?? "");
  const powerState = request.powerState;
  if (powerState !== v1.PowerState.POWER_STATE_ON && powerState !== v1.PowerState.POWER_STATE_OFF) {
    throw invalidArgument(`power_state must be POWER_STATE_ON or POWER_STATE_OFF, got ${powerState}`);
  }
  const generation = checkRange("generation", request.generation, 1, uint32Max);
  return { vmId, spec: { vcpus, memoryMib, bootVolume }, powerState, generation };
}

/**
 * Checks a RemoveVm request.
 * @returns the VM id.
 * @throws SimdcError INVALID_ARGUMENT when the id is not a valid name.
 */
export function checkRemoveVm(request: v1.RemoveVmRequest): string {
  return checkName("vm_id", request.vmId);
}
