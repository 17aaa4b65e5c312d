// The underlay on a real nats-server: two hosts' data planes, each under
// its own agent's connection, ping across it; a third agent that replays a
// genuine train in the first host's name, on its own sender token (the only
// one NATS permissions let it use), is refused and counted, and nothing of
// it reaches the guest; so is a train whose sender token is the right agent
// but that claims a host that agent does not run. A train whose records are
// cut short is refused whole, a record with a time that is no time alone.
// The flow control: a sender keeps at most a window of packets on their way
// to an agent that credits none of them, and tries again after the stall
// time; a receiver that keeps up keeps its senders' windows open.

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Bus } from "@simdc/bus";
import { createLogger, wallClock } from "@simdc/common";
import { simdc } from "@simdc/proto";
import { connectTestBus, eventually, startTestNats, type TestNats } from "@simdc/testkit";
import { packetWords, parseIp } from "@simdc/vswitch";
import { HostDatapath } from "./datapath.js";
import { checkNetworkSection } from "./section.js";
import { twoHostSection } from "./two-hosts.js";
import { recordBytes, Underlay } from "./underlay.js";
import { stallMs, windowPackets } from "./flow-control.js";
import type { Tunnel } from "./section.js";

import v1 = simdc.v1;

const logger = createLogger({ service: "test", id: "underlay", level: "silent" });
let nats: TestNats;
const buses: Bus[] = [];
const hosts = new Map<string, HostDatapath>();
const underlays = new Map<string, Underlay>();

beforeAll(async () => {
  nats = await startTestNats();
  for (const hostId of ["h1", "h2"] as const) {
    const agentId = `agent-${hostId}`;
    const bus = await connectTestBus(nats.url, { processId: agentId });
    buses.push(bus);
    const underlay = new Underlay(bus, agentId, (id) => hosts.get(id), logger);
    const dp = new HostDatapath({
      hostId,
      clock: wallClock,
      random: () => 0.5,
      logger,
      tunnel: (t, h, p, b) => underlay.send(hostId, t, h, p, b),
      failMode: "secure",
      inactivityProbeMs: 600_000,
      probe: () => Promise.resolve(true),
      packetIn: () => Promise.resolve([]),
      uplinks: [{ name: "nic0", bandwidthMbps: 10_000, queueBytes: 1 << 20, latencyMs: 0.05 }],
      nicDrops: () => undefined,
      heldInstalled: () => undefined,
    });
    dp.apply(checkNetworkSection(twoHostSection(hostId)));
    dp.setRunning(hostId === "h1" ? "a" : "b", true);
    hosts.set(hostId, dp);
    underlay.start();
    underlays.set(hostId, underlay);
    await bus.flush();
  }
});

afterAll(async () => {
  for (const u of underlays.values()) u.stop();
  for (const dp of hosts.values()) dp.stop();
  for (const bus of buses) await bus.close();
  await nats?.dispose();
});

