// Proves that every controller endpoint answers bad input (a malformed
// protobuf, an empty message, an unknown id, an out-of-range value, a
// malformed request id or wait, an id in the subject that the payload
// contradicts, an impossible request) with the right typed error and
// changes nothing: no KV revision moves, no event is published, and the
// controller process keeps running and serving.

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect, type NatsConnection } from "nats";
import { computeService, controllerService, hostService, storageService, type Bus, type RpcMethod } from "@simdc/bus";
import { simdc } from "@simdc/proto";
import {
  connectTestBus,
  eventually,
  startService,
  startTestNats,
  StandInHost,
  StandInSanNode,
  type TestNats,
  type TestService,
} from "@simdc/testkit";

import v1 = simdc.v1;

let nats: TestNats;
let bus: Bus;
let raw: NatsConnection;
let controller: TestService;
let host: StandInHost;
let san: StandInSanNode;

const garbage = new Uint8Array([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]);
const empty = new Uint8Array();
const spec = { vcpus: 1, memoryMib: 64, bootVolume: "vol-1" };
const capacity = { pcpus: 1, memoryMib: 1 };

interface Case {
  name: string;
  method: RpcMethod<any, any>;
  /** Raw bytes, or a message to encode. */
  body: Uint8Array | Record<string, unknown>;
  /** The last subject token of an api-by-id method (the caller's id); "host-9" when absent. */
  callerId?: string;
  code: number;
  error: RegExp;
}

const rpcs: RpcMethod<any, any>[] = [hostService, controllerService, computeService, storageService].flatMap((s) => Object.values(s));
/** Endpoints for which an empty message is a valid request (everything optional). */
const emptyIsValid = new Set(["ListHosts", "ListVms", "ListVolumes", "ListSanNodes", "GetControllerStatus", "GetSyncStatus"]);
const mutating = [
  { method: computeService.CreateVm, body: { name: "vm-9", spec } },
  { method: computeService.DeleteVm, body: { vmId: "vm-1" } },
  { method: computeService.StartVm, body: { vmId: "vm-1" } },
  { method: computeService.StopVm, body: { vmId: "vm-1" } },
  { method: computeService.SetVmResources, body: { vmId: "vm-1", workload: { kind: "batch" } } },
  { method: storageService.CreateVolume, body: { name: "vol-9", sizeMib: 1 } },
  { method: storageService.DeleteVolume, body: { volumeId: "vol-2" } },
];

