// The two kinds of desired state the controller keeps, and what each
// promises its placement target: VMs promise vCPUs, memory and their
// reservations to a host,
// volumes promise their size to a SAN node.

import { simdc } from "@simdc/proto";
import type { DesiredKind, DesiredStore } from "./desired-store.js";

import v1 = simdc.v1;

export interface HostAllocation {
  vcpus: number;
  memoryMib: number;
  vmCount: number;
  /** Reservations the host guarantees its VMs: MHz of CPU, MiB of memory. */
  reservedMhz: number;
  reservedMib: number;
}

export interface SanAllocation {
  sizeMib: number;
  volumeCount: number;
}

export type VmStore = DesiredStore<v1.VmRecord, v1.Vm, HostAllocation>;
export type VolumeStore = DesiredStore<v1.VolumeRecord, v1.Volume, SanAllocation>;

export const vmKind: DesiredKind<v1.VmRecord, v1.Vm, HostAllocation> = {
  noun: "vm",
  objectOf: (record) => record.vm as v1.Vm,
  isDeleted: (record) => record.deleted || !record.vm,
  placementOf: (vm) => vm.hostId,
  emptyAllocation: () => ({ vcpus: 0, memoryMib: 0, vmCount: 0, reservedMhz: 0, reservedMib: 0 }),
  account(a, vm, sign) {
    a.vcpus += sign * (vm.spec?.vcpus ?? 0);
    a.memoryMib += sign * (vm.spec?.memoryMib ?? 0);
    a.vmCount += sign;
    a.reservedMhz += sign * (vm.spec?.cpu?.reservation ?? 0);
    a.reservedMib += sign * (vm.spec?.memory?.reservation ?? 0);
  },
  referenceOf: (vm) => vm.spec?.bootVolume ?? "",
};

export const volumeKind: DesiredKind<v1.VolumeRecord, v1.Volume, SanAllocation> = {
  noun: "volume",
  objectOf: (record) => record.volume as v1.Volume,
  isDeleted: (record) => record.deleted || !record.volume,
  placementOf: (volume) => volume.sanNodeId,
  emptyAllocation: () => ({ sizeMib: 0, volumeCount: 0 }),
  account(a, volume, sign) {
    a.sizeMib += sign * volume.sizeMib;
    a.volumeCount += sign;
  },
};

/** How many request ids a record remembers (the requests that made it what it is). */
export const requestIdsPerRecordMax = 8;

/** `ids` with `requestId` appended (when given), keeping the newest few. */
export function withRequestId(ids: readonly string[], requestId: string): string[] {
  if (!requestId) return [...ids];
  return [...ids, requestId].slice(-requestIdsPerRecordMax);
}