describe("underlay", () => {
  it("underlay: a train is taken only from the agent that runs the host it claims to come from", async () => {
    // A genuine train from h1, captured on the wire.
    const spy = await connectTestBus(nats.url, { processId: "spy" });
    buses.push(spy);
    const captured: { subject: string; train: v1.UnderlayTrain }[] = [];
    spy.subscribe(spy.subjects.underlay("agent-h2", "h2", "*"), v1.UnderlayTrain, (train, subject) => void captured.push({ subject, train }));
    await spy.flush();
    // DHCP gives the guests their addresses; then a ping crosses the underlay.
    const reply = await eventually(
      "a ping across the underlay",
      async () => {
        const r = await hosts.get("h1")!.ping("a", parseIp("10.0.0.3"), 1, 10, 500);
        return r.received === 1 ? r : undefined;
      },
      10_000,
    );
    expect(reply.received).toBe(1);
    const genuine = await eventually("a captured train", () => captured.find((c) => c.train.fromHost === "h1"));
    expect(genuine.subject).toBe(spy.subjects.underlay("agent-h2", "h2", "agent-h1"));

    const h2 = underlays.get("h2")!;
    const rxBefore = hosts.get("h2")!.dumpPorts().find((p) => p.name === "tun-h1")!.rxPackets;
    const refusedBefore = h2.trainsRefused;
    // A liar replays it on its own sender token, claiming h1; and agent-h1's token claiming a host it does not run.
    const liar = await connectTestBus(nats.url, { processId: "agent-x" });
    buses.push(liar);
    liar.publish(liar.subjects.underlay("agent-h2", "h2", "agent-x"), v1.UnderlayTrain, genuine.train);
    liar.publish(liar.subjects.underlay("agent-h2", "h2", "agent-h1"), v1.UnderlayTrain, { ...genuine.train, fromHost: "h9" });
    await liar.flush();
    await eventually("both trains refused", () => (h2.trainsRefused === refusedBefore + 2 ? true : undefined), 5_000);
    expect(hosts.get("h2")!.dumpPorts().find((p) => p.name === "tun-h1")!.rxPackets).toBe(rxBefore);
    expect(hosts.get("h2")!.underlayRefused).toBe((2 * genuine.train.records.length) / recordBytes);
    // The genuine sender still gets through.
    const again = await hosts.get("h1")!.ping("a", parseIp("10.0.0.3"), 1, 10, 1_000);
    expect(again.received).toBe(1);
  });

  it("underlay: a train whose records are cut short is refused whole; a record whose time is no time is refused alone", async () => {
    const h2 = underlays.get("h2")!;
    const dp2 = hosts.get("h2")!;
    const trainsBefore = h2.trainsRefused;
    const packetsBefore = dp2.underlayRefused;
    const rxBefore = dp2.dumpPorts().find((p) => p.name === "tun-h1")!.rxPackets;
    const forger = await connectTestBus(nats.url, { processId: "forger" });
    buses.push(forger);
    const subject = forger.subjects.underlay("agent-h2", "h2", "agent-h1");
    for (const records of [new Uint8Array(recordBytes + 3), new Uint8Array(recordBytes - 1)]) forger.publish(subject, v1.UnderlayTrain, { fromHost: "h1", toHost: "h2", records });
    // One record carrying an echo sent at NaN ms.
    const timeless = new Uint8Array(recordBytes);
    const view = new DataView(timeless.buffer);
    view.setUint32(4 * packetWords + 4, 1, true);
    view.setFloat64(4 * packetWords + 24, Number.NaN, true);
    forger.publish(subject, v1.UnderlayTrain, { fromHost: "h1", toHost: "h2", records: timeless });
    await forger.flush();
    await eventually("two trains and one record refused", () => (h2.trainsRefused === trainsBefore + 2 && dp2.underlayRefused === packetsBefore + 4 ? true : undefined), 5_000);
    expect(dp2.dumpPorts().find((p) => p.name === "tun-h1")!.rxPackets).toBe(rxBefore);
  });

  it("underlay: a sender keeps at most a window of packets on their way to an agent that credits none, and tries again after the stall time", async () => {
    const h1 = underlays.get("h1")!;
    // A host no agent serves: nothing takes these trains, so no credit comes back.
    const nowhere: Tunnel = { ofport: 99, hostId: "h9", agentId: "agent-gone" };
    const words = new Uint32Array(packetWords);
    const throttledBefore = h1.packetsThrottled;
    let admitted = 0;
    for (let i = 0; i < windowPackets + 500; i++) if (h1.send("h1", nowhere, words, {}, 100)) admitted += 1;
    expect(admitted).toBe(windowPackets);
    expect(h1.packetsThrottled - throttledBefore).toBe(500);
    await wallClock.sleep(stallMs / 2);
    expect(h1.send("h1", nowhere, words, {}, 100)).toBe(false);
    await wallClock.sleep(stallMs / 2 + 100);
    // A whole window without credit counts as lost: the sender tries again, one window's worth.
    let again = 0;
    for (let i = 0; i < windowPackets + 10; i++) if (h1.send("h1", nowhere, words, {}, 100)) again += 1;
    expect(again).toBe(windowPackets);
  });

  it("underlay: a receiver that keeps up keeps its sender's window open: many windows' worth arrive, none throttled", async () => {
    const h1 = underlays.get("h1")!;
    const dp1 = hosts.get("h1")!;
    const dp2 = hosts.get("h2")!;
    const received = (): number => dp2.traffic.stats().received.reduce((n, r) => n + Number(r.received), 0);
    const throttledBefore = dp1.underlayThrottled;
    const receivedBefore = received();
    const sentBefore = h1.packetsSent;
    // 4 windows' worth in bursts of a quarter window, each once the last is taken.
    const flow = dp1.startTraffic({ vmId: "a", target: parseIp("10.0.0.3"), kind: v1.TrafficKind.TRAFFIC_KIND_UDP_STREAM, ratePps: 10_000, bytes: 200, responseBytes: 0, dstPort: 5001, durationMs: 0 });
    await eventually("four windows' worth taken", () => (received() - receivedBefore >= 4 * windowPackets ? true : undefined), 20_000);
    dp1.traffic.stop(flow.flowId);
    await eventually("all sent taken", () => (received() - receivedBefore === h1.packetsSent - sentBefore ? true : undefined), 5_000);
    expect(dp1.underlayThrottled).toBe(throttledBefore);
  });
  it("underlay: credit that does not decode, comes from no agent sent to, or replays an old train changes nothing and harms nothing", async () => {
    const h1 = underlays.get("h1")!;
    const dp2 = hosts.get("h2")!;
    const forger = await connectTestBus(nats.url, { processId: "credit-forger" });
    buses.push(forger);
    forger.publishEncoded(forger.subjects.underlayCredit("agent-h1", "agent-h2"), v1.UnderlayCredit, new Uint8Array([0xff, 0xff, 0xff]));
    forger.publish(forger.subjects.underlayCredit("agent-h1", "agent-nobody"), v1.UnderlayCredit, { seq: 4_000_000_000 });
    for (let i = 0; i < 3; i++) forger.publish(forger.subjects.underlayCredit("agent-h1", "agent-h2"), v1.UnderlayCredit, { seq: 1 });
    await forger.flush();
    // The path still carries traffic, none of it throttled.
    const throttled = hosts.get("h1")!.underlayThrottled;
    const received = (): number => dp2.traffic.stats().received.reduce((n, r) => n + Number(r.received), 0);
    const before = received();
    const flow = hosts.get("h1")!.startTraffic({ vmId: "a", target: parseIp("10.0.0.3"), kind: v1.TrafficKind.TRAFFIC_KIND_UDP_STREAM, ratePps: 2_000, bytes: 200, responseBytes: 0, dstPort: 5002, durationMs: 0 });
    await eventually("traffic after forged credit", () => (received() - before >= 1_000 ? true : undefined), 10_000);
    hosts.get("h1")!.traffic.stop(flow.flowId);
    expect(hosts.get("h1")!.underlayThrottled).toBe(throttled);
    expect(h1.trainsSent).toBeGreaterThan(0);
  });
});