const cases: Case[] = [
  ...rpcs.flatMap((method): Case[] => [
    { name: `${method.method} malformed`, method, body: garbage, code: 400, error: /^INVALID_ARGUMENT: malformed simdc\.v1\.\w+Request/ },
    ...(emptyIsValid.has(method.method) ? [] : [{ name: `${method.method} empty`, method, body: empty, code: 400, error: /^INVALID_ARGUMENT: / }]),
  ]),
  // Every changing call checks its mutation options before it acts.
  ...mutating.flatMap(({ method, body }): Case[] => [
    { name: `${method.method} request id with a space`, method, body: { ...body, mutation: { requestId: "a b" } }, code: 400, error: /^INVALID_ARGUMENT: request_id must be/ },
    { name: `${method.method} request id too long`, method, body: { ...body, mutation: { requestId: "x".repeat(65) } }, code: 400, error: /^INVALID_ARGUMENT: request_id must be/ },
    { name: `${method.method} unknown wait`, method, body: { ...body, mutation: { wait: 42 } }, code: 400, error: /^INVALID_ARGUMENT: mutation.wait 42 is not a known WaitFor/ },
  ]),
  // HostService
  { name: "RegisterHost id with a dot", method: hostService.RegisterHost, body: { hostId: "h.1", agentId: "a", capacity, bootId: "b" }, code: 400, error: /^INVALID_ARGUMENT: host_id "h.1" differs from the id in the subject \(host-9\)/ },
  { name: "RegisterHost wildcard id", method: hostService.RegisterHost, body: { hostId: "*", agentId: "a", capacity, bootId: "b" }, code: 400, error: /host_id "\*" differs/ },
  { name: "RegisterHost another host's id", method: hostService.RegisterHost, body: { hostId: "host-1", agentId: "agent-host-1", capacity, bootId: "b" }, code: 400, error: /host_id "host-1" differs from the id in the subject \(host-9\)/ },
  { name: "RegisterHost bad id in the subject", method: hostService.RegisterHost, callerId: "Host_9", body: { hostId: "Host_9", agentId: "a", capacity, bootId: "b" }, code: 400, error: /^INVALID_ARGUMENT: the subject's id "Host_9" is not a valid name/ },
  { name: "RegisterHost bad agent id", method: hostService.RegisterHost, body: { hostId: "host-9", agentId: "a.b", capacity, bootId: "b" }, code: 400, error: /agent_id/ },
  { name: "RegisterHost no capacity", method: hostService.RegisterHost, body: { hostId: "host-9", agentId: "a", bootId: "b" }, code: 400, error: /capacity is required/ },
  { name: "RegisterHost zero pcpus", method: hostService.RegisterHost, body: { hostId: "host-9", agentId: "a", capacity: { pcpus: 0, memoryMib: 1 }, bootId: "b" }, code: 400, error: /capacity.pcpus/ },
  { name: "RegisterHost huge memory", method: hostService.RegisterHost, body: { hostId: "host-9", agentId: "a", capacity: { pcpus: 1, memoryMib: 0xffffffff }, bootId: "b" }, code: 400, error: /capacity.memory_mib/ },
  { name: "RegisterHost no boot id", method: hostService.RegisterHost, body: { hostId: "host-9", agentId: "a", capacity }, code: 400, error: /boot_id/ },
  { name: "RegisterHost boot id too long", method: hostService.RegisterHost, body: { hostId: "host-9", agentId: "a", capacity, bootId: "b".repeat(65) }, code: 400, error: /boot_id must be 1-64 characters/ },
  { name: "RegisterHost an id another live agent holds", method: hostService.RegisterHost, callerId: "host-1", body: { hostId: "host-1", agentId: "agent-x", capacity, bootId: "b" }, code: 412, error: /^FAILED_PRECONDITION: host host-1 is held by agent agent-host-1, which is alive/ },
  { name: "ProbeController as another host", method: hostService.ProbeController, body: { hostId: "host-1" }, code: 400, error: /host_id "host-1" differs from the id in the subject \(host-9\)/ },
  { name: "PacketIn as another host", method: hostService.PacketIn, body: { hostId: "host-1", segmentId: 1, dlDst: "02:00:00:00:00:01" }, code: 400, error: /host_id "host-1" differs/ },
  { name: "PacketIn bad MAC", method: hostService.PacketIn, body: { hostId: "host-9", segmentId: 1, dlDst: "02:00:00:00:01" }, code: 400, error: /^INVALID_ARGUMENT: dl_dst "02:00:00:00:01" is not a MAC address/ },
  { name: "PacketIn unknown segment", method: hostService.PacketIn, body: { hostId: "host-9", segmentId: 4242, dlDst: "02:00:00:00:00:01" }, code: 404, error: /^NOT_FOUND: no network has segment 4242/ },
  { name: "ListHosts page too big", method: hostService.ListHosts, body: { pageSize: 2001 }, code: 400, error: /page_size/ },
  { name: "ListHosts bad page token", method: hostService.ListHosts, body: { pageToken: "a>" }, code: 400, error: /page_token/ },
  { name: "GetHost unknown", method: hostService.GetHost, body: { hostId: "host-404" }, code: 404, error: /^NOT_FOUND: host host-404 not found/ },
  { name: "GetHost '>'", method: hostService.GetHost, body: { hostId: ">" }, code: 400, error: /host_id/ },
  { name: "GetSyncStatus a generation never assigned", method: hostService.GetSyncStatus, body: { waitHosts: true, generation: 1_000_000, waitTimeoutMs: 200 }, code: 400, error: /^INVALID_ARGUMENT: generation 1000000 was never assigned/ },
  // ComputeService
  { name: "CreateVm path name", method: computeService.CreateVm, body: { name: "../x", spec }, code: 400, error: /name/ },
  { name: "CreateVm upper-case name", method: computeService.CreateVm, body: { name: "VM-9", spec }, code: 400, error: /name "VM-9" is not a valid name/ },
  { name: "CreateVm no spec", method: computeService.CreateVm, body: { name: "vm-9" }, code: 400, error: /spec is required/ },
  { name: "CreateVm zero vcpus", method: computeService.CreateVm, body: { name: "vm-9", spec: { ...spec, vcpus: 0 } }, code: 400, error: /spec.vcpus/ },
  { name: "CreateVm huge vcpus", method: computeService.CreateVm, body: { name: "vm-9", spec: { ...spec, vcpus: 100000 } }, code: 400, error: /spec.vcpus/ },
  { name: "CreateVm zero memory", method: computeService.CreateVm, body: { name: "vm-9", spec: { ...spec, memoryMib: 0 } }, code: 400, error: /spec.memory_mib/ },
  { name: "CreateVm no boot volume", method: computeService.CreateVm, body: { name: "vm-9", spec: { ...spec, bootVolume: "" } }, code: 400, error: /boot_volume/ },
  { name: "CreateVm unknown boot volume", method: computeService.CreateVm, body: { name: "vm-9", spec: { ...spec, bootVolume: "vol-404" } }, code: 404, error: /^NOT_FOUND: boot volume vol-404 does not exist/ },
  { name: "CreateVm unknown power state", method: computeService.CreateVm, body: { name: "vm-9", spec, powerState: 42 }, code: 400, error: /power_state 42/ },
  { name: "CreateVm NIC on an unknown network", method: computeService.CreateVm, body: { name: "vm-9", spec: { ...spec, nics: [{ network: "nosuch" }] } }, code: 404, error: /^NOT_FOUND: nics\[0\]: network nosuch does not exist/ },
  { name: "CreateVm NIC with a bad network name", method: computeService.CreateVm, body: { name: "vm-9", spec: { ...spec, nics: [{ network: "A B" }] } }, code: 400, error: /nics\[0\]\.network/ },
  { name: "CreateVm unknown shares level", method: computeService.CreateVm, body: { name: "vm-9", spec: { ...spec, cpu: { sharesLevel: 9 } } }, code: 400, error: /^INVALID_ARGUMENT: spec.cpu.shares_level 9 is not a known SharesLevel/ },
  { name: "CreateVm custom shares of 0", method: computeService.CreateVm, body: { name: "vm-9", spec: { ...spec, cpu: { sharesLevel: 4, shares: 0 } } }, code: 400, error: /^INVALID_ARGUMENT: spec.cpu.shares/ },
  { name: "CreateVm shares with a preset", method: computeService.CreateVm, body: { name: "vm-9", spec: { ...spec, memory: { sharesLevel: 3, shares: 5 } } }, code: 400, error: /spec.memory.shares is given only with shares_level CUSTOM/ },
  { name: "CreateVm CPU limit below its reservation", method: computeService.CreateVm, body: { name: "vm-9", spec: { ...spec, cpu: { reservation: 100, limit: 50 } } }, code: 400, error: /spec.cpu.limit 50 MHz is below its reservation 100 MHz/ },
  { name: "CreateVm memory reservation above its memory", method: computeService.CreateVm, body: { name: "vm-9", spec: { ...spec, memory: { reservation: 65 } } }, code: 400, error: /spec.memory.reservation \(MiB\)/ },
  { name: "CreateVm memory limit", method: computeService.CreateVm, body: { name: "vm-9", spec: { ...spec, memory: { limit: 32 } } }, code: 400, error: /spec.memory.limit is not modelled/ },
  { name: "CreateVm unknown workload", method: computeService.CreateVm, body: { name: "vm-9", spec: { ...spec, workload: { kind: "mining" } } }, code: 400, error: /^INVALID_ARGUMENT: workload.kind: unknown kind "mining"/ },
  { name: "CreateVm workload parameter out of range", method: computeService.CreateVm, body: { name: "vm-9", spec: { ...spec, workload: { kind: "web", params: { cpuMean: 2 } } } }, code: 400, error: /^INVALID_ARGUMENT: workload.params.cpuMean/ },
  { name: "CreateVm workload parameter its kind does not take", method: computeService.CreateVm, body: { name: "vm-9", spec: { ...spec, workload: { kind: "batch", params: { peakCpu: 1 } } } }, code: 400, error: /^INVALID_ARGUMENT: workload.params.peakCpu/ },
  { name: "CreateVm a CPU reservation no host can give", method: computeService.CreateVm, body: { name: "vm-9", spec: { ...spec, cpu: { reservation: 100 } } }, code: 429, error: /CPU reservation: 0\+100 MHz > / },
  { name: "SetVmResources unknown VM", method: computeService.SetVmResources, body: { vmId: "vm-404", workload: { kind: "batch" } }, code: 404, error: /^NOT_FOUND: vm vm-404 not found/ },
  { name: "SetVmResources unknown workload", method: computeService.SetVmResources, body: { vmId: "vm-1", workload: { kind: "mining" } }, code: 400, error: /workload.kind: unknown kind "mining"/ },
  { name: "SetVmResources a reservation its host cannot give", method: computeService.SetVmResources, body: { vmId: "vm-1", cpu: { reservation: 100 } }, code: 429, error: /^RESOURCE_EXHAUSTED: host host-1 has 0 MHz unreserved, not 100 more/ },
  { name: "CreateVm nine NICs", method: computeService.CreateVm, body: { name: "vm-9", spec: { ...spec, nics: Array.from({ length: 9 }, () => ({ network: "n" })) } }, code: 400, error: /at most 8 NICs/ },
  { name: "AttachNic unknown VM", method: computeService.AttachNic, body: { vmId: "vm-404", nic: { network: "n" } }, code: 404, error: /^NOT_FOUND: vm vm-404 not found/ },
  { name: "AttachNic no NIC", method: computeService.AttachNic, body: { vmId: "vm-1" }, code: 400, error: /^INVALID_ARGUMENT: nic is required/ },
  { name: "AttachNic unknown network", method: computeService.AttachNic, body: { vmId: "vm-1", nic: { network: "nosuch" } }, code: 404, error: /network nosuch does not exist/ },
  { name: "DetachNic unknown VM", method: computeService.DetachNic, body: { vmId: "vm-404" }, code: 404, error: /^NOT_FOUND: vm vm-404 not found/ },
  { name: "DetachNic a NIC the VM does not have", method: computeService.DetachNic, body: { vmId: "vm-1", index: 3 }, code: 404, error: /^NOT_FOUND: vm vm-1 has no eth3 \(it has 0 NICs\)/ },
  { name: "SetNicSecurityGroups unknown VM", method: computeService.SetNicSecurityGroups, body: { vmId: "vm-404", securityGroups: ["web"] }, code: 404, error: /^NOT_FOUND: vm vm-404 not found/ },
  { name: "SetNicSecurityGroups a NIC the VM does not have", method: computeService.SetNicSecurityGroups, body: { vmId: "vm-1", index: 0, securityGroups: [] }, code: 404, error: /^NOT_FOUND: vm vm-1 has no eth0 \(it has 0 NICs\)/ },
  { name: "UpdateNic unknown VM", method: computeService.UpdateNic, body: { vmId: "vm-404", network: "n" }, code: 404, error: /^NOT_FOUND: vm vm-404 not found/ },
  { name: "UpdateNic a NIC the VM does not have", method: computeService.UpdateNic, body: { vmId: "vm-1", index: 2, ip: "10.0.0.9" }, code: 404, error: /^NOT_FOUND: vm vm-1 has no eth2 \(it has 0 NICs\)/ },
  { name: "CreateVm existing name", method: computeService.CreateVm, body: { name: "vm-1", spec }, code: 409, error: /^ALREADY_EXISTS: vm vm-1 exists already/ },
  { name: "CreateVm nothing fits", method: computeService.CreateVm, body: { name: "vm-9", spec: { ...spec, vcpus: 100 } }, code: 429, error: /^RESOURCE_EXHAUSTED: no host fits 100 vCPUs and 64 MiB: all 1 hosts were filtered out \(host-1: width: 100 vCPUs > \d+ logical CPUs/ },
  { name: "GetVm unknown", method: computeService.GetVm, body: { vmId: "vm-404" }, code: 404, error: /^NOT_FOUND: vm vm-404 not found/ },
  { name: "ListVms of an unknown host", method: computeService.ListVms, body: { hostId: "host-404" }, code: 404, error: /^NOT_FOUND: no host host-404 is registered/ },
  { name: "ListVms bad host filter", method: computeService.ListVms, body: { hostId: "a b" }, code: 400, error: /host_id/ },
  { name: "ListVms page too big", method: computeService.ListVms, body: { pageSize: 100_000 }, code: 400, error: /page_size/ },
  { name: "ListVms bad page token", method: computeService.ListVms, body: { pageToken: "x>y" }, code: 400, error: /page_token/ },
  { name: "ListVms on a host, page too big", method: computeService.ListVms, body: { hostId: "host-1", pageSize: 100_000 }, code: 400, error: /page_size/ },
  { name: "DeleteVm unknown", method: computeService.DeleteVm, body: { vmId: "vm-404" }, code: 404, error: /^NOT_FOUND: vm vm-404 not found/ },
  { name: "StartVm unknown", method: computeService.StartVm, body: { vmId: "vm-404" }, code: 404, error: /^NOT_FOUND/ },
  { name: "StopVm star", method: computeService.StopVm, body: { vmId: "vm.*" }, code: 400, error: /vm_id/ },
  // StorageService
  { name: "CreateVolume path name", method: storageService.CreateVolume, body: { name: "../x", sizeMib: 1 }, code: 400, error: /name/ },
  { name: "CreateVolume zero size", method: storageService.CreateVolume, body: { name: "vol-9", sizeMib: 0 }, code: 400, error: /size_mib/ },
  { name: "CreateVolume over the size limit", method: storageService.CreateVolume, body: { name: "vol-9", sizeMib: 0xffffffff }, code: 400, error: /size_mib/ },
  { name: "CreateVolume existing", method: storageService.CreateVolume, body: { name: "vol-1", sizeMib: 1 }, code: 409, error: /^ALREADY_EXISTS: volume vol-1 exists already/ },
  { name: "CreateVolume too big for any node", method: storageService.CreateVolume, body: { name: "vol-9", sizeMib: 1_000_000 }, code: 429, error: /^RESOURCE_EXHAUSTED: no connected, writable SAN node has 1000000 MiB free/ },
  { name: "GetVolume unknown", method: storageService.GetVolume, body: { volumeId: "vol-404" }, code: 404, error: /^NOT_FOUND: volume vol-404 not found/ },
  { name: "GetVolume bad id", method: storageService.GetVolume, body: { volumeId: "vol 1" }, code: 400, error: /volume_id/ },
  { name: "ListVolumes page too big", method: storageService.ListVolumes, body: { pageSize: 2001 }, code: 400, error: /page_size/ },
  { name: "ListVolumes bad page token", method: storageService.ListVolumes, body: { pageToken: "*" }, code: 400, error: /page_token/ },
  { name: "DeleteVolume unknown", method: storageService.DeleteVolume, body: { volumeId: "vol-404" }, code: 404, error: /^NOT_FOUND/ },
  { name: "DeleteVolume in use", method: storageService.DeleteVolume, body: { volumeId: "vol-1" }, code: 412, error: /^FAILED_PRECONDITION: volume vol-1 is the boot volume of vm-1/ },
  { name: "RegisterSanNode bad block size", method: storageService.RegisterSanNode, body: { nodeId: "host-9", capacityMib: 1, blockSizeBytes: 1000, bootId: "b" }, code: 400, error: /block_size_bytes/ },
  { name: "RegisterSanNode zero capacity", method: storageService.RegisterSanNode, body: { nodeId: "host-9", capacityMib: 0, blockSizeBytes: 4096, bootId: "b" }, code: 400, error: /capacity_mib/ },
  { name: "RegisterSanNode no boot id", method: storageService.RegisterSanNode, body: { nodeId: "host-9", capacityMib: 1, blockSizeBytes: 4096 }, code: 400, error: /boot_id/ },
  { name: "RegisterSanNode another node's id", method: storageService.RegisterSanNode, body: { nodeId: "san-1", capacityMib: 1, blockSizeBytes: 4096, bootId: "b" }, code: 400, error: /node_id "san-1" differs from the id in the subject \(host-9\)/ },
];

/** The last sequence of every stream but the controller bucket, whose lease is renewed all the time. */
async function kvRevisions(): Promise<string> {
  const jsm = await raw.jetstreamManager();
  const out: string[] = [];
  for await (const stream of jsm.streams.list()) {
    if (stream.config.name !== "KV_simdc-controller") out.push(`${stream.config.name}=${stream.state.last_seq}`);
  }
  return out.sort().join(",");
}

function subjectOf(c: Case): string {
  if (c.method.scope !== "api-by-id") return bus.subjectOf(c.method);
  // Built by hand: the bus refuses to build a subject with an invalid id, and the controller must refuse it too.
  return `${bus.subjects.api(c.method.service, c.method.method)}.${c.callerId ?? "host-9"}`;
}

beforeAll(async () => {
  nats = await startTestNats();
  bus = await connectTestBus(nats.url);
  raw = await connect({ servers: nats.url });
  controller = startService("controller", ["--nats-url", nats.url, "--heartbeat-interval-ms", "200"]);
  await eventually("controller serving", () => bus.call(controllerService.GetControllerStatus, {}, { timeoutMs: 500 }), 15_000);
  host = new StandInHost(bus, "host-1");
  await host.start(200);
  san = new StandInSanNode(bus, "san-1");
  await san.start(200);
  await bus.call(storageService.CreateVolume, { name: "vol-1", sizeMib: 8 });
  await bus.call(storageService.CreateVolume, { name: "vol-2", sizeMib: 8 });
  await bus.call(computeService.CreateVm, { name: "vm-1", spec });
  await eventually("vm-1 applied", () => (host.vms.has("vm-1") ? true : undefined));
});

afterAll(async () => {
  host?.stop();
  san?.stop();
  await controller?.stop();
  await raw?.close();
  await bus?.close();
  await nats?.dispose();
});

describe("controller bad input", () => {
  it("bad input: the table covers every controller endpoint", () => {
    const covered = new Set(cases.map((c) => c.method.rpc));
    expect([...covered].sort()).toEqual(rpcs.map((m) => m.rpc).sort());
  });

  it.each(cases)("bad input: $name is refused and changes nothing", async (c) => {
    const events: string[] = [];
    const sub = raw.subscribe("simdc.evt.>", {
      callback: (_err, msg) => {
        if (!/\.(heartbeat|vm|metrics)$/.test(msg.subject)) events.push(msg.subject);
      },
    });
    await raw.flush();
    const before = await kvRevisions();
    const body = c.body instanceof Uint8Array ? c.body : c.method.request.encode(c.body as never).finish();
    const reply = await raw.request(subjectOf(c), body, { timeout: 5_000 });
    expect(reply.headers?.get("Nats-Service-Error-Code")).toBe(String(c.code));
    expect(reply.headers?.get("Nats-Service-Error")).toMatch(c.error);
    await raw.flush();
    expect(await kvRevisions()).toBe(before);
    expect(events).toEqual([]);
    sub.unsubscribe();
    expect(controller.child.exitCode).toBeNull();
  });

  it("bad input: the controller still serves correctly afterwards", async () => {
    const { vm } = await bus.call(computeService.GetVm, { vmId: "vm-1" });
    expect(vm?.status?.state).toBe(v1.VmState.VM_STATE_RUNNING);
    expect((await bus.call(computeService.ListVms, {})).vms.map((v) => v.id)).toEqual(["vm-1"]);
    expect((await bus.call(storageService.ListVolumes, {})).volumes.map((v) => v.id)).toEqual(["vol-1", "vol-2"]);
    expect((await bus.call(hostService.ListHosts, {})).hosts.map((h) => [h.id, h.agentId])).toEqual([["host-1", "agent-host-1"]]);
    const status = await bus.call(controllerService.GetControllerStatus, {});
    expect(status).toMatchObject({ role: v1.ControllerRole.CONTROLLER_ROLE_ACTIVE, writesReverted: 0 });
    // Only the registration of a held id counts as a refused message; the rest are plain bad requests.
    expect(status.messagesRefused).toBe(1);
  });
});
