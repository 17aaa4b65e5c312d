// Proves the network API on a real nats-server: networks get their VNI or
// VLAN and their gateways, and are listed, read and deleted; a name, a VLAN
// or address space already taken, a bad CIDR or mode is refused and changes
// nothing (also when two creates race); a retried create with the same
// request id acts once; networks survive a controller restart.

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { networkService, type Bus } from "@simdc/bus";
import { createLogger, readSettings, wallClock } from "@simdc/common";
import { simdc } from "@simdc/proto";
import { connectTestBus, eventually, startTestNats, type TestNats } from "@simdc/testkit";
import { Controller } from "./controller.js";
import { controllerConfigOf, controllerSettings } from "./settings.js";

import v1 = simdc.v1;
const { NETWORK_MODE_BRIDGE, NETWORK_MODE_HOST_ONLY, NETWORK_MODE_NAT } = v1.NetworkMode;
const { NETWORK_TRANSPORT_OVERLAY, NETWORK_TRANSPORT_VLAN } = v1.NetworkTransport;

let nats: TestNats;
let client: Bus;
const prefix = "net1";
let stopController: () => Promise<void>;

async function startController(): Promise<() => Promise<void>> {
  const config = controllerConfigOf(readSettings(controllerSettings, ["--controller-id", "controller-1", "--heartbeat-interval-ms", "100"], {}));
  const bus = await connectTestBus(nats.url, { prefix, processId: config.controllerId });
  const controller = await Controller.start(bus, config, wallClock, createLogger({ service: "controller", id: "controller-1", level: "silent" }), 1);
  await eventually("the controller serving networks", () => client.call(networkService.ListNetworks, {}, { timeoutMs: 500 }), 15_000);
  return async () => {
    await controller.stop();
    await bus.close();
  };
}

beforeAll(async () => {
  nats = await startTestNats();
  client = await connectTestBus(nats.url, { prefix });
  stopController = await startController();
});

afterAll(async () => {
  await stopController?.();
  await client?.close();
  await nats?.dispose();
});

const create = (name: string, subnets: string[], extra: Partial<v1.ICreateNetworkRequest> = {}) =>
  client.call(networkService.CreateNetwork, { name, mode: NETWORK_MODE_BRIDGE, subnets, ...extra });

