// A workload as it travels (simdc.v1.Workload: a kind, numeric parameters by
// name, phases) turned into the spec the model checks. Typed structurally, so
// this pure package needs no generated code; the services that decode the
// message hand it over as it came.

import { invalidArgument } from "@simdc/common";
import { parseWorkloadSpec, type WorkloadSpec } from "./workload.js";

/** The shape of simdc.v1.Workload and WorkloadPhase as decoded. */
export interface WireWorkload {
  kind?: string | null;
  params?: Record<string, number> | null;
  phases?: { kind?: string | null; durationMs?: number | null; params?: Record<string, number> | null }[] | null;
}

function paramsOf(params: Record<string, number> | null | undefined): Record<string, number> | undefined {
  return params && Object.keys(params).length ? { ...params } : undefined;
}

/**
 * The checked spec of a wire workload; an absent or empty one is idle.
 * @throws SimdcError INVALID_ARGUMENT naming the field at fault.
 */
export function workloadSpecOf(wire: WireWorkload | null | undefined): WorkloadSpec {
  if (!wire?.kind) {
    if (paramsOf(wire?.params) || wire?.phases?.length) throw invalidArgument("workload.kind is required with params or phases");
    return { kind: "idle" };
  }
  const params = paramsOf(wire.params);
  const phases = (wire.phases ?? []).map((p) => {
    const phaseParams = paramsOf(p.params);
    return { kind: p.kind ?? "", durationMs: p.durationMs ?? 0, ...(phaseParams ? { params: phaseParams } : {}) };
  });
  return parseWorkloadSpec({ kind: wire.kind, ...(params ? { params } : {}), ...(phases.length ? { phases } : {}) });
}
