// simdc up --demo: a few volumes and VMs, so a newcomer sees a running
// datacenter at once. Safe to run again on the same data: what exists is kept.

import { computeService, storageService, type Bus } from "@simdc/bus";
import { SimdcError, wallClock, wallNowMs } from "@simdc/common";
import { simdc } from "@simdc/proto";
import { printTable, vmState } from "../output.js";
import { listAllVms } from "../paging.js";

import v1 = simdc.v1;

const demoVms = [
  { name: "web-1", vcpus: 2, memoryMib: 2048, bootVolume: "web-1-boot" },
  { name: "web-2", vcpus: 2, memoryMib: 2048, bootVolume: "web-2-boot" },
  { name: "db-1", vcpus: 4, memoryMib: 8192, bootVolume: "db-1-boot" },
];

const demoTimeoutMs = 30_000;

async function ignoreExisting(call: Promise<unknown>): Promise<void> {
  try {
    await call;
  } catch (err) {
    if (!(err instanceof SimdcError && err.code === "ALREADY_EXISTS")) throw err;
  }
}

export async function runDemo(bus: Bus, say: (line: string) => void): Promise<void> {
  say("demo: creating a boot volume and a VM for web-1, web-2 and db-1");
  for (const vm of demoVms) {
    await ignoreExisting(bus.call(storageService.CreateVolume, { name: vm.bootVolume, sizeMib: 256 }));
    await ignoreExisting(
      bus.call(computeService.CreateVm, {
        name: vm.name,
        spec: { vcpus: vm.vcpus, memoryMib: vm.memoryMib, bootVolume: vm.bootVolume },
      }),
    );
  }
  const deadline = wallNowMs() + demoTimeoutMs;
  let vms: v1.Vm.$Properties[] = [];
  while (wallNowMs() < deadline) {
    vms = (await listAllVms(bus)).filter((vm) => demoVms.some((d) => d.name === vm.id));
    if (vms.every((vm) => vm.status?.state === v1.VmState.VM_STATE_RUNNING)) break;
    await wallClock.sleep(100);
  }
  printTable(
    ["VM", "STATE", "HOST", "VCPUS", "MEMORY MIB", "BOOT VOLUME"],
    vms.map((vm) => [vm.id ?? "", vmState(vm.status?.state ?? 0), vm.hostId ?? "", String(vm.spec?.vcpus), String(vm.spec?.memoryMib), vm.spec?.bootVolume ?? ""]),
  );
  const running = vms.filter((vm) => vm.status?.state === v1.VmState.VM_STATE_RUNNING).length;
  say(`demo: ${running} of ${demoVms.length} VMs running. Try: simdc vm list; simdc events -w (in another terminal); simdc fault kill agent-1; simdc wait host host-1 --for disconnected; simdc experiment run agent-crash --short`);
}
