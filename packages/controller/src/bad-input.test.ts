// Proves that every controller endpoint answers bad input (a malformed
// protobuf, an empty message, an unknown id, an out-of-range value, an
// impossible request) with the right typed error and changes nothing: no KV
// revision moves and no event is published.

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect, type NatsConnection } from "nats";
import { computeService, hostService, storageService, type Bus, type RpcMethod } from "@simdc/bus";
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

interface Case {
  name: string;
  method: RpcMethod<any, any>;
  /** Raw bytes, or a message to encode. */
  body: Uint8Array | Record<string, unknown>;
  code: number;
  error: RegExp;
}

const rpcs: RpcMethod<any, any>[] = [...Object.values(hostService), ...Object.values(computeService), ...Object.values(storageService)];

const cases: Case[] = [
  ...rpcs
    .filter((m) => !["ListHosts", "ListVms", "ListVolumes", "ListSanNodes"].includes(m.method))
    .flatMap((method): Case[] => [
      { name: `${method.method} malformed`, method, body: garbage, code: 400, error: /^INVALID_ARGUMENT: malformed/ },
      { name: `${method.method} empty`, method, body: empty, code: 400, error: /^INVALID_ARGUMENT: / },
    ]),
  ...["ListHosts", "ListVms", "ListVolumes", "ListSanNodes"].map(
    (name): Case => ({
      name: `${name} malformed`,
      method: rpcs.find((m) => m.method === name)!,
      body: garbage,
      code: 400,
      error: /^INVALID_ARGUMENT: malformed/,
    }),
  ),
  // HostService
  { name: "RegisterHost id with a dot", method: hostService.RegisterHost, body: { hostId: "h.1", agentId: "a", capacity: { pcpus: 1, memoryMib: 1 }, bootId: "b" }, code: 400, error: /host_id/ },
  { name: "RegisterHost wildcard id", method: hostService.RegisterHost, body: { hostId: "*", agentId: "a", capacity: { pcpus: 1, memoryMib: 1 }, bootId: "b" }, code: 400, error: /host_id/ },
  { name: "RegisterHost no capacity", method: hostService.RegisterHost, body: { hostId: "host-9", agentId: "a", bootId: "b" }, code: 400, error: /capacity is required/ },
  { name: "RegisterHost zero pcpus", method: hostService.RegisterHost, body: { hostId: "host-9", agentId: "a", capacity: { pcpus: 0, memoryMib: 1 }, bootId: "b" }, code: 400, error: /capacity.pcpus/ },
  { name: "RegisterHost no boot id", method: hostService.RegisterHost, body: { hostId: "host-9", agentId: "a", capacity: { pcpus: 1, memoryMib: 1 } }, code: 400, error: /boot_id/ },
  { name: "GetHost unknown", method: hostService.GetHost, body: { hostId: "host-404" }, code: 404, error: /^NOT_FOUND: host host-404 not found/ },
  { name: "GetHost '>'", method: hostService.GetHost, body: { hostId: ">" }, code: 400, error: /host_id/ },
  // ComputeService
  { name: "CreateVm path name", method: computeService.CreateVm, body: { name: "../x", spec }, code: 400, error: /name/ },
  { name: "CreateVm no spec", method: computeService.CreateVm, body: { name: "vm-9" }, code: 400, error: /spec is required/ },
  { name: "CreateVm zero vcpus", method: computeService.CreateVm, body: { name: "vm-9", spec: { ...spec, vcpus: 0 } }, code: 400, error: /spec.vcpus/ },
  { name: "CreateVm huge vcpus", method: computeService.CreateVm, body: { name: "vm-9", spec: { ...spec, vcpus: 100000 } }, code: 400, error: /spec.vcpus/ },
  { name: "CreateVm no boot volume", method: computeService.CreateVm, body: { name: "vm-9", spec: { ...spec, bootVolume: "" } }, code: 400, error: /boot_volume/ },
  { name: "CreateVm unknown power state", method: computeService.CreateVm, body: { name: "vm-9", spec, powerState: 42 }, code: 400, error: /power_state 42/ },
  { name: "CreateVm existing name", method: computeService.CreateVm, body: { name: "vm-1", spec }, code: 409, error: /^ALREADY_EXISTS: vm vm-1 exists already/ },
  { name: "CreateVm nothing fits", method: computeService.CreateVm, body: { name: "vm-9", spec: { ...spec, vcpus: 100 } }, code: 429, error: /^RESOURCE_EXHAUSTED: no host fits 100 vCPUs/ },
  { name: "GetVm unknown", method: computeService.GetVm, body: { vmId: "vm-404" }, code: 404, error: /^NOT_FOUND: vm vm-404 not found/ },
  { name: "ListVms bad host filter", method: computeService.ListVms, body: { hostId: "a b" }, code: 400, error: /host_id/ },
  { name: "ListVms page too big", method: computeService.ListVms, body: { pageSize: 100_000 }, code: 400, error: /page_size/ },
  { name: "ListVms bad page token", method: computeService.ListVms, body: { pageToken: "x>y" }, code: 400, error: /page_token/ },
  { name: "ListVolumes bad page token", method: storageService.ListVolumes, body: { pageToken: "*" }, code: 400, error: /page_token/ },
  { name: "DeleteVm unknown", method: computeService.DeleteVm, body: { vmId: "vm-404" }, code: 404, error: /^NOT_FOUND/ },
  { name: "StartVm unknown", method: computeService.StartVm, body: { vmId: "vm-404" }, code: 404, error: /^NOT_FOUND/ },
  { name: "StopVm star", method: computeService.StopVm, body: { vmId: "vm.*" }, code: 400, error: /vm_id/ },
  // StorageService
  { name: "CreateVolume path name", method: storageService.CreateVolume, body: { name: "../x", sizeMib: 1 }, code: 400, error: /name/ },
  { name: "CreateVolume zero size", method: storageService.CreateVolume, body: { name: "vol-9", sizeMib: 0 }, code: 400, error: /size_mib/ },
  { name: "CreateVolume existing", method: storageService.CreateVolume, body: { name: "vol-1", sizeMib: 1 }, code: 409, error: /^ALREADY_EXISTS/ },
  { name: "CreateVolume too big for any node", method: storageService.CreateVolume, body: { name: "vol-9", sizeMib: 1_000_000 }, code: 429, error: /^RESOURCE_EXHAUSTED: no connected SAN node/ },
  { name: "GetVolume unknown", method: storageService.GetVolume, body: { volumeId: "vol-404" }, code: 404, error: /^NOT_FOUND/ },
  { name: "DeleteVolume unknown", method: storageService.DeleteVolume, body: { volumeId: "vol-404" }, code: 404, error: /^NOT_FOUND/ },
  { name: "DeleteVolume in use", method: storageService.DeleteVolume, body: { volumeId: "vol-1" }, code: 412, error: /^FAILED_PRECONDITION: volume vol-1 is the boot volume of vm-1/ },
  { name: "RegisterSanNode bad block size", method: storageService.RegisterSanNode, body: { nodeId: "san-9", capacityMib: 1, blockSizeBytes: 1000, bootId: "b" }, code: 400, error: /block_size_bytes/ },
  { name: "RegisterSanNode bad volume id", method: storageService.RegisterSanNode, body: { nodeId: "san-9", capacityMib: 1, blockSizeBytes: 4096, bootId: "b", volumeIds: ["../etc"] }, code: 400, error: /volume_ids/ },
];

async function kvRevisions(): Promise<string> {
  const jsm = await raw.jetstreamManager();
  const out: string[] = [];
  for await (const stream of jsm.streams.list()) out.push(`${stream.config.name}=${stream.state.last_seq}`);
  return out.sort().join(",");
}

beforeAll(async () => {
  nats = await startTestNats();
  bus = await connectTestBus(nats.url);
  raw = await connect({ servers: nats.url });
  controller = startService("controller", ["--nats-url", nats.url]);
  await eventually("controller serving", () => bus.call(hostService.ListHosts, {}, { timeoutMs: 500 }).then(() => true), 15_000);
  host = new StandInHost(bus, "host-1");
  await host.start(200);
  san = new StandInSanNode(bus, "san-1");
  await san.start(200);
  await bus.call(storageService.CreateVolume, { name: "vol-1", sizeMib: 8 });
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
        if (!msg.subject.endsWith(".heartbeat") && !msg.subject.endsWith(".status")) events.push(msg.subject);
      },
    });
    await raw.flush();
    const before = await kvRevisions();
    const body = c.body instanceof Uint8Array ? c.body : c.method.request.encode(c.body as never).finish();
    const reply = await raw.request(bus.subjectOf(c.method), body, { timeout: 5_000 });
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
  });
});
