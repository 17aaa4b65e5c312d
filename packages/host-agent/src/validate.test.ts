// Proves the checks documents pass at the edge, without NATS: a good VM
// comes out typed, and each bad field is refused with INVALID_ARGUMENT naming
// that field, so an operator reading the refusal knows what the controller
// wrote wrong. (agent.test.ts proves that a refused document changes nothing.)

import { describe, expect, it } from "vitest";
import { simdc } from "@simdc/proto";
import { checkDesiredVm, checkPlan, memoryMibPerVmMax, vcpusPerVmMax } from "./mod.js";

import v1 = simdc.v1;

const good: v1.DesiredVm.$Properties = {
  vmId: "vm-1",
  incarnation: "inc-1",
  spec: { vcpus: 2, memoryMib: 1_024, bootVolume: "vol-1" },
  powerState: v1.PowerState.POWER_STATE_ON,
  generation: 3,
  bootVolume: { volumeId: "vol-1", sanNodeId: "san-1" },
};
const vm = (fields: Partial<v1.DesiredVm.$Properties>): v1.DesiredVm => v1.DesiredVm.create({ ...good, ...fields });
const doc = (fields: Partial<v1.HostDocument.$Properties>): v1.HostDocument =>
  v1.HostDocument.create({ hostId: "host-1", generation: 5, epoch: 2, stateId: "state-1", chunkIndex: 0, chunkCount: 1, vms: [good], ...fields });

describe("validate", () => {
  it("validate: a good VM comes out typed, and a document's chunks come out as one plan", () => {
    // The plan carries the first chunk's generation, epoch and state id and every chunk's VMs in order.
    expect(checkDesiredVm(vm({}))).toMatchObject({
      vmId: "vm-1",
      incarnation: "inc-1",
      spec: { vcpus: 2, memoryMib: 1_024, bootVolume: "vol-1" },
      boot: { volumeId: "vol-1", sanNodeId: "san-1" },
      powerState: v1.PowerState.POWER_STATE_ON,
      generation: 3,
    });
    // No node: the controller did not know the volume; the host will fail the boot, not the document.
    expect(checkDesiredVm(vm({ bootVolume: null })).boot).toEqual({ volumeId: "vol-1", sanNodeId: "" });
    const plan = checkPlan([doc({ chunkCount: 2 }), doc({ chunkIndex: 1, chunkCount: 2, vms: [{ ...good, vmId: "vm-2" }] })]);
    expect(plan).toMatchObject({ generation: 5, epoch: 2, stateId: "state-1" });
    expect(plan.vms.map((v) => v.vmId)).toEqual(["vm-1", "vm-2"]);
  });

  const badVms: { name: string; fields: Partial<v1.DesiredVm.$Properties>; field: RegExp }[] = [
    ...["vm.1", "*", ">", "VM-1", "-vm", "vm 1", "x".repeat(64), ""].map((vmId) => ({ name: `vm_id ${JSON.stringify(vmId)}`, fields: { vmId }, field: /vm_id/ })),
    { name: "no incarnation", fields: { incarnation: "" }, field: /incarnation/ },
    { name: "an incarnation of 65 characters", fields: { incarnation: "i".repeat(65) }, field: /incarnation/ },
    { name: "no spec", fields: { spec: null }, field: /spec/ },
    { name: "vcpus 0", fields: { spec: { ...good.spec, vcpus: 0 } }, field: /spec\.vcpus/ },
    { name: "vcpus over the limit", fields: { spec: { ...good.spec, vcpus: vcpusPerVmMax + 1 } }, field: /spec\.vcpus/ },
    { name: "fractional vcpus", fields: { spec: { ...good.spec, vcpus: 1.5 } }, field: /spec\.vcpus/ },
    { name: "memory 0", fields: { spec: { ...good.spec, memoryMib: 0 } }, field: /spec\.memory_mib/ },
    { name: "memory over the limit", fields: { spec: { ...good.spec, memoryMib: memoryMibPerVmMax + 1 } }, field: /spec\.memory_mib/ },
    ...["vol.1", "*", ">", ""].map((bootVolume) => ({ name: `boot_volume ${JSON.stringify(bootVolume)}`, fields: { spec: { ...good.spec, bootVolume } }, field: /spec\.boot_volume/ })),
    ...["san.1", "SAN-1", "*"].map((sanNodeId) => ({ name: `san_node_id ${JSON.stringify(sanNodeId)}`, fields: { bootVolume: { volumeId: "vol-1", sanNodeId } }, field: /san_node_id/ })),
    { name: "power state unspecified", fields: { powerState: v1.PowerState.POWER_STATE_UNSPECIFIED }, field: /power_state/ },
    { name: "power state unknown", fields: { powerState: 99 as v1.PowerState }, field: /power_state/ },
    { name: "generation 0", fields: { generation: 0 }, field: /generation/ },
  ];

  it.each(badVms)("validate: a VM with $name is refused INVALID_ARGUMENT naming the field", ({ fields, field }) => {
    // Each bad field alone is enough to refuse the VM, and the refusal says which field.
    let thrown: unknown;
    try {
      checkDesiredVm(vm(fields));
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toMatchObject({ code: "INVALID_ARGUMENT", message: expect.stringMatching(field) });
  });

  it("validate: a document with no chunk, generation 0, a repeated VM or a bad VM is refused whole", () => {
    // A plan is all or nothing: one bad VM refuses every VM of the document.
    expect(() => checkPlan([])).toThrow(expect.objectContaining({ code: "INVALID_ARGUMENT" }));
    expect(() => checkPlan([doc({ generation: 0 })])).toThrow(/generation/);
    expect(() => checkPlan([doc({ chunkCount: 2 }), doc({ chunkIndex: 1, chunkCount: 2 })])).toThrow(/vm-1 appears twice/);
    expect(() => checkPlan([doc({ vms: [good, { ...good, vmId: "vm-2", generation: 0 }] })])).toThrow(/vm-2: generation/);
  });
});