describe("networks", () => {
  it("networks: overlay networks get the lowest free VNI, VLAN networks their VLAN, subnets their gateway; list, get and delete", async () => {
    const web = (await create("web", ["10.10.0.0/24", "10.10.1.0/24"])).network!;
    expect(web).toMatchObject({ id: "web", mode: NETWORK_MODE_BRIDGE, transport: NETWORK_TRANSPORT_OVERLAY, segmentId: 1 });
    expect(web.subnets).toEqual([
      { cidr: "10.10.0.0/24", gateway: "10.10.0.1" },
      { cidr: "10.10.1.0/24", gateway: "10.10.1.1" },
    ]);
    expect((await create("lab", ["192.168.50.0/24"], { mode: NETWORK_MODE_HOST_ONLY })).network?.segmentId).toBe(2);
    const dmz = (await create("dmz", ["172.16.0.0/16"], { mode: NETWORK_MODE_NAT, transport: NETWORK_TRANSPORT_VLAN, vlanId: 100 })).network!;
    expect(dmz).toMatchObject({ transport: NETWORK_TRANSPORT_VLAN, segmentId: 100 });
    const page1 = await client.call(networkService.ListNetworks, { pageSize: 2 });
    expect(page1.networks.map((n) => n.id)).toEqual(["dmz", "lab"]);
    const page2 = await client.call(networkService.ListNetworks, { pageSize: 2, pageToken: page1.nextPageToken });
    expect(page2.networks.map((n) => n.id)).toEqual(["web"]);
    expect((await client.call(networkService.GetNetwork, { networkId: "lab" })).network?.mode).toBe(NETWORK_MODE_HOST_ONLY);
    await client.call(networkService.DeleteNetwork, { networkId: "lab" });
    await expect(client.call(networkService.GetNetwork, { networkId: "lab" })).rejects.toMatchObject({ code: "NOT_FOUND" });
    // Its VNI and address space are free again.
    expect((await create("lab2", ["192.168.50.0/24"])).network?.segmentId).toBe(2);
  });

  it("networks: what is taken or malformed is refused with the reason, and nothing changes", async () => {
    const before = (await client.call(networkService.ListNetworks, {})).networks.map((n) => n.id);
    for (const [request, code, text] of [
      [{ name: "web", mode: NETWORK_MODE_BRIDGE, subnets: ["10.99.0.0/24"] }, "ALREADY_EXISTS", /network web exists already/],
      [{ name: "n2", mode: NETWORK_MODE_BRIDGE, subnets: ["10.10.0.128/25"] }, "ALREADY_EXISTS", /subnet 10.10.0.128\/25 overlaps 10.10.0.0\/24 of network web/],
      [{ name: "n3", mode: NETWORK_MODE_NAT, transport: NETWORK_TRANSPORT_VLAN, vlanId: 100, subnets: ["10.50.0.0/24"] }, "ALREADY_EXISTS", /VLAN 100 is network dmz's/],
      [{ name: "n4", mode: NETWORK_MODE_BRIDGE, transport: NETWORK_TRANSPORT_VLAN, vlanId: 5000, subnets: ["10.51.0.0/24"] }, "INVALID_ARGUMENT", /vlan_id must be an integer from 1 to 4094/],
      [{ name: "n5", mode: NETWORK_MODE_BRIDGE, subnets: ["10.52.0.7/24"] }, "INVALID_ARGUMENT", /host bits are set/],
      [{ name: "n6", mode: NETWORK_MODE_BRIDGE, subnets: ["10.53.0.0/24", "10.53.0.0/25"] }, "INVALID_ARGUMENT", /overlap/],
      [{ name: "n7", subnets: ["10.54.0.0/24"] }, "INVALID_ARGUMENT", /mode must be bridge, host-only or nat/],
      [{ name: "n8", mode: NETWORK_MODE_BRIDGE, subnets: [] }, "INVALID_ARGUMENT", /at least one subnet/],
      [{ name: "N_9", mode: NETWORK_MODE_BRIDGE, subnets: ["10.55.0.0/24"] }, "INVALID_ARGUMENT", /name/],
      [{ name: "n10", mode: NETWORK_MODE_BRIDGE, vlanId: 7, subnets: ["10.56.0.0/24"] }, "INVALID_ARGUMENT", /vlan_id is for vlan transport/],
    ] as const) {
      await expect(client.call(networkService.CreateNetwork, { ...request, subnets: [...request.subnets] }), JSON.stringify(request)).rejects.toMatchObject({ code, message: expect.stringMatching(text) });
    }
    await expect(client.call(networkService.DeleteNetwork, { networkId: "nope" })).rejects.toMatchObject({ code: "NOT_FOUND" });
    expect((await client.call(networkService.ListNetworks, {})).networks.map((n) => n.id)).toEqual(before);
  });

  it("networks: of two creates racing for one address space exactly one wins; a retried create acts once; networks outlive a restart", async () => {
    const results = await Promise.allSettled([create("race-a", ["10.77.0.0/16"]), create("race-b", ["10.77.128.0/17"])]);
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
    const first = await create("again", ["10.88.0.0/24"], { mutation: { requestId: "net-again-1" } });
    const retry = await create("again", ["10.88.0.0/24"], { mutation: { requestId: "net-again-1" } });
    expect(retry.result?.replayed).toBe(true);
    expect(retry.network?.incarnation).toBe(first.network?.incarnation);
    const before = (await client.call(networkService.ListNetworks, {})).networks;
    await stopController();
    stopController = await startController();
    expect((await client.call(networkService.ListNetworks, {})).networks).toEqual(before);
  });
});
