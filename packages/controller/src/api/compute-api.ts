// ComputeService: create, read, list, delete, start and stop VMs. A change is
// acknowledged only after it is in KV; the host acts on it afterwards, driven
// by the reconciler, and the VM's status shows how far it got.

import { computeService, endpoint, type Endpoint } from "@simdc/bus";
import { alreadyExists, checkName, resourceExhausted } from "@simdc/common";
import { simdc } from "@simdc/proto";
import { placeVm, type PlacementHost } from "../placement/placement.js";
import type { ControllerState } from "../state.js";
import { page } from "./paging.js";
import { checkPowerState, checkVmSpec } from "./validate.js";

import v1 = simdc.v1;

/** The VM as the API shows it: desired state plus what its host reported. */
export function vmView(state: ControllerState, vm: v1.Vm): v1.Vm {
  const reported = state.observed.get(vm.id);
  let status: v1.VmStatus.$Properties;
  if (reported && reported.hostId === vm.hostId) {
    status = reported;
  } else {
    status = { vmId: vm.id, state: v1.VmState.VM_STATE_DEFINED, hostId: vm.hostId, observedGeneration: 0 };
  }
  if (!state.hosts.isConnected(vm.hostId)) {
    status = {
      ...status,
      state: v1.VmState.VM_STATE_UNKNOWN,
      reason: { code: v1.ErrorCode.ERROR_CODE_UNAVAILABLE, message: `host ${vm.hostId} is disconnected` },
    };
  }
  return v1.Vm.create({ ...vm, status });
}

export function placementHosts(state: ControllerState): PlacementHost[] {
  const out: PlacementHost[] = [];
  for (const host of state.hosts.all()) {
    const allocation = state.vms.allocation(host.id);
    out.push({
      id: host.id,
      connected: state.hosts.isConnected(host.id),
      pcpus: host.capacity?.pcpus ?? 0,
      memoryMib: host.capacity?.memoryMib ?? 0,
      allocatedVcpus: allocation.vcpus,
      allocatedMemoryMib: allocation.memoryMib,
      vmCount: allocation.vmCount,
      vmsMax: host.capacity?.vmsMax ?? 0,
    });
  }
  return out;
}

export function computeEndpoints(state: ControllerState): Endpoint<any, any>[] {
  const { vms, reconciler } = state;

  async function changePower(vmId: string, power: v1.PowerState): Promise<v1.Vm> {
    const { object: vm, revision } = vms.require(checkName("vm_id", vmId));
    if (vm.powerState === power) return vmView(state, vm);
    const changed = v1.Vm.create({ ...vm, powerState: power, generation: vm.generation + 1 });
    await vms.update(changed, revision);
    reconciler.enqueue(changed.id);
    return vmView(state, changed);
  }

  return [
    endpoint(computeService.CreateVm, async (req) => {
      const id = checkName("name", req.name);
      const spec = checkVmSpec(req.spec);
      const powerState = checkPowerState(req.powerState, v1.PowerState.POWER_STATE_ON);
      // Checked before placement so a duplicate never reports a capacity error.
      if (!vms.isFree(id)) throw alreadyExists(`vm ${id} exists already`);
      const placement = placeVm(placementHosts(state), spec, state.ratios);
      if (!placement.ok) {
        const detail = placement.rejected.slice(0, 4).map((r) => `${r.hostId}: ${r.reason}`).join("; ");
        throw resourceExhausted(detail ? `${placement.reason} (${detail})` : placement.reason);
      }
      const vm = v1.Vm.create({
        id,
        spec,
        powerState,
        generation: 1,
        hostId: placement.hostId,
        createdAtMs: state.clock.nowMs(),
      });
      await vms.create(vm);
      state.events.publish("vm", id, "created", v1.EventKind.EVENT_KIND_VM_CREATED, `vm ${id} placed on ${vm.hostId}`);
      reconciler.enqueue(id);
      return {
        vm: vmView(state, vm),
        placement: { hostId: placement.hostId, reason: placement.reason, rejected: placement.rejected },
      };
    }),
    endpoint(computeService.GetVm, (req) => ({ vm: vmView(state, vms.require(checkName("vm_id", req.vmId)).object) })),
    endpoint(computeService.ListVms, (req) => {
      const hostId = req.hostId ? checkName("host_id", req.hostId) : "";
      const selected = hostId ? [...vms.onTarget(hostId)].map((id) => vms.require(id).object) : vms.all();
      const { items, nextPageToken } = page(selected, req);
      return { vms: items.map((vm) => vmView(state, vm)), nextPageToken };
    }),
    endpoint(computeService.DeleteVm, async (req) => {
      const vm = await vms.delete(checkName("vm_id", req.vmId));
      state.events.publish("vm", vm.id, "deleted", v1.EventKind.EVENT_KIND_VM_DELETED, `vm ${vm.id} deleted`);
      reconciler.enqueue(vm.id);
      return {};
    }),
    endpoint(computeService.StartVm, async (req) => ({ vm: await changePower(req.vmId, v1.PowerState.POWER_STATE_ON) })),
    endpoint(computeService.StopVm, async (req) => ({ vm: await changePower(req.vmId, v1.PowerState.POWER_STATE_OFF) })),
  ];
}
