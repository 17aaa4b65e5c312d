// ComputeService: create, read, list, delete, start and stop VMs. A change is
// acknowledged once it is in KV (and the lease confirmed); the host realizes
// it from its document afterwards, and the VM's status shows how far it got.

import { computeService, endpoint, type Endpoint } from "@simdc/bus";
import { alreadyExists, checkName, failedPrecondition, invalidArgument, notFound, resourceExhausted, uniqueId } from "@simdc/common";
import { simdc } from "@simdc/proto";
import type { ControllerState } from "../state.js";
import { withRequestId } from "../store/kinds.js";
import { mutate } from "./mutation.js";
import { page, pageOf } from "./paging.js";
import { checkPowerState, checkVmResources, checkVmSpec } from "./validate.js";
import { nicsPerVmMax } from "../network/logical-ports.js";
import { placementRequestOf } from "../placement/placement.js";

import v1 = simdc.v1;

const unknownReason = (message: string): v1.Status.$Properties => ({ code: v1.ErrorCode.ERROR_CODE_UNAVAILABLE, message });

/**
 * The VM as the API shows it: desired state plus what its host reported.
 * It never shows a state the host has not reported: UNKNOWN until the
 * controller has heard the host's state, DEFINED until the host holds this
 * incarnation.
 */
export function vmView(state: ControllerState, vm: v1.Vm): v1.Vm {
  const hostId = vm.hostId;
  const heard = state.observed.get(hostId, vm.id);
  const reported = heard && heard.incarnation === vm.incarnation ? heard : undefined;
  // What the host realized last stays known while nobody knows its state now.
  const base = { vmId: vm.id, hostId, incarnation: vm.incarnation, observedGeneration: reported?.observedGeneration ?? 0 };
  let status: v1.VmStatus.$Properties;
  if (!state.hosts.isConnected(hostId)) {
    status = { ...base, state: v1.VmState.VM_STATE_UNKNOWN, reason: unknownReason(`host ${hostId} is disconnected`) };
  } else if (!state.observed.isComplete(hostId)) {
    status = { ...base, state: v1.VmState.VM_STATE_UNKNOWN, reason: unknownReason(`not heard from host ${hostId} since this controller started`) };
  } else {
    status = reported ?? { ...base, state: v1.VmState.VM_STATE_DEFINED };
  }
  return v1.Vm.create({ ...vm, status });
}

function hasRequest(record: v1.VmRecord | undefined, requestId: string): boolean {
  return record !== undefined && record.requestIds.includes(requestId);
}

