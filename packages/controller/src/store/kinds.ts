// The two kinds of desired state the controller keeps, and what each
// promises its placement target: VMs promise vCPUs and memory to a host,
// volumes promise their size to a SAN node.

import { simdc } from "@simdc/proto";
import type { StoreKind } from "./desired-store.js";

import v1 = simdc.v1;

export interface HostAllocation {
  vcpus: number;
  memoryMib: number;
  vmCount: number;
}

export interface SanAllocation {
  sizeMib: number;
  volumeCount: number;
}

export const vmKind: StoreKind<v1.Vm, HostAllocation> = {
  bucket: "vms",
  noun: "vm",
  type: v1.Vm,
  placementOf: (vm) => vm.hostId,
  emptyAllocation: () => ({ vcpus: 0, memoryMib: 0, vmCount: 0 }),
  account(a, vm, sign) {
    a.vcpus += sign * (vm.spec?.vcpus ?? 0);
    a.memoryMib += sign * (vm.spec?.memoryMib ?? 0);
    a.vmCount += sign;
  },
};

export const volumeKind: StoreKind<v1.Volume, SanAllocation> = {
  bucket: "volumes",
  noun: "volume",
  type: v1.Volume,
  placementOf: (volume) => volume.sanNodeId,
  emptyAllocation: () => ({ sizeMib: 0, volumeCount: 0 }),
  account(a, volume, sign) {
    a.sizeMib += sign * volume.sizeMib;
    a.volumeCount += sign;
  },
};
