// The SDN on a live datacenter (`simdc up`, real processes, real NATS): VMs
// get their addresses by DHCP from their host's vswitch and ping each other
// across hosts over the overlay; a host gets only the flows of the networks
// it has a port on; the controller killed, established pings go on (secure
// mode keeps the flows) while nothing new can be configured; the vswitches
// cut from their controller do not plug a new VM's port until the link
// heals, then converge; in standalone mode the vswitch fails open after 3
// probe intervals and forwards as a learning switch.

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { spawn } from "node:child_process";
import { eventually } from "@simdc/testkit";
import { cli, startUp, type UpDatacenter } from "./up-env.js";

interface PingJson {
  sourceIp: string;
  sent: number;
  received: number;
  replies: { seq: number; received: boolean }[];
}

interface VmJson {
  id: string;
  hostId: string;
  spec: { nics: { network: string; mac: string; ip: string }[] };
  status: { state: string };
}

interface PortsJson {
  failMode: string;
  controllerConnected: boolean;
  failOpen: boolean;
  ports: { name: string; ip: string; up: boolean }[];
}

const probeMs = 500;

async function setUp(dc: UpDatacenter): Promise<void> {
  await dc.simdc("volume", "create", "boot", "--size-mib", "16");
}

async function vm(dc: UpDatacenter, id: string): Promise<VmJson> {
  return dc.json<VmJson>("vm", "get", id);
}

/** Waits until the VM runs and its first NIC has its address from DHCP. */
async function addressed(dc: UpDatacenter, id: string): Promise<VmJson> {
  const v = await eventually(`vm ${id} running`, async () => {
    const got = await vm(dc, id);
    if (got.status.state !== "VM_STATE_RUNNING") throw new Error(got.status.state);
    return got;
  });
  await eventually(`vm ${id} bound by DHCP`, async () => {
    const ports = await dc.json<PortsJson>("ofctl", "dump-ports", v.hostId);
    const port = ports.ports.find((p) => p.name === `${id}.eth0`);
    if (port?.ip !== v.spec.nics[0]!.ip) throw new Error(`${id}.eth0 has ${port?.ip}`);
    return true;
  });
  return v;
}

/** A background `simdc vm ping`, its JSON when it ends. */
function backgroundPing(dc: UpDatacenter, args: string[]): Promise<PingJson> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cli, "--data-dir", dc.dataDir, "-o", "json", "vm", "ping", ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (c: Buffer) => (out += c.toString()));
    child.stderr.on("data", (c: Buffer) => (err += c.toString()));
    child.once("exit", (code) => (code === 0 ? resolve(JSON.parse(out) as PingJson) : reject(new Error(`ping exited ${code}: ${err}`))));
  });
}

interface FlowRow {
  flow: number;
  running: boolean;
  sent: number;
  received: number;
  lossPercent: number;
  latencyAvgMs: number;
}

/** A one-second TCP-like request/response flow from a VM to an address and port, once it is done. */
async function rrFlow(dc: UpDatacenter, vmId: string, target: string, port: string): Promise<FlowRow> {
  const started = await dc.json<{ flowId: number }>("traffic", "start", vmId, target, "--kind", "rr", "--rate", "200", "--size", "200", "--response-size", "1000", "--port", port, "--duration", "1s");
  return eventually(`rr flow ${started.flowId} of ${vmId} done`, async () => {
    const row = (await dc.json<{ flows: FlowRow[] }>("traffic", "stats", vmId)).flows.find((f) => f.flow === started.flowId)!;
    if (row.running) throw new Error("running");
    return row;
  });
}

