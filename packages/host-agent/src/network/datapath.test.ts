// Two hosts' data planes on the manual clock, their tunnels joined directly
// (pure logic: what NATS carries is proven by the e2e): DHCP's timers as RFC
// 2131 puts them (a 3600 s lease renews at 1800 s, rebinds at 3150 s, is
// dead at 3600 s), a ping across the overlay, the fail modes at the times
// OVS keeps (secure keeps its flows for good; standalone flushes and learns
// after 3 probe intervals), a section held back while the controller is
// lost, and hand edits refused on the controller's tables.

import { describe, expect, it } from "vitest";
import { createLogger, ManualClock } from "@simdc/common";
import { simdc } from "@simdc/proto";
import { formatFlow, parseFlow, parseIp } from "@simdc/vswitch";
import { HostDatapath } from "./datapath.js";
import type { FailMode } from "./controller-link.js";
import { checkNetworkSection } from "./section.js";
import { twoHostSection } from "./two-hosts.js";

import v1 = simdc.v1;

const logger = createLogger({ service: "test", id: "datapath", level: "silent" });
const section = twoHostSection;

/** Header words as the underlay carries them. */
function littleEndian(words: Uint32Array): DataView {
  const view = new DataView(new ArrayBuffer(words.length * 4));
  words.forEach((w, i) => view.setUint32(4 * i, w, true));
  return view;
}

function pair(failMode: FailMode = "secure") {
  const clock = new ManualClock();
  const answering = { value: true };
  /** How many held-back sections went in once the controller answered again. */
  const held = { value: 0 };
  const hosts = new Map<string, HostDatapath>();
  const make = (hostId: string) =>
    new HostDatapath({
      hostId,
      clock,
      random: () => 0.5,
      logger,
      // The wire, joined directly: a packet leaves one host and enters the other.
      tunnel: (tunnel, headers, payload, bytes) => {
        queueMicrotask(() => hosts.get(tunnel.hostId)?.fromUnderlay(hostId, littleEndian(headers), 0, payload, bytes));
        return true;
      },
      failMode,
      inactivityProbeMs: 5_000,
      probe: () => Promise.resolve(answering.value),
      packetIn: () => Promise.resolve([]),
      uplinks: [{ name: "nic0", bandwidthMbps: 10_000, queueBytes: 1 << 20, latencyMs: 0.05 }],
      nicDrops: () => undefined,
      heldInstalled: () => (held.value += 1),
    });
  hosts.set("h1", make("h1"));
  hosts.set("h2", make("h2"));
  const h1 = hosts.get("h1")!;
  const h2 = hosts.get("h2")!;
  h1.apply(checkNetworkSection(section("h1")));
  h2.apply(checkNetworkSection(section("h2")));
  return { clock, h1, h2, answering, held };
}

const portOf = (dp: HostDatapath, name: string) => dp.dumpPorts().find((p) => p.name === name)!;
const controllerFlows = (dp: HostDatapath) => dp.dumpFlows(-1).map((l) => l.replace(/n_packets=\d+, n_bytes=\d+, /, ""));