export function computeEndpoints(state: ControllerState): Endpoint<any, any>[] {
  const { vms } = state;

  /** The live VM. @throws SimdcError NOT_FOUND. */
  function requireVm(vmId: string): { vm: v1.Vm; record: v1.VmRecord; revision: number } {
    const id = checkName("vm_id", vmId);
    const entry = vms.entry(id);
    if (!entry || entry.value.deleted || !entry.value.vm) throw notFound(`vm ${id} not found`);
    return { vm: entry.value.vm as v1.Vm, record: entry.value, revision: entry.revision };
  }

  async function changePower(vmId: string, power: v1.PowerState, requestId: string): Promise<{ response: { vm: v1.Vm }; hosts: string[] }> {
    const { vm, record, revision } = requireVm(vmId);
    if (vm.powerState === power) return { response: { vm: vmView(state, vm) }, hosts: [vm.hostId] };
    const changed = v1.Vm.create({ ...vm, powerState: power, generation: vm.generation + 1 });
    await vms.records.write(vm.id, v1.VmRecord.create({ vm: changed, requestIds: withRequestId(record.requestIds, requestId) }), revision);
    state.crash.reach("record-stored");
    return { response: { vm: vmView(state, changed) }, hosts: [vm.hostId] };
  }

  function replayPower(vmId: string) {
    return (requestId: string) => {
      const entry = vms.entry(vmId);
      return hasRequest(entry?.value, requestId) && entry?.value.vm && !entry.value.deleted ? { vm: vmView(state, entry.value.vm as v1.Vm) } : undefined;
    };
  }

  /** The VM's NICs, when it has eth<index>. @throws SimdcError NOT_FOUND. */
  function nicsHaving(vm: v1.Vm, index: number): v1.INicSpec[] {
    const held = vm.spec?.nics ?? [];
    if (index >= held.length) throw notFound(`vm ${vm.id} has no eth${index} (it has ${held.length} NIC${held.length === 1 ? "" : "s"})`);
    return held;
  }

  /** A VM with its NICs changed, written at the next generation. */
  async function changeNics(vmId: string, requestId: string, change: (vm: v1.Vm) => { nics: v1.INicSpec[]; release?: () => void }): Promise<{ response: { vm: v1.Vm }; hosts: string[] }> {
    const { vm, record, revision } = requireVm(vmId);
    const { nics, release } = change(vm);
    try {
      const changed = v1.Vm.create({ ...vm, spec: v1.VmSpec.create({ ...vm.spec, nics }), generation: vm.generation + 1 });
      await vms.records.write(vm.id, v1.VmRecord.create({ vm: changed, requestIds: withRequestId(record.requestIds, requestId) }), revision);
      state.crash.reach("record-stored");
      return { response: { vm: vmView(state, changed) }, hosts: [vm.hostId] };
    } finally {
      release?.();
    }
  }

  /**
   * A VM's reservations may grow only into what its host has unreserved (a
   * reservation is a guarantee, never overcommitted).
   * @throws SimdcError RESOURCE_EXHAUSTED.
   */
  function checkReservationsFit(hostId: string, before: v1.VmSpec, after: v1.VmSpec): void {
    const host = state.hosts.get(hostId);
    const allocation = vms.allocation(hostId);
    const grownMhz = (after.cpu?.reservation ?? 0) - (before.cpu?.reservation ?? 0);
    const capacityMhz = (host?.capacity?.pcpus ?? 0) * (host?.capacity?.coreMhz ?? 0);
    if (grownMhz > 0 && allocation.reservedMhz + grownMhz > capacityMhz) {
      throw resourceExhausted(`host ${hostId} has ${Math.max(0, capacityMhz - allocation.reservedMhz)} MHz unreserved, not ${grownMhz} more`);
    }
    const grownMib = (after.memory?.reservation ?? 0) - (before.memory?.reservation ?? 0);
    const memoryMib = host?.capacity?.memoryMib ?? 0;
    if (grownMib > 0 && allocation.reservedMib + grownMib > memoryMib) {
      throw resourceExhausted(`host ${hostId} has ${Math.max(0, memoryMib - allocation.reservedMib)} MiB of memory unreserved, not ${grownMib} more`);
    }
  }

  return [
    endpoint(computeService.AttachNic, (req) =>
      mutate(
        state,
        computeService.AttachNic,
        req,
        (requestId) =>
          changeNics(req.vmId, requestId, (vm) => {
            if (!req.nic) throw invalidArgument("nic is required");
            const held = vm.spec?.nics ?? [];
            if (held.length >= nicsPerVmMax) throw invalidArgument(`vm ${vm.id} has ${held.length} NICs, the most a VM may have`);
            const added = state.ports.assign(vm.id, vm.hostId, [v1.NicSpec.create({ ...req.nic, ofport: 0 })], state.networks, state.securityGroups, () => state.macRandom.next());
            return { nics: [...held, ...added.nics], release: added.release };
          }),
        replayPower(req.vmId),
      ),
    ),
    endpoint(computeService.DetachNic, (req) =>
      mutate(
        state,
        computeService.DetachNic,
        req,
        (requestId) =>
          changeNics(req.vmId, requestId, (vm) => {
            const held = nicsHaving(vm, req.index);
            return { nics: held.filter((_, i) => i !== req.index) };
          }),
        replayPower(req.vmId),
      ),
    ),
    endpoint(computeService.SetNicSecurityGroups, (req) =>
      mutate(
        state,
        computeService.SetNicSecurityGroups,
        req,
        (requestId) =>
          changeNics(req.vmId, requestId, (vm) => {
            const held = nicsHaving(vm, req.index);
            const securityGroups = state.securityGroups.checkNicGroups(req.securityGroups, `eth${req.index}`);
            return { nics: held.map((nic, i) => (i === req.index ? v1.NicSpec.create({ ...nic, securityGroups }) : nic)) };
          }),
        replayPower(req.vmId),
      ),
    ),
    endpoint(computeService.UpdateNic, (req) =>
      mutate(
        state,
        computeService.UpdateNic,
        req,
        (requestId) =>
          changeNics(req.vmId, requestId, (vm) => {
            const held = nicsHaving(vm, req.index);
            const current = held[req.index]!;
            const network = req.network || current.network;
            const wanted = v1.NicSpec.create({
              network,
              mac: req.mac || current.mac,
              // Its address goes with it only while it stays on its network.
              ip: req.ip || (network === current.network ? current.ip : ""),
              securityGroups: current.securityGroups,
            });
            const changed = state.ports.assign(vm.id, vm.hostId, [wanted], state.networks, state.securityGroups, () => state.macRandom.next(), current, () => `eth${req.index}`);
            return { nics: held.map((nic, i) => (i === req.index ? changed.nics[0]! : nic)), release: changed.release };
          }),
        replayPower(req.vmId),
      ),
    ),
    endpoint(computeService.SetVmResources, (req) =>
      mutate(
        state,
        computeService.SetVmResources,
        req,
        async (requestId) => {
          const { vm, record, revision } = requireVm(req.vmId);
          const spec = v1.VmSpec.create(vm.spec ?? {});
          const given = checkVmResources(req, spec.vcpus, spec.memoryMib);
          const changed = v1.VmSpec.create({ ...spec, ...given });
          checkReservationsFit(vm.hostId, spec, changed);
          const next = v1.Vm.create({ ...vm, spec: changed, generation: vm.generation + 1 });
          await vms.records.write(vm.id, v1.VmRecord.create({ vm: next, requestIds: withRequestId(record.requestIds, requestId) }), revision);
          state.crash.reach("record-stored");
          return { response: { vm: vmView(state, next) }, hosts: [vm.hostId] };
        },
        replayPower(req.vmId),
      ),
    ),
    endpoint(computeService.CreateVm, (req) =>
      mutate(
        state,
        computeService.CreateVm,
        req,
        async (requestId) => {
          const id = checkName("name", req.name);
          const spec = checkVmSpec(req.spec);
          const powerState = checkPowerState(req.powerState, v1.PowerState.POWER_STATE_ON);
          // Checked before placement so a duplicate never reports a capacity error.
          if (!vms.isFree(id)) throw alreadyExists(`vm ${id} exists already`);
          // VMs and external endpoints are both guests of a vswitch, named in one space.
          if (state.endpoints.get(id)) throw alreadyExists(`${id} is an external endpoint's name`);
          const boot = state.volumes.get(spec.bootVolume);
          if (!boot) throw notFound(`boot volume ${spec.bootVolume} does not exist`);
          if (boot.state === v1.VolumeState.VOLUME_STATE_DELETING || boot.state === v1.VolumeState.VOLUME_STATE_FAILED) {
            throw failedPrecondition(`boot volume ${spec.bootVolume} is ${v1.VolumeState[boot.state]!.replace("VOLUME_STATE_", "").toLowerCase()}`);
          }
          const placement = state.ranking.place(placementRequestOf(spec));
          if (!placement.ok) {
            const detail = placement.rejected.slice(0, 4).map((r) => `${r.hostId}: ${r.reason}`).join("; ");
            throw resourceExhausted(detail ? `${placement.reason} (${detail})` : placement.reason);
          }
          const explained = v1.Placement.create({ hostId: placement.hostId, reason: placement.reason, rejected: placement.rejected });
          // Addresses are taken last, once nothing else can refuse the create, and held until the record is written.
          const nics = state.ports.assign(id, placement.hostId, spec.nics, state.networks, state.securityGroups, () => state.macRandom.next());
          const vm = v1.Vm.create({
            id,
            spec: v1.VmSpec.create({ ...spec, nics: nics.nics }),
            powerState,
            generation: 1,
            hostId: placement.hostId,
            createdAtMs: state.clock.nowMs(),
            incarnation: uniqueId(),
            placement: explained,
          });
          const release = vms.reserve(vm);
          try {
            // A tombstone of an earlier VM of this name is replaced; the new one is a new incarnation.
            await vms.records.write(id, v1.VmRecord.create({ vm, requestIds: withRequestId([], requestId) }), vms.entry(id)?.revision);
          } finally {
            release();
            nics.release();
          }
          state.crash.reach("record-stored");
          state.events.publish("vm", id, "created", v1.EventKind.EVENT_KIND_VM_CREATED, `vm ${id} placed on ${vm.hostId}`);
          return { response: { vm: vmView(state, vm), placement: explained }, hosts: [vm.hostId] };
        },
        (requestId) => {
          const entry = vms.entry(req.name);
          const vm = entry?.value.vm;
          return hasRequest(entry?.value, requestId) && vm && !entry.value.deleted ? { vm: vmView(state, vm as v1.Vm), placement: vm.placement } : undefined;
        },
      ),
    ),
    endpoint(computeService.GetVm, (req) => ({ vm: vmView(state, requireVm(req.vmId).vm) })),
    endpoint(computeService.ListVms, (req) => {
      const hostId = req.hostId ? checkName("host_id", req.hostId) : "";
      // A host nobody registered is a typo or a stale name, not a host with no VMs.
      if (hostId && !state.hosts.get(hostId)) throw notFound(`no host ${hostId} is registered`);
      const { ids, nextPageToken } = hostId ? pageOf([...vms.onTarget(hostId)], req) : page(vms, req);
      const out: v1.Vm[] = [];
      for (const id of ids) {
        const vm = vms.get(id);
        if (vm) out.push(vmView(state, vm));
      }
      return { vms: out, nextPageToken };
    }),
    endpoint(computeService.DeleteVm, (req) =>
      mutate(
        state,
        computeService.DeleteVm,
        req,
        async (requestId) => {
          const { vm, record, revision } = requireVm(req.vmId);
          const tombstone = v1.VmRecord.create({ vm, deleted: true, deletedAtMs: state.clock.nowMs(), requestIds: withRequestId(record.requestIds, requestId) });
          await vms.records.write(vm.id, tombstone, revision);
          state.crash.reach("record-stored");
          state.events.publish("vm", vm.id, "deleted", v1.EventKind.EVENT_KIND_VM_DELETED, `vm ${vm.id} deleted`);
          return { response: {}, hosts: [vm.hostId] };
        },
        (requestId) => (hasRequest(vms.entry(req.vmId)?.value, requestId) && vms.entry(req.vmId)?.value.deleted ? {} : undefined),
      ),
    ),
    endpoint(computeService.StartVm, (req) =>
      mutate(state, computeService.StartVm, req, (id) => changePower(req.vmId, v1.PowerState.POWER_STATE_ON, id), replayPower(req.vmId)),
    ),
    endpoint(computeService.StopVm, (req) =>
      mutate(state, computeService.StopVm, req, (id) => changePower(req.vmId, v1.PowerState.POWER_STATE_OFF, id), replayPower(req.vmId)),
    ),
  ];
}
