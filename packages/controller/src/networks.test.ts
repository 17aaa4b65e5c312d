// Proves the network API on a real nats-server: networks get their VNI or
// VLAN and their gateways, and are listed, read and deleted; a name, a VLAN
// or address space already taken, a bad CIDR or mode is refused and changes
// nothing (also when two creates race); a retried create with the same
// request id acts once; networks survive a controller restart. Security
// groups: created, listed, updated (revision bumped), deleted, their rules
// checked, and a retried update acting once. Routers and external
// endpoints: what is malformed, unknown or against the rules is refused and
// changes nothing.

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
const { SECURITY_PROTOCOL_ANY, SECURITY_PROTOCOL_ICMP, SECURITY_PROTOCOL_TCP, SECURITY_PROTOCOL_UDP } = v1.SecurityProtocol;

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

  it("security groups: created with their rules normalized, listed, read, updated at a new revision (a retry acts once) and deleted", async () => {
    const web = await client.call(networkService.CreateSecurityGroup, {
      name: "web",
      rules: [{ protocol: SECURITY_PROTOCOL_TCP, portMin: 80, portMax: 80 }, { protocol: SECURITY_PROTOCOL_ICMP, remoteCidr: "10.0.0.0/8" }, { protocol: SECURITY_PROTOCOL_ANY, remoteCidr: "192.0.2.7/32" }],
    });
    expect(web.securityGroup?.revision).toBe(1);
    expect(web.securityGroup?.rules?.map((r) => [r.protocol, r.portMin, r.portMax, r.remoteCidr])).toEqual([
      [SECURITY_PROTOCOL_TCP, 80, 80, ""],
      [SECURITY_PROTOCOL_ICMP, 0, 0, "10.0.0.0/8"],
      [SECURITY_PROTOCOL_ANY, 0, 0, "192.0.2.7/32"],
    ]);
    await client.call(networkService.CreateSecurityGroup, { name: "closed" });
    expect((await client.call(networkService.ListSecurityGroups, {})).securityGroups.map((g) => g.id)).toEqual(["closed", "web"]);
    // Each group is one document the hosts expand, its rules compiled to matches, at a generation of its own.
    const groupDocs = await client.bucket("group-docs", v1.GroupDocument, { fenced: { epochOf: () => 0 }, bindOnly: true });
    const docOf = async (id: string) => (await eventually(`group ${id}'s document`, async () => (await groupDocs.get(id)) ?? undefined, 5_000)).value;
    const first = await docOf("web");
    expect(first.admissions).toEqual(["tcp,tp_dst=80", "icmp,nw_src=10.0.0.0/8", "ip,nw_src=192.0.2.7/32"]);
    expect((await docOf("closed")).admissions).toEqual([]);
    const update = { securityGroupId: "web", rules: [{ protocol: SECURITY_PROTOCOL_UDP, portMin: 53, portMax: 54 }], mutation: { requestId: "sg-web-2", wait: v1.WaitFor.WAIT_FOR_CONTROLLER } };
    const updated = await client.call(networkService.UpdateSecurityGroup, update);
    expect(updated.securityGroup?.revision).toBe(2);
    // --wait=controller answers with the generation of the group's document that carries the change.
    const second = await docOf("web");
    // 53-54 is not one aligned block: two matches.
    expect(second.admissions).toEqual(["udp,tp_dst=53", "udp,tp_dst=54"]);
    expect(second.generation).toBeGreaterThan(first.generation);
    expect(updated.result?.configGeneration).toBe(second.generation);
    const again = await client.call(networkService.UpdateSecurityGroup, update);
    expect(again.result?.replayed).toBe(true);
    const read = (await client.call(networkService.GetSecurityGroup, { securityGroupId: "web" })).securityGroup;
    expect([read?.revision, read?.rules?.length, read?.incarnation]).toEqual([2, 1, web.securityGroup?.incarnation]);
    // Rules that compile to the same matches write nothing.
    const same = await client.call(networkService.UpdateSecurityGroup, { securityGroupId: "web", rules: [{ protocol: SECURITY_PROTOCOL_UDP, portMin: 53, portMax: 54 }], mutation: { wait: v1.WaitFor.WAIT_FOR_CONTROLLER } });
    expect(same.result?.configGeneration).toBe(second.generation);
    await client.call(networkService.DeleteSecurityGroup, { securityGroupId: "closed" });
    await expect(client.call(networkService.GetSecurityGroup, { securityGroupId: "closed" })).rejects.toMatchObject({ code: "NOT_FOUND" });
    await eventually("the deleted group's document gone", async () => ((await groupDocs.get("closed")) === null ? true : undefined), 5_000);
  });

  it("security groups: a bad rule, a taken name or an unknown group is refused with the reason, and nothing changes", async () => {
    await client.call(networkService.CreateSecurityGroup, { name: "kept", rules: [{ protocol: SECURITY_PROTOCOL_ICMP }] });
    const before = JSON.stringify((await client.call(networkService.ListSecurityGroups, {})).securityGroups);
    const tcp = SECURITY_PROTOCOL_TCP;
    for (const [rules, text] of [
      [[{ protocol: 0 as v1.SecurityProtocol }], /rules\[0\].protocol must be any, icmp, tcp or udp/],
      [[{ protocol: 9 as v1.SecurityProtocol }], /rules\[0\].protocol must be any, icmp, tcp or udp/],
      [[{ protocol: SECURITY_PROTOCOL_ICMP, portMin: 1, portMax: 2 }], /ports are for tcp and udp rules/],
      [[{ protocol: tcp, portMin: 90, portMax: 80 }], /port_max 80 is below port_min 90/],
      [[{ protocol: tcp, portMin: 0, portMax: 80 }], /port_min must be an integer from 1 to 65535/],
      [[{ protocol: tcp, portMin: 1, portMax: 70000 }], /port_max must be an integer from 1 to 65535/],
      [[{ protocol: tcp, remoteCidr: "10.0.0.1/8" }], /host bits are set/],
      [[{ protocol: tcp, remoteCidr: "nope" }], /not a CIDR/],
      [Array.from({ length: 65 }, () => ({ protocol: tcp })), /at most 64 rules/],
    ] as const) {
      await expect(client.call(networkService.CreateSecurityGroup, { name: "bad", rules: [...rules] }), JSON.stringify(rules)).rejects.toMatchObject({ code: "INVALID_ARGUMENT", message: expect.stringMatching(text) });
      await expect(client.call(networkService.UpdateSecurityGroup, { securityGroupId: "kept", rules: [...rules] })).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
    }
    await expect(client.call(networkService.CreateSecurityGroup, { name: "kept" })).rejects.toMatchObject({ code: "ALREADY_EXISTS" });
    await expect(client.call(networkService.CreateSecurityGroup, { name: "Bad_Name" })).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
    await expect(client.call(networkService.UpdateSecurityGroup, { securityGroupId: "nosuch" })).rejects.toMatchObject({ code: "NOT_FOUND" });
    await expect(client.call(networkService.DeleteSecurityGroup, { securityGroupId: "nosuch" })).rejects.toMatchObject({ code: "NOT_FOUND" });
    await expect(client.call(networkService.GetSecurityGroup, { securityGroupId: "" })).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
    await expect(client.call(networkService.ListSecurityGroups, { pageSize: 5000 })).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
    expect(JSON.stringify((await client.call(networkService.ListSecurityGroups, {})).securityGroups)).toBe(before);
  });

  it("routers: join two or more networks of one tenant, each on one router; what breaks a rule is refused and changes nothing", async () => {
    await create("rt-a", ["10.120.0.0/24"], { tenant: "acme" });
    await create("rt-b", ["10.121.0.0/24"], { tenant: "acme" });
    await create("rt-c", ["10.122.0.0/24"], { tenant: "globex" });
    await expect(create("rt-bad", ["10.123.0.0/24"], { tenant: "Not A Name" })).rejects.toMatchObject({ code: "INVALID_ARGUMENT", message: expect.stringMatching(/tenant/) });
    await expect(create("rt-out", ["198.18.7.0/24"])).rejects.toMatchObject({ code: "ALREADY_EXISTS", message: expect.stringMatching(/overlaps the external network 198.18.0.0\/16/) });
    for (const [networks, code, text] of [
      [["rt-a"], "INVALID_ARGUMENT", /at least two networks/],
      [["rt-a", "rt-a"], "INVALID_ARGUMENT", /rt-a is named twice/],
      [["rt-a", "nosuch"], "NOT_FOUND", /network nosuch does not exist/],
      [["rt-a", "rt-c"], "INVALID_ARGUMENT", /rt-c is tenant globex's, not acme's/],
      [["rt-a", "Bad Name"], "INVALID_ARGUMENT", /networks\[1\]/],
    ] as const) {
      await expect(client.call(networkService.CreateRouter, { name: "r-bad", networks: [...networks] }), JSON.stringify(networks)).rejects.toMatchObject({ code, message: expect.stringMatching(text) });
    }
    expect((await client.call(networkService.ListRouters, {})).routers).toEqual([]);
    const { router } = await client.call(networkService.CreateRouter, { name: "edge", networks: ["rt-a", "rt-b"] });
    expect([router?.tenant, router?.networks]).toEqual(["acme", ["rt-a", "rt-b"]]);
    await expect(client.call(networkService.CreateRouter, { name: "edge", networks: ["rt-a", "rt-b"] })).rejects.toMatchObject({ code: "ALREADY_EXISTS" });
    await expect(client.call(networkService.CreateRouter, { name: "r2", networks: ["rt-b", "rt-c"] })).rejects.toMatchObject({ code: "FAILED_PRECONDITION", message: expect.stringMatching(/rt-b is on router edge already/) });
    await expect(client.call(networkService.DeleteNetwork, { networkId: "rt-a" })).rejects.toMatchObject({ code: "FAILED_PRECONDITION", message: expect.stringMatching(/on router edge/) });
    await expect(client.call(networkService.DeleteRouter, { routerId: "nosuch" })).rejects.toMatchObject({ code: "NOT_FOUND" });
    await client.call(networkService.DeleteRouter, { routerId: "edge" });
    await client.call(networkService.DeleteNetwork, { networkId: "rt-a" });
    expect((await client.call(networkService.ListRouters, {})).routers).toEqual([]);
  });

  it("external endpoints: the external network is 198.18.0.0/16; an endpoint needs a host to play it, a free address on it and a free name", async () => {
    const listed = await client.call(networkService.ListExternalEndpoints, {});
    expect([listed.externalCidr, listed.gateway, listed.endpoints]).toEqual(["198.18.0.0/16", "198.18.0.1", []]);
    for (const [request, code, text] of [
      [{ name: "www" }, "FAILED_PRECONDITION", /no host is connected/],
      [{ name: "www", hostId: "host-404" }, "NOT_FOUND", /host host-404 not found/],
      [{ name: "Bad Name" }, "INVALID_ARGUMENT", /name/],
      [{ name: "www", hostId: "Bad.Host" }, "INVALID_ARGUMENT", /host_id/],
    ] as const) {
      await expect(client.call(networkService.CreateExternalEndpoint, request), JSON.stringify(request)).rejects.toMatchObject({ code, message: expect.stringMatching(text) });
    }
    await expect(client.call(networkService.DeleteExternalEndpoint, { endpointId: "www" })).rejects.toMatchObject({ code: "NOT_FOUND" });
    await expect(client.call(networkService.ListExternalEndpoints, { pageSize: 5000 })).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
    expect((await client.call(networkService.ListExternalEndpoints, {})).endpoints).toEqual([]);
  });
});