describe("datapath", () => {
  it("dhcp: DORA at link up; a 3600 s lease renews at 1800 s, rebinds at 3150 s with no answer, and is dead at 3600 s", async () => {
    const { clock, h1 } = pair();
    h1.setRunning("a", true);
    await clock.advanceAsync(0);
    expect(portOf(h1, "a.eth0")).toMatchObject({ ip: "10.0.0.2", dhcp: "bound" });
    const packetIns = h1.packetIns;
    expect(packetIns).toBe(2); // DISCOVER and REQUEST
    await clock.advanceAsync(1_800_000 - 1);
    expect(portOf(h1, "a.eth0").dhcp).toBe("bound");
    await clock.advanceAsync(1);
    // Renewed (unicast REQUEST, ACK) and bound again for a fresh lease.
    expect(h1.packetIns).toBe(packetIns + 1);
    expect(portOf(h1, "a.eth0").dhcp).toBe("bound");
    // The server stops answering: from the next T1 the client renews, then rebinds, then loses the address.
    h1.modFlows(["table=10"], true, true);
    const boundAt = clock.nowMs();
    await clock.advanceAsync(boundAt + 1_800_000 - clock.nowMs());
    expect(portOf(h1, "a.eth0").dhcp).toBe("renewing");
    await clock.advanceAsync(boundAt + 3_150_000 - 1 - clock.nowMs());
    expect(portOf(h1, "a.eth0").dhcp).toBe("renewing");
    await clock.advanceAsync(1);
    expect(portOf(h1, "a.eth0").dhcp).toBe("rebinding");
    expect(portOf(h1, "a.eth0").ip).toBe("10.0.0.2");
    await clock.advanceAsync(boundAt + 3_600_000 - clock.nowMs());
    expect(portOf(h1, "a.eth0")).toMatchObject({ ip: "", dhcp: "selecting" });
  });

  it("ping: across the overlay, with ARP answered by the local responder; a stopped VM cannot ping", async () => {
    const { clock, h1, h2 } = pair();
    h1.setRunning("a", true);
    h2.setRunning("b", true);
    await clock.advanceAsync(0);
    const ping = h1.ping("a", parseIp("10.0.0.3"), 3, 1_000, 1_000);
    await clock.advanceAsync(3_000);
    expect(await ping).toMatchObject({ sourceIp: "10.0.0.2", sent: 3, received: 3 });
    expect(portOf(h1, "tun-h2")).toMatchObject({ txPackets: 3, rxPackets: 3 });
    expect(portOf(h2, "b.eth0")).toMatchObject({ txPackets: 3 + 2, rxPackets: 3 + 2 });
    h1.setRunning("a", false);
    await expect(h1.ping("a", parseIp("10.0.0.3"), 1, 1_000, 1_000)).rejects.toMatchObject({ code: "FAILED_PRECONDITION" });
    await expect(h1.ping("zz", parseIp("10.0.0.3"), 1, 1_000, 1_000)).rejects.toMatchObject({ code: "NOT_FOUND" });
  });

  it("ping: a guest trusts an address it learned by ARP for 30 s, then asks again (the address may be another NIC's by then)", async () => {
    const { clock, h1, h2 } = pair();
    h1.setRunning("a", true);
    h2.setRunning("b", true);
    await clock.advanceAsync(0);
    const asked = () => h1.packetIns;
    const once = async () => {
      const ping = h1.ping("a", parseIp("10.0.0.3"), 1, 100, 1_000);
      await clock.advanceAsync(1_000);
      expect((await ping).received).toBe(1);
    };
    await once();
    const afterFirst = asked();
    await clock.advanceAsync(10_000);
    await once();
    expect(asked()).toBe(afterFirst);
    await clock.advanceAsync(30_000);
    await once();
    expect(asked()).toBe(afterFirst + 1);
  });

  it("conntrack: the connections a section's ct flows commit age out on the simulated clock (ICMP: 30 s)", async () => {
    const { clock, h1, h2 } = pair();
    const tracked = section("h1");
    tracked.flows = [...(tracked.flows ?? []), "table=0,priority=110,in_port=1,dl_src=02:00:00:00:00:0a,ip actions=ct(commit,zone=1),set_field:0x7->metadata,goto_table:10"];
    h1.apply(checkNetworkSection(tracked));
    h1.setRunning("a", true);
    h2.setRunning("b", true);
    await clock.advanceAsync(0);
    const ping = h1.ping("a", parseIp("10.0.0.3"), 1, 100, 1_000);
    await clock.advanceAsync(1_000);
    expect((await ping).received).toBe(1);
    // The guest's DHCP exchange (UDP, never answered through the tables) and the echo.
    expect(h1.vswitch.dumpConntrack().map((c) => c.split(",")[0])).toEqual(["udp", "icmp"]);
    await clock.advanceAsync(32_000);
    expect(h1.vswitch.dumpConntrack()).toEqual([]);
    expect(h1.vswitch.conntrackStats().expired).toBe(2);
  });

  it("traffic: a UDP flow sends what its rate owes over its duration, and all of it arrives across the overlay", async () => {
    const { clock, h1, h2 } = pair();
    h1.setRunning("a", true);
    h2.setRunning("b", true);
    await clock.advanceAsync(0);
    const udp = { vmId: "a", target: parseIp("10.0.0.3"), kind: v1.TrafficKind.TRAFFIC_KIND_UDP_STREAM, ratePps: 500, bytes: 400, responseBytes: 400, dstPort: 5001, durationMs: 2_000 };
    const { flowId } = h1.startTraffic(udp);
    await clock.advanceAsync(3_000);
    const sent = h1.traffic.stats().sending.find((f) => f["flowId"] === flowId)!;
    expect(sent).toMatchObject({ running: false });
    expect(sent["sent"]).toBeGreaterThanOrEqual(995);
    expect(sent["sent"]).toBeLessThanOrEqual(1_000);
    expect(h2.traffic.stats().received).toMatchObject([{ vmId: "b", flowId, received: sent["sent"], bytes: (sent["sent"] as number) * 400 }]);
    expect(() => h1.startTraffic({ ...udp, bytes: 1_451 })).toThrow(/size_bytes 1451 does not fit/);
  });

  it("traffic: a request/response flow keeps one request out, answered by the target's guest; its round trips and rate follow the path, and a silent target times out", async () => {
    const { clock, h1, h2 } = pair();
    h1.setRunning("a", true);
    h2.setRunning("b", true);
    await clock.advanceAsync(0);
    const rr = { vmId: "a", target: parseIp("10.0.0.3"), kind: v1.TrafficKind.TRAFFIC_KIND_TCP_RR, ratePps: 200, bytes: 100, responseBytes: 1_200, dstPort: 80, durationMs: 2_000 };
    const { flowId } = h1.startTraffic(rr);
    await clock.advanceAsync(3_000);
    const done = h1.traffic.stats().sending.find((f) => f["flowId"] === flowId)!;
    // The underlay answers within a turn: the rate, not the path, bounds the transactions (200 a second for 2 s, less the first ARP).
    expect(done["transactions"]).toBeGreaterThanOrEqual(390);
    expect(done["transactions"]).toBeLessThanOrEqual(400);
    expect(done).toMatchObject({ running: false, timeouts: 0, sent: done["transactions"] });
    // The server counted every request; the responses carried the size asked for.
    expect(h2.traffic.stats().received).toMatchObject([{ vmId: "b", flowId, received: done["transactions"], bytes: (done["transactions"] as number) * 100 }]);
    expect(portOf(h2, "b.eth0")["rxBytes"]).toBeGreaterThanOrEqual((done["transactions"] as number) * 1_200);
    // b stops: a request goes unanswered, is given up after the timeout, and the next one goes.
    h2.setRunning("b", false);
    const silent = h1.startTraffic({ ...rr, durationMs: 0 });
    await clock.advanceAsync(3_500);
    const waiting = h1.traffic.stats().sending.find((f) => f["flowId"] === silent.flowId)!;
    expect(waiting).toMatchObject({ transactions: 0, timeouts: 3, sent: 4 });
    expect(() => h1.startTraffic({ ...rr, responseBytes: 1_451 })).toThrow(/response_bytes 1451 does not fit/);
    expect(() => h1.startTraffic({ ...rr, kind: 9 as v1.TrafficKind })).toThrow(/kind 9/);
  });

  it("fail modes: secure keeps its flows and installs nothing new while the controller is lost, then installs what came meanwhile", async () => {
    const { clock, h1, answering, held } = pair("secure");
    const flows = controllerFlows(h1);
    answering.value = false;
    await clock.advanceAsync(10_000);
    expect(h1.link.connected).toBe(false);
    // The same flows again change nothing to confirm: in place at once.
    expect(h1.apply(checkNetworkSection(section("h1")))).toBe(true);
    // A newer section comes (a VM c on this host) while lost: held back, and not in place (its generation is not reported realized).
    expect(h1.apply(checkNetworkSection(section("h1", [{ ofport: 2, vmId: "c", networkId: "n", segmentId: 7, mac: "02:00:00:00:00:0c", ip: "10.0.0.4", prefixLength: 24, leaseS: 3600 }])))).toBe(false);
    expect(held.value).toBe(0);
    await clock.advanceAsync(3_600_000);
    expect(controllerFlows(h1)).toEqual(flows);
    expect(h1.dumpPorts().map((p) => p.name)).toEqual(["a.eth0", "tun-h2"]);
    // c boots meanwhile: its NIC comes up with the port, and its first DHCP packet finds the port in place.
    h1.setRunning("c", true);
    answering.value = true;
    await clock.advanceAsync(5_000);
    expect(h1.link.connected).toBe(true);
    expect(held.value).toBe(1);
    expect(h1.dumpPorts().map((p) => p.name)).toEqual(["a.eth0", "c.eth0", "tun-h2"]);
    expect(portOf(h1, "c.eth0")).toMatchObject({ ip: "10.0.0.4", dhcp: "bound" });
  });

  it("fail modes: standalone flushes and learns after 3 probe intervals (15 s at the default 5 s), and resyncs when the controller answers", async () => {
    const { clock, h1, answering } = pair("standalone");
    const flows = controllerFlows(h1);
    answering.value = false;
    await clock.advanceAsync(14_999);
    expect(controllerFlows(h1)).toEqual(flows);
    await clock.advanceAsync(1);
    expect(h1.link.failOpen).toBe(true);
    expect(controllerFlows(h1)).toEqual(["table=0,priority=0 actions=normal"]);
    answering.value = true;
    await clock.advanceAsync(5_000);
    expect(h1.link.failOpen).toBe(false);
    expect(controllerFlows(h1)).toEqual(flows);
  });

  it("sections: a new section touches only the flows whose text changed (the others keep their counters), replacing a changed one in place", async () => {
    const { clock, h1, h2 } = pair();
    h1.setRunning("a", true);
    h2.setRunning("b", true);
    await clock.advanceAsync(0);
    const ping = h1.ping("a", parseIp("10.0.0.3"), 2, 100, 1_000);
    await clock.advanceAsync(1_000);
    expect((await ping).received).toBe(2);
    const counted = (dp: HostDatapath) => Object.fromEntries(dp.dumpFlows(-1).map((l) => [l.replace(/n_packets=\d+, n_bytes=\d+, /, ""), Number(/n_packets=(\d+)/.exec(l)![1])]));
    const dumped = (text: string) => formatFlow(parseFlow(text));
    const before = counted(h1);
    const toB = "table=20,priority=100,metadata=0x7,dl_dst=02:00:00:00:00:0b actions=set_field:0x7->tun_id,output:61440";
    const dhcp = "table=10,priority=110,metadata=0x7,udp,tp_src=68,tp_dst=67 actions=controller";
    expect(before[dumped(toB)]).toBeGreaterThan(0);
    // The same section again, with the flow to b changed (a second output) and the DHCP one gone.
    const changed = section("h1");
    changed.flows = (changed.flows ?? []).filter((f) => f !== dhcp).map((f) => (f === toB ? `${toB},output:61441` : f));
    h1.apply(checkNetworkSection(changed));
    const after = counted(h1);
    const replaced = dumped(`${toB},output:61441`);
    expect(Object.keys(after).sort()).toEqual([...Object.keys(before).filter((f) => f !== dumped(dhcp) && f !== dumped(toB)), replaced].sort());
    // The flows that stayed kept their counters; the replaced one is new.
    for (const [flow, n] of Object.entries(after)) expect(n, flow).toBe(flow === replaced ? 0 : before[flow]);
  });

  it("hand edits: the controller's tables are refused unless forced; a bad line changes nothing; the next section puts them back", () => {
    const { h1 } = pair();
    const flows = controllerFlows(h1);
    expect(() => h1.modFlows(["table=0,priority=1,actions=drop"], false, false)).toThrow(/PERMISSION_DENIED|controller's/);
    expect(() => h1.modFlows(["table=50,priority=1,actions=drop", "table=51,nw_src=1.2.3.4,actions=drop"], false, false)).toThrow(/flow 2: matching nw_src needs ip or arp/);
    expect(() => h1.modFlows(["table=0"], true, false)).toThrow(/controller's/);
    expect(() => h1.modFlows(["tabel=1"], true, false)).toThrow(/INVALID_ARGUMENT|write table=N/);
    expect(controllerFlows(h1)).toEqual(flows);
    expect(h1.modFlows(["table=0"], true, true)).toBe(2);
    h1.apply(checkNetworkSection(section("h1")));
    expect(controllerFlows(h1)).toEqual(flows);
  });

  it("timeouts: a hand-added flow with a hard timeout is removed on the simulated clock and counted", async () => {
    const { clock, h1 } = pair();
    h1.modFlows(["table=50,priority=1,hard_timeout=2,actions=drop", "table=51,priority=1,idle_timeout=5,actions=drop"], false, false);
    await clock.advanceAsync(1_999);
    expect(h1.dumpFlows(50)).toHaveLength(1);
    await clock.advanceAsync(1_001);
    expect(h1.dumpFlows(50)).toEqual([]);
    await clock.advanceAsync(3_000);
    expect(h1.dumpFlows(51)).toEqual([]);
    expect(h1.flowsRemoved).toBe(2);
  });

  it("bad sections: a bad flow, an ofport used twice or a tunnel numbered as a VM port is refused", () => {
    const bad = (change: (s: v1.IHostNetwork) => void) => {
      const s = section("h1");
      change(s);
      return () => checkNetworkSection(s);
    };
    expect(bad((s) => s.flows!.push("table=0,actions=output:x"))).toThrow(/flows\[8\]/);
    expect(bad((s) => (s.tunnels![0]!.ofport = 1))).toThrow(/ofport 1 is not in 61440/);
    expect(bad((s) => s.ports!.push({ ...s.ports![0], vmId: "z" }))).toThrow(/used twice/);
    expect(bad((s) => (s.ports![0]!.mac = "nope"))).toThrow(/INVALID_ARGUMENT|MAC/i);
  });
});