describe("sdn: overlay networks, secure mode", () => {
  let dc: UpDatacenter;

  beforeAll(async () => {
    dc = await startUp(["--hosts", "3", "--inactivity-probe-ms", String(probeMs), "--fail-mode", "secure"]);
    await setUp(dc);
    await dc.simdc("net", "create", "blue", "--mode", "host-only", "--subnet", "10.1.0.0/24");
    await dc.simdc("net", "create", "red", "--mode", "nat", "--subnet", "10.2.0.0/24");
  }, 120_000);

  afterAll(async () => {
    await dc?.stop();
  });

  it("sdn: VMs on different hosts get their addresses by DHCP and ping each other over the overlay", async () => {
    await dc.simdc("vm", "create", "b1", "--boot-volume", "boot", "--nic", "blue");
    await dc.simdc("vm", "create", "b2", "--boot-volume", "boot", "--nic", "blue,ip=10.1.0.20");
    const b1 = await addressed(dc, "b1");
    const b2 = await addressed(dc, "b2");
    expect(b1.hostId).not.toBe(b2.hostId);
    expect(b1.spec.nics[0]).toMatchObject({ network: "blue", ip: "10.1.0.2" });
    expect(b1.spec.nics[0]!.mac).toMatch(/^02(:[0-9a-f]{2}){5}$/);
    expect(b2.spec.nics[0]!.ip).toBe("10.1.0.20");
    const ping = await dc.json<PingJson>("vm", "ping", "b1", "10.1.0.20", "-c", "3", "-i", "100ms");
    expect(ping).toMatchObject({ sourceIp: "10.1.0.2", sent: 3, received: 3 });
    // An address nobody holds answers nothing.
    const nobody = await dc.json<PingJson>("vm", "ping", "b1", "10.1.0.99", "-c", "1", "-W", "300ms");
    expect(nobody.received).toBe(0);
  });

  it("sdn: simdc trace follows a packet through b1's host's tables, over the tunnel, and to b2's port, changing nothing", async () => {
    const b1 = await vm(dc, "b1");
    const b2 = await vm(dc, "b2");
    type Ports = { ports: { name: string; ofport: number }[] };
    const port = (await dc.json<Ports>("ofctl", "dump-ports", b1.hostId)).ports.find((p) => p.name === "b1.eth0")!.ofport;
    const packet = `in_port=${port},dl_src=${b1.spec.nics[0]!.mac},dl_dst=${b2.spec.nics[0]!.mac},icmp,nw_src=10.1.0.2,nw_dst=10.1.0.20`;
    const before = await dc.simdc("ofctl", "dump-flows", b1.hostId);
    type Hop = { hostId: string; flows: string[]; outputs: { name: string; hostId: string }[] };
    const hops = await dc.json<Hop[]>("trace", b1.hostId, packet);
    expect(hops.map((h) => [h.hostId, h.outputs.map((o) => o.name)])).toEqual([
      [b1.hostId, [`tun-${b2.hostId}`]],
      [b2.hostId, ["b2.eth0"]],
    ]);
    expect(hops[0]!.flows.map((f) => Number(/table=(\d+)/.exec(f)![1]))).toEqual([0, 10, 20]);
    expect(hops[1]!.flows.map((f) => Number(/table=(\d+)/.exec(f)![1]))).toEqual([0, 30]);
    expect(await dc.simdc("trace", b1.hostId, packet)).toMatch(new RegExp(`^${b1.hostId}:\n  table=0,.*\n.*\n.*\n  => output \\d+ \\(tun-${b2.hostId}\\)\n${b2.hostId}:`));
    // A spoofed source MAC matches no flow of table 0: dropped at the first hop.
    const spoofed = await dc.json<Hop[]>("trace", b1.hostId, packet.replace(b1.spec.nics[0]!.mac, "02:66:66:66:66:66"));
    expect(spoofed.map((h) => [h.hostId, h.outputs.length, h.flows.length])).toEqual([[b1.hostId, 0, 0]]);
    await expect(dc.simdc("trace", b1.hostId, "in_port=1,colour=red")).rejects.toThrow(/INVALID_ARGUMENT: unknown field "colour"/);
    // Tracing changed no counter.
    expect(await dc.simdc("ofctl", "dump-flows", b1.hostId)).toBe(before);
  });

  it("sdn: a UDP flow between VMs on two hosts: what was sent arrives, with its throughput and latency; a flow too big for the MTU is refused", async () => {
    const started = await dc.simdc("traffic", "start", "b1", "10.1.0.20", "--rate", "500", "--size", "400", "--duration", "2s");
    expect(started).toMatch(/^flow \d+: b1 \(10\.1\.0\.2\) -> 10\.1\.0\.20 udp\/5001, 500 packets\/s of 400 bytes for 2 s/);
    const flowId = Number(/^flow (\d+)/.exec(started)![1]);
    type Stats = { flows: { flow: number; running: boolean; sent: number; received: number; lossPercent: number; mbps: number; latencyAvgMs: number }[] };
    const done = await eventually("the flow done and all of it arrived", async () => {
      const stats = await dc.json<Stats>("traffic", "stats", "b1");
      const flow = stats.flows.find((f) => f.flow === flowId)!;
      if (flow.running || flow.received < flow.sent) throw new Error(JSON.stringify(flow));
      return flow;
    });
    expect(done.sent).toBeGreaterThanOrEqual(950);
    expect(done).toMatchObject({ received: done.sent, lossPercent: 0 });
    expect(done.mbps).toBeGreaterThan(1.4);
    expect(done.latencyAvgMs).toBeLessThan(100);
    await expect(dc.simdc("traffic", "start", "b1", "10.1.0.20", "--size", "1451")).rejects.toThrow(/INVALID_ARGUMENT: size_bytes 1451 does not fit/);
    // The flow crossed b1's host's converged NIC (nic0), with VXLAN's 50 bytes on each packet.
    const b1 = await vm(dc, "b1");
    type Nics = { nics: { name: string; txPackets: number; txBytes: number; drops: number }[] };
    const nics = (await dc.json<Nics>("ofctl", "dump-ports", b1.hostId)).nics;
    expect(nics.map((n) => n.name)).toEqual(["nic0", "nic1"]);
    expect(nics[0]!.txPackets).toBeGreaterThanOrEqual(done.sent);
    expect(nics[0]!.txBytes).toBeGreaterThanOrEqual(done.sent * 450);
    expect(nics[1]!.txPackets).toBe(0);
    await expect(dc.simdc("traffic", "stop", "b1", "999")).rejects.toThrow(/NOT_FOUND: no traffic flow 999/);
  });

  it("sdn: a host gets only the flows of networks it has a port on; hand edits of controller tables are refused", async () => {
    await dc.simdc("vm", "create", "r1", "--boot-volume", "boot", "--nic", "red");
    const r1 = await addressed(dc, "r1");
    const b1 = await vm(dc, "b1");
    const b2 = await vm(dc, "b2");
    for (const host of ["host-1", "host-2", "host-3"]) {
      const flows = await dc.simdc("ofctl", "dump-flows", host);
      const hasBlue = [b1.hostId, b2.hostId].includes(host);
      const hasRed = r1.hostId === host;
      expect(flows.includes("metadata=0x1"), `${host} blue flows`).toBe(hasBlue);
      expect(flows.includes("metadata=0x2"), `${host} red flows`).toBe(hasRed);
    }
    // Tenants apart: a blue VM reaches no red address (no flow, no ARP answer).
    const across = await dc.json<PingJson>("vm", "ping", "b1", r1.spec.nics[0]!.ip, "-c", "1", "-W", "300ms").catch((err: Error) => err);
    expect(String(across instanceof Error ? across.message : across.received)).toMatch(/has no route to|^0$/);
    await expect(dc.simdc("ofctl", "add-flow", b1.hostId, "table=0,priority=200,actions=drop")).rejects.toThrow(/PERMISSION_DENIED.*controller's/);
    await expect(dc.simdc("ofctl", "add-flow", b1.hostId, "table=0,priority=200,nw_src=10.0.0.1,actions=drop")).rejects.toThrow(/INVALID_ARGUMENT.*needs ip or arp/);
    // A table of its own is the user's; del-flows with no table leaves the controller's alone.
    expect(await dc.simdc("ofctl", "add-flow", b1.hostId, "table=50,priority=1,actions=drop")).toMatch(/1 flow\(s\) added/);
    const before = (await dc.simdc("ofctl", "dump-flows", b1.hostId)).split("\n").length;
    expect(await dc.simdc("ofctl", "del-flows", b1.hostId)).toMatch(/1 flow\(s\) deleted/);
    expect((await dc.simdc("ofctl", "dump-flows", b1.hostId)).split("\n").length).toBe(before - 1);
  });

  it("sdn: the reachability matrix over every VM's addresses equals the policy: a network's VMs reach each other, tenants stay apart", async () => {
    type Matrix = { cells: { from: string; to: string; reached: boolean; allowed: boolean }[]; matchesPolicy: boolean };
    const matrix = await dc.json<Matrix>("net", "reachability");
    expect(matrix.matchesPolicy).toBe(true);
    const pairs = Object.fromEntries(matrix.cells.map((c) => [`${c.from}>${c.to}`, c.reached]));
    expect(pairs).toMatchObject({ "b1>b2": true, "b2>b1": true, "b1>r1": false, "r1>b2": false });
    // Hand a blue VM's traffic to nobody: b1 -> b2 breaks, and the matrix says so.
    const b1 = await vm(dc, "b1");
    await dc.simdc("ofctl", "add-flow", b1.hostId, "table=20,priority=200,ip,actions=drop", "--force");
    const err = (await dc.simdc("net", "reachability").catch((e: unknown) => e)) as { code: number; stdout: string; stderr: string };
    expect(err.code).toBe(1);
    expect(err.stderr).toMatch(/FAILED_PRECONDITION: b1 did not reach b2 \(10\.1\.0\.20\), which the policy allows/);
    // The controller's next document for that host puts its table back.
    await dc.simdc("ofctl", "del-flows", b1.hostId, "table=20", "--force");
    await dc.simdc("vm", "create", "b5", "--boot-volume", "boot", "--nic", "blue", "--wait", "hosts");
    await addressed(dc, "b5");
    expect((await dc.json<Matrix>("net", "reachability")).matchesPolicy).toBe(true);
  });

  it("sdn: security groups: a guarded NIC admits only what its rules allow, replies to what it started pass, and a rule change reaches its host", async () => {
    await dc.simdc("sg", "create", "guard");
    await expect(dc.simdc("vm", "create", "g0", "--boot-volume", "boot", "--nic", "blue,sg=nosuch")).rejects.toThrow(/NOT_FOUND: nics\[0\]: security group nosuch does not exist/);
    await dc.simdc("vm", "create", "g1", "--boot-volume", "boot", "--nic", "blue,sg=guard", "--wait", "hosts");
    const g1 = await addressed(dc, "g1");
    const address = g1.spec.nics[0]!.ip;
    const ping = async (from: string, to: string) => (await dc.json<PingJson>("vm", "ping", from, to, "-c", "2", "-i", "100ms", "-W", "400ms")).received;
    // Default deny inbound; what g1 starts gets its replies back (conntrack on g1's host).
    expect(await ping("b1", address)).toBe(0);
    expect(await ping("b2", address)).toBe(0);
    expect(await ping("g1", "10.1.0.20")).toBe(2);
    type Matrix = { cells: { from: string; to: string; reached: boolean; allowed: boolean }[]; matchesPolicy: boolean };
    const closed = await dc.json<Matrix>("net", "reachability");
    expect(closed.matchesPolicy).toBe(true);
    expect(closed.cells.filter((c) => c.to === "g1").every((c) => !c.allowed && !c.reached)).toBe(true);
    // Admit ICMP from b2 alone: b2 gets through, b1 still does not.
    await dc.simdc("sg", "update", "guard", "--rule", "icmp,from=10.1.0.20/32", "--rule", "tcp:8000-8100", "--wait", "hosts");
    expect(await ping("b2", address)).toBe(2);
    expect(await ping("b1", address)).toBe(0);
    const flows = await dc.simdc("ofctl", "dump-flows", g1.hostId, "--table", "35");
    expect(flows).toMatch(/dl_type=0x800,nw_src=10\.1\.0\.20,nw_proto=1,reg6=0x\d+,ct_state=\+new\+trk actions=ct\(commit,zone=\d+\),output:\d+/);
    // tcp:8000-8100 as the fewest masked matches: 8000/65472 (8000-8063) first.
    expect(flows).toMatch(/nw_proto=6,tp_dst=8000\/65472,/);
    expect((await dc.json<Matrix>("net", "reachability")).matchesPolicy).toBe(true);
    // TCP-like request/response: a port the rules admit gets its transactions, another only timeouts.
    const admitted = await rrFlow(dc, "b1", address, "8050");
    expect(admitted.received).toBeGreaterThan(100);
    expect(admitted.lossPercent).toBe(0);
    const refused = await rrFlow(dc, "b1", address, "9000");
    expect(refused.received).toBe(0);
    expect(refused.sent).toBeGreaterThan(0);
    // A group that guards a NIC cannot be deleted; the NIC taken out of it in place (a new generation, same address), it can, and b1 gets in.
    await expect(dc.simdc("sg", "delete", "guard")).rejects.toThrow(/FAILED_PRECONDITION: security group guard guards 1 NIC\(s\) \(g1\.eth0\)/);
    await expect(dc.simdc("vm", "nic", "set", "g1", "0", "--sg", "nosuch")).rejects.toThrow(/NOT_FOUND: eth0: security group nosuch does not exist/);
    const unguarded = await dc.json<VmJson & { generation: number }>("vm", "nic", "set", "g1", "0", "--sg", "", "--wait", "hosts");
    expect(unguarded.spec.nics[0]).toMatchObject({ ip: address, mac: g1.spec.nics[0]!.mac });
    expect(await ping("b1", address)).toBe(2);
    await dc.simdc("sg", "delete", "guard");
    await dc.simdc("vm", "delete", "g1", "--wait", "hosts");
    expect(await dc.simdc("sg", "list")).not.toMatch(/guard/);
  });

  it("sdn: the outside: a bridge VM reaches an endpoint and is reached from it; a NAT VM reaches it as its host's uplink address and is not reached; a host-only VM neither", async () => {
    await dc.simdc("net", "create", "wan", "--mode", "bridge", "--subnet", "10.3.0.0/24");
    const www = await dc.json<{ ip: string; hostId: string }>("ext", "create", "www", "--wait", "hosts");
    expect(www.ip).toBe("198.18.128.1");
    await expect(dc.simdc("ext", "create", "b1")).rejects.toThrow(/ALREADY_EXISTS: b1 is a VM's name/);
    await expect(dc.simdc("ext", "create", "off", "--ip", "10.9.9.9")).rejects.toThrow(/INVALID_ARGUMENT: ip 10\.9\.9\.9 is not on the external network 198\.18\.0\.0\/16/);
    await expect(dc.simdc("net", "create", "clash", "--mode", "bridge", "--subnet", "198.18.4.0/24")).rejects.toThrow(/ALREADY_EXISTS: subnet 198\.18\.4\.0\/24 overlaps the external network/);
    await dc.simdc("vm", "create", "w1", "--boot-volume", "boot", "--nic", "wan", "--wait", "hosts");
    const w1 = await addressed(dc, "w1");
    const r1 = await vm(dc, "r1");
    const b1 = await vm(dc, "b1");
    const ping = async (kind: "vm" | "ext", from: string, to: string) => (await dc.json<PingJson>(kind, "ping", from, to, "-c", "2", "-i", "100ms", "-W", "400ms")).received;
    // Bridge: both ways.
    expect(await ping("vm", "w1", www.ip)).toBe(2);
    expect(await ping("ext", "www", w1.spec.nics[0]!.ip)).toBe(2);
    // NAT: out, as r1's host's uplink address, which the host's translation table shows; nothing comes in.
    expect(await ping("vm", "r1", www.ip)).toBe(2);
    expect(await ping("ext", "www", r1.spec.nics[0]!.ip)).toBe(0);
    const uplink = (await dc.json<{ uplinkIp: string }>("host", "get", r1.hostId)).uplinkIp;
    expect(uplink).toMatch(/^198\.18\.0\.\d+$/);
    const table = await dc.simdc("ofctl", "dump-conntrack", r1.hostId);
    expect(table).toContain(`icmp,orig=(src=${r1.spec.nics[0]!.ip},dst=${www.ip}`);
    expect(table).toContain(`reply=(src=${www.ip},dst=${uplink}`);
    expect(await ping("ext", "www", uplink)).toBe(0);
    // A TCP-like flow through the NAT: every request answered, each a round trip through the translation.
    const outward = await rrFlow(dc, "r1", www.ip, "443");
    expect(outward.received).toBeGreaterThan(100);
    expect(outward.lossPercent).toBe(0);
    expect(await dc.simdc("ofctl", "dump-conntrack", r1.hostId)).toMatch(new RegExp(`tcp,orig=\\(src=${r1.spec.nics[0]!.ip.replaceAll(".", "\\.")},dst=198\\.18\\.128\\.1,sport=\\d+,dport=443\\),reply=\\(src=198\\.18\\.128\\.1,dst=${uplink.replaceAll(".", "\\.")},`));
    // Host-only: no route out, and nothing in.
    await expect(dc.simdc("vm", "ping", "b1", www.ip, "-c", "1")).rejects.toThrow(/FAILED_PRECONDITION: vm b1 has no route to 198\.18\.128\.1/);
    expect(await ping("ext", "www", b1.spec.nics[0]!.ip)).toBe(0);
    type Matrix = { cells: { from: string; to: string; reached: boolean; allowed: boolean }[]; matchesPolicy: boolean };
    const matrix = await dc.json<Matrix>("net", "reachability");
    expect(matrix.matchesPolicy).toBe(true);
    const pairs = Object.fromEntries(matrix.cells.map((c) => [`${c.from}>${c.to}`, c.reached]));
    expect(pairs).toMatchObject({ "w1>www": true, "www>w1": true, "r1>www": true, "www>r1": false, "b1>www": false, "www>b1": false, "w1>r1": false });
    await dc.simdc("vm", "delete", "w1", "--wait", "hosts");
    await dc.simdc("ext", "delete", "www", "--wait", "hosts");
    await dc.simdc("net", "delete", "wan");
    expect(await dc.simdc("ext", "list")).not.toMatch(/www/);
  });

  it("sdn: a logical router joins one tenant's networks: VMs on different networks reach each other through it, the rest stays apart", async () => {
    await dc.simdc("net", "create", "front", "--mode", "host-only", "--subnet", "10.5.0.0/24", "--tenant", "acme");
    await dc.simdc("net", "create", "back", "--mode", "host-only", "--subnet", "10.6.0.0/24", "--tenant", "acme");
    await dc.simdc("net", "create", "other", "--mode", "host-only", "--subnet", "10.7.0.0/24", "--tenant", "globex");
    await expect(dc.simdc("router", "create", "mixed", "--network", "front", "--network", "other")).rejects.toThrow(/INVALID_ARGUMENT: network other is tenant globex's, not acme's/);
    await expect(dc.simdc("router", "create", "lonely", "--network", "front")).rejects.toThrow(/INVALID_ARGUMENT: a router joins at least two networks/);
    await dc.simdc("vm", "create", "f1", "--boot-volume", "boot", "--nic", "front");
    await dc.simdc("vm", "create", "k1", "--boot-volume", "boot", "--nic", "back");
    await dc.simdc("vm", "create", "o1", "--boot-volume", "boot", "--nic", "other", "--wait", "hosts");
    const [f1, k1, o1] = [await addressed(dc, "f1"), await addressed(dc, "k1"), await addressed(dc, "o1")];
    // Before the router: host-only networks, no route anywhere.
    await expect(dc.simdc("vm", "ping", "f1", k1.spec.nics[0]!.ip, "-c", "1")).rejects.toThrow(/FAILED_PRECONDITION: vm f1 has no route/);
    await dc.simdc("router", "create", "edge", "--network", "front", "--network", "back", "--wait", "hosts");
    await expect(dc.simdc("router", "create", "again", "--network", "back", "--network", "other")).rejects.toThrow(/FAILED_PRECONDITION: network back is on router edge already/);
    await expect(dc.simdc("net", "delete", "front")).rejects.toThrow(/FAILED_PRECONDITION: network front is on router edge/);
    // A running guest learns its new default route at its next DHCP exchange; a stop and start brings it now.
    for (const id of ["f1", "k1"]) {
      await dc.simdc("vm", "stop", id, "--wait", "hosts");
      await dc.simdc("vm", "start", id, "--wait", "hosts");
      await addressed(dc, id);
    }
    const ping = async (from: string, to: string) => (await dc.json<PingJson>("vm", "ping", from, to, "-c", "2", "-i", "100ms", "-W", "400ms")).received;
    expect(await ping("f1", k1.spec.nics[0]!.ip)).toBe(2);
    expect(await ping("k1", f1.spec.nics[0]!.ip)).toBe(2);
    await expect(dc.simdc("vm", "ping", "o1", f1.spec.nics[0]!.ip, "-c", "1")).rejects.toThrow(/no route/);
    expect(await ping("f1", o1.spec.nics[0]!.ip)).toBe(0);
    // Traced: f1's host routes (table 25) and hands the packet to k1's port, here or over a tunnel.
    const segment = (await dc.json<{ segmentId: number }>("net", "get", "front")).segmentId;
    const routerMac = `0a:00:00:${[16, 8, 0].map((b) => ((segment >> b) & 0xff).toString(16).padStart(2, "0")).join(":")}`;
    const ofport = (await dc.json<{ ports: { name: string; ofport: number }[] }>("ofctl", "dump-ports", f1.hostId)).ports.find((p) => p.name === "f1.eth0")!.ofport;
    const hops = await dc.json<{ hostId: string; flows: string[]; outputs: { name: string }[] }[]>("trace", f1.hostId, `in_port=${ofport},dl_src=${f1.spec.nics[0]!.mac},dl_dst=${routerMac},icmp,nw_src=${f1.spec.nics[0]!.ip},nw_dst=${k1.spec.nics[0]!.ip}`);
    expect(hops[0]!.flows.some((f) => f.startsWith("table=25,"))).toBe(true);
    expect(hops[hops.length - 1]!.outputs.map((o) => o.name)).toEqual(["k1.eth0"]);
    type Matrix = { cells: { from: string; to: string; reached: boolean; allowed: boolean }[]; matchesPolicy: boolean };
    const matrix = await dc.json<Matrix>("net", "reachability");
    expect(matrix.matchesPolicy).toBe(true);
    expect(Object.fromEntries(matrix.cells.map((c) => [`${c.from}>${c.to}`, c.reached]))).toMatchObject({ "f1>k1": true, "k1>f1": true, "f1>o1": false, "o1>k1": false });
    expect(await dc.simdc("router", "list")).toMatch(/edge\s+acme\s+front, back/);
    for (const id of ["f1", "k1", "o1"]) await dc.simdc("vm", "delete", id, "--wait", "hosts");
    await dc.simdc("router", "delete", "edge");
    for (const net of ["front", "back", "other"]) await dc.simdc("net", "delete", net);
  });

  it("sdn: a NIC attached to a running VM comes up by DHCP and reaches its network; detached, its address answers no more", async () => {
    const r1 = await vm(dc, "r1");
    const attached = await dc.simdc("vm", "nic", "add", "r1", "blue,ip=10.1.0.50", "--wait", "hosts");
    expect(attached).toMatch(/^vm r1: eth0 red 10\.2\.0\.\d+ \S+; eth1 blue 10\.1\.0\.50 02:\S+ \(vm generation 2\)/);
    await eventually("r1.eth1 bound", async () => {
      type Ports = { ports: { name: string; ip: string }[] };
      const ports = await dc.json<Ports>("ofctl", "dump-ports", r1.hostId);
      return ports.ports.find((p) => p.name === "r1.eth1")?.ip === "10.1.0.50" ? true : undefined;
    });
    expect((await dc.json<PingJson>("vm", "ping", "b1", "10.1.0.50", "-c", "2", "-i", "100ms")).received).toBe(2);
    await expect(dc.simdc("vm", "nic", "add", "r1", "blue,ip=10.1.0.50")).rejects.toThrow(/ALREADY_EXISTS.*10\.1\.0\.50 is in use/);
    expect(await dc.simdc("vm", "nic", "remove", "r1", "1", "--wait", "hosts")).toMatch(/^vm r1: eth0 red \S+ \S+ \(vm generation 3\)/);
    expect((await dc.json<PingJson>("vm", "ping", "b1", "10.1.0.50", "-c", "1", "-W", "300ms")).received).toBe(0);
    await expect(dc.simdc("vm", "nic", "remove", "r1", "5")).rejects.toThrow(/NOT_FOUND: vm r1 has no eth5/);
    // Its address is free again.
    expect(await dc.simdc("vm", "nic", "add", "r1", "blue,ip=10.1.0.50")).toContain("eth1 blue 10.1.0.50");
    await dc.simdc("vm", "nic", "remove", "r1", "1", "--wait", "hosts");
  });

  it("sdn: a NIC moved in place to another network and address keeps its place, MAC and port, asks DHCP again, and answers at its new address only", async () => {
    await dc.simdc("vm", "create", "m1", "--boot-volume", "boot", "--nic", "red", "--wait", "hosts");
    const before = await addressed(dc, "m1");
    type NicJson = { network: string; mac: string; ip: string; ofport: number };
    const nicOf = async () => (await dc.json<{ spec: { nics: NicJson[] } }>("vm", "get", "m1")).spec.nics[0]!;
    const old = await nicOf();
    const moved = await dc.simdc("vm", "nic", "set", "m1", "0", "--network", "blue", "--ip", "10.1.0.60", "--wait", "hosts");
    expect(moved).toMatch(new RegExp(`^vm m1: eth0 blue 10\\.1\\.0\\.60 ${old.mac} \\(vm generation 2\\)`));
    expect(await nicOf()).toMatchObject({ network: "blue", ip: "10.1.0.60", mac: old.mac, ofport: old.ofport });
    const bound = (ip: string) => async () => {
      const ports = await dc.json<PortsJson>("ofctl", "dump-ports", before.hostId);
      return ports.ports.find((p) => p.name === "m1.eth0")?.ip === ip ? true : undefined;
    };
    await eventually("m1.eth0 bound on blue", bound("10.1.0.60"));
    expect((await dc.json<PingJson>("vm", "ping", "b1", "10.1.0.60", "-c", "2", "-i", "100ms")).received).toBe(2);
    // A new address on the same network: the old one answers no more, and is free again.
    await dc.simdc("vm", "nic", "set", "m1", "0", "--ip", "10.1.0.61", "--wait", "hosts");
    await eventually("m1.eth0 bound at .61", bound("10.1.0.61"));
    expect((await dc.json<PingJson>("vm", "ping", "b1", "10.1.0.61", "-c", "2", "-i", "100ms")).received).toBe(2);
    expect((await dc.json<PingJson>("vm", "ping", "b1", "10.1.0.60", "-c", "1", "-W", "300ms")).received).toBe(0);
    // Refused, and nothing changes: an address in use, an unknown network, a multicast MAC, an unknown NIC, groups and addresses at once.
    const b1 = await vm(dc, "b1");
    await expect(dc.simdc("vm", "nic", "set", "m1", "0", "--ip", b1.spec.nics[0]!.ip)).rejects.toThrow(/ALREADY_EXISTS: eth0: 10\.1\.0\.\d+ is in use on network blue/);
    await expect(dc.simdc("vm", "nic", "set", "m1", "0", "--network", "nosuch")).rejects.toThrow(/NOT_FOUND: eth0: network nosuch does not exist/);
    await expect(dc.simdc("vm", "nic", "set", "m1", "0", "--mac", "01:00:00:00:00:01")).rejects.toThrow(/INVALID_ARGUMENT: eth0.mac "01:00:00:00:00:01" is not a unicast MAC/);
    await expect(dc.simdc("vm", "nic", "set", "m1", "3", "--ip", "10.1.0.62")).rejects.toThrow(/NOT_FOUND: vm m1 has no eth3/);
    await expect(dc.simdc("vm", "nic", "set", "m1", "0", "--ip", "10.1.0.62", "--sg", "x")).rejects.toThrow(/not both at once/);
    expect(await nicOf()).toMatchObject({ network: "blue", ip: "10.1.0.61", mac: old.mac, ofport: old.ofport });
    await dc.simdc("vm", "delete", "m1", "--wait", "hosts");
  });

  it("sdn: a network pinned to the dedicated uplink sends its tunnels by the hosts' second NIC", async () => {
    expect(await dc.simdc("net", "create", "pay", "--mode", "host-only", "--subnet", "10.4.0.0/24", "--uplink", "dedicated")).toMatch(/; dedicated uplink$/m);
    await dc.simdc("vm", "create", "p1", "--boot-volume", "boot", "--nic", "pay");
    await dc.simdc("vm", "create", "p2", "--boot-volume", "boot", "--nic", "pay");
    const p1 = await addressed(dc, "p1");
    const p2 = await addressed(dc, "p2");
    expect(p1.hostId).not.toBe(p2.hostId);
    type Nics = { nics: { name: string; txPackets: number }[] };
    const before = (await dc.json<Nics>("ofctl", "dump-ports", p1.hostId)).nics;
    expect((await dc.json<PingJson>("vm", "ping", "p1", p2.spec.nics[0]!.ip, "-c", "3", "-i", "100ms")).received).toBe(3);
    const after = (await dc.json<Nics>("ofctl", "dump-ports", p1.hostId)).nics;
    expect(after[1]!.txPackets - before[1]!.txPackets).toBe(3);
    expect(after[0]!.txPackets).toBe(before[0]!.txPackets);
    await expect(dc.simdc("net", "create", "x", "--mode", "nat", "--subnet", "10.99.0.0/24", "--uplink", "fast")).rejects.toThrow(/--uplink must be converged or dedicated/);
  });

  it("sdn: NIC addresses are checked: taken, outside the subnet, an unknown network; a network with NICs cannot be deleted", async () => {
    await expect(dc.simdc("vm", "create", "x1", "--boot-volume", "boot", "--nic", "blue,ip=10.1.0.20")).rejects.toThrow(/ALREADY_EXISTS.*10.1.0.20 is in use/);
    await expect(dc.simdc("vm", "create", "x2", "--boot-volume", "boot", "--nic", "blue,ip=10.9.0.5")).rejects.toThrow(/INVALID_ARGUMENT.*in none of network blue's subnets/);
    await expect(dc.simdc("vm", "create", "x3", "--boot-volume", "boot", "--nic", "green")).rejects.toThrow(/NOT_FOUND.*network green does not exist/);
    const mac = (await vm(dc, "b1")).spec.nics[0]!.mac;
    await expect(dc.simdc("vm", "create", "x4", "--boot-volume", "boot", "--nic", `blue,mac=${mac}`)).rejects.toThrow(/ALREADY_EXISTS.*MAC/);
    await expect(dc.simdc("vm", "create", "x5", "--boot-volume", "boot", "--nic", "blue,mac=01:00:00:00:00:01")).rejects.toThrow(/INVALID_ARGUMENT.*unicast/);
    await expect(dc.simdc("net", "delete", "blue")).rejects.toThrow(/FAILED_PRECONDITION.*NIC/);
    for (const id of ["x1", "x2", "x3", "x4", "x5"]) await expect(dc.simdc("vm", "get", id)).rejects.toThrow(/NOT_FOUND/);
  });

  it("sdn: on a reactive network the first packet to a destination asks the controller, whose answer installs the flow with an idle timeout", async () => {
    await dc.simdc("net", "create", "green", "--mode", "host-only", "--subnet", "10.3.0.0/24", "--flow-setup", "reactive");
    expect(await dc.simdc("net", "list")).toMatch(/^green\s.*\sreactive\s+converged$/m);
    await dc.simdc("vm", "create", "g1", "--boot-volume", "boot", "--nic", "green");
    await dc.simdc("vm", "create", "g2", "--boot-volume", "boot", "--nic", "green");
    const g1 = await addressed(dc, "g1");
    const g2 = await addressed(dc, "g2");
    const before = await dc.simdc("ofctl", "dump-flows", g1.hostId);
    expect(before).toMatch(/metadata=0x\w+ actions=controller\(id=1\)/);
    expect(before).not.toContain(g2.spec.nics[0]!.mac);
    const ping = await dc.json<PingJson>("vm", "ping", "g1", g2.spec.nics[0]!.ip, "-c", "3", "-i", "100ms");
    expect(ping.received).toBe(3);
    const after = await dc.simdc("ofctl", "dump-flows", g1.hostId);
    expect(after).toMatch(new RegExp(`cookie=0x5eac7,.*idle_timeout=30,.*dl_dst=${g2.spec.nics[0]!.mac}[, ]`));
    type Reactive = { centralPacketIns: number; flowMods: number; packetInsDropped: number };
    const counts = await dc.json<Reactive>("ofctl", "dump-ports", g1.hostId);
    expect(counts.centralPacketIns).toBeGreaterThanOrEqual(1);
    expect(counts.flowMods).toBeGreaterThanOrEqual(1);
    expect(counts.packetInsDropped).toBe(0);
    // A new document (a VM joins) keeps the reactive flows: they are the controller's answers, not the document's.
    await dc.simdc("vm", "create", "g3", "--boot-volume", "boot", "--nic", "green", "--wait", "hosts");
    expect(await dc.simdc("ofctl", "dump-flows", g1.hostId)).toContain("cookie=0x5eac7");
  });

  it("sdn: the controller killed, an established ping goes on; nothing new is configured until it returns, then a new VM's port comes up", async () => {
    const b1 = await vm(dc, "b1");
    // Its host and agent named, so the ping never needs the controller.
    const ping = backgroundPing(dc, ["b1", "10.1.0.20", "-c", "60", "-i", "100ms", "--host", b1.hostId, "--agent", b1.hostId.replace("host", "agent")]);
    const flowsBefore = await dc.simdc("ofctl", "dump-flows", "host-1", "--agent", "agent-1");
    await dc.simdc("fault", "kill", "controller-1");
    await eventually("host-1's vswitch lost its controller", async () => {
      const ports = await dc.json<PortsJson>("ofctl", "dump-ports", "host-1", "--agent", "agent-1");
      if (ports.controllerConnected) throw new Error("still connected");
      expect(ports).toMatchObject({ failMode: "secure", failOpen: false });
      return true;
    });
    // Secure: the flows stay as they were.
    const strip = (text: string) => text.replace(/n_packets=\d+, n_bytes=\d+, /g, "");
    expect(strip(await dc.simdc("ofctl", "dump-flows", "host-1", "--agent", "agent-1"))).toBe(strip(flowsBefore));
    await expect(dc.simdc("vm", "create", "b3", "--boot-volume", "boot", "--nic", "blue")).rejects.toThrow(/UNAVAILABLE/);
    const result = await ping;
    expect(result.received, JSON.stringify(result.replies.filter((r) => !r.received))).toBe(60);
    await dc.simdc("fault", "restart", "controller-1");
    await eventually("the controller back", () => dc.simdc("vm", "create", "b3", "--boot-volume", "boot", "--nic", "blue", "--wait", "hosts"), 30_000);
    const b3 = await addressed(dc, "b3");
    expect((await dc.json<PingJson>("vm", "ping", "b1", b3.spec.nics[0]!.ip, "-c", "2", "-i", "100ms")).received).toBe(2);
  }, 90_000);

  it("sdn: vswitches cut from their controller do not plug a new VM's port until the link heals, and established traffic goes on", async () => {
    await dc.simdc("fault", "add", "openflow-cut", "--action", "drop", "--subject", "*.api.v1.HostService.ProbeController.>", "--wait");
    await eventually("every vswitch lost its controller", async () => {
      for (const host of ["host-1", "host-2", "host-3"]) {
        const ports = await dc.json<PortsJson>("ofctl", "dump-ports", host);
        if (ports.controllerConnected) throw new Error(`${host} still connected`);
      }
      return true;
    });
    // The controller itself is up: the VM is created and runs, but no vswitch installs its port.
    await dc.simdc("vm", "create", "b4", "--boot-volume", "boot", "--nic", "blue");
    const b4 = await eventually("b4 running", async () => {
      const got = await vm(dc, "b4");
      if (got.status.state !== "VM_STATE_RUNNING") throw new Error(got.status.state);
      return got;
    });
    const ports = await dc.json<PortsJson>("ofctl", "dump-ports", b4.hostId);
    expect(ports.ports.map((p) => p.name)).not.toContain("b4.eth0");
    // Its host does not report the document realized while the flows are held back (hv_cfg stays behind, as OVN's).
    const sync = await dc.json<{ laggingCount: number; lagging: { hostId: string }[] }>("sync");
    expect(sync.lagging.map((h) => h.hostId)).toContain(b4.hostId);
    expect((await dc.json<PingJson>("vm", "ping", "b1", b4.spec.nics[0]!.ip, "-c", "1", "-W", "300ms")).received).toBe(0);
    expect((await dc.json<PingJson>("vm", "ping", "b1", "10.1.0.20", "-c", "2", "-i", "100ms")).received).toBe(2);
    await dc.simdc("fault", "clear", "openflow-cut", "--wait");
    await addressed(dc, "b4");
    expect((await dc.json<PingJson>("vm", "ping", "b1", b4.spec.nics[0]!.ip, "-c", "2", "-i", "100ms")).received).toBe(2);
  }, 90_000);
});

describe("sdn: standalone mode", () => {
  let dc: UpDatacenter;

  beforeAll(async () => {
    dc = await startUp(["--hosts", "2", "--inactivity-probe-ms", String(probeMs), "--fail-mode", "standalone"]);
    await setUp(dc);
    await dc.simdc("net", "create", "blue", "--mode", "host-only", "--subnet", "10.1.0.0/24");
  }, 120_000);

  afterAll(async () => {
    await dc?.stop();
  });

  it("sdn: standalone vswitches fail open after 3 probe intervals, forward by MAC learning, and resync when the controller returns", async () => {
    await dc.simdc("vm", "create", "s1", "--boot-volume", "boot", "--nic", "blue");
    await dc.simdc("vm", "create", "s2", "--boot-volume", "boot", "--nic", "blue");
    const s1 = await addressed(dc, "s1");
    const s2 = await addressed(dc, "s2");
    expect(s1.hostId).not.toBe(s2.hostId);
    const compiled = await dc.simdc("ofctl", "dump-flows", s1.hostId, "--agent", s1.hostId.replace("host", "agent"));
    await dc.simdc("fault", "kill", "controller-1");
    const agent = s1.hostId.replace("host", "agent");
    // Each vswitch fails open on its own probe timer: both must have before traffic crosses learning switches only.
    await eventually("both vswitches failed open", async () => {
      for (const host of [s1.hostId, s2.hostId]) {
        const ports = await dc.json<PortsJson>("ofctl", "dump-ports", host, "--agent", host.replace("host", "agent"));
        if (!ports.failOpen) throw new Error(`${host} not yet`);
      }
      return true;
    });
    const flows = await dc.simdc("ofctl", "dump-flows", s1.hostId, "--agent", agent);
    expect(flows).toMatch(/priority=0 actions=normal/);
    expect(flows).not.toMatch(/goto_table/);
    // Learning switches on both sides: ARP floods, answers are learned, echoes go through.
    const ping = await dc.json<PingJson>("vm", "ping", "s1", s2.spec.nics[0]!.ip, "--host", s1.hostId, "--agent", agent, "-c", "3", "-i", "100ms");
    expect(ping.received).toBe(3);
    await dc.simdc("fault", "restart", "controller-1");
    await eventually("s1's vswitch resynced", async () => {
      const now = await dc.simdc("ofctl", "dump-flows", s1.hostId, "--agent", agent);
      const strip = (text: string) => text.replace(/n_packets=\d+, n_bytes=\d+, /g, "");
      expect(strip(now)).toBe(strip(compiled));
      return true;
    }, 30_000);
  }, 90_000);
});
