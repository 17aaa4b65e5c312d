// The underlay on a real nats-server: two hosts' data planes, each under
// its own agent's connection, ping across it; a third agent that replays a
// genuine train in the first host's name, on its own sender token (the only
// one NATS permissions let it use), is refused and counted, and nothing of
// it reaches the guest; so is a train whose sender token is the right agent
// but that claims a host that agent does not run. A train whose columns do
// not agree is refused whole.

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Bus } from "@simdc/bus";
import { createLogger, wallClock } from "@simdc/common";
import { simdc } from "@simdc/proto";
import { connectTestBus, eventually, startTestNats, type TestNats } from "@simdc/testkit";
import { packetWords, parseIp } from "@simdc/vswitch";
import { HostDatapath } from "./datapath.js";
import { checkNetworkSection } from "./section.js";
import { twoHostSection } from "./two-hosts.js";
import { Underlay } from "./underlay.js";

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
    expect(hosts.get("h2")!.underlayRefused).toBe(2 * genuine.train.sizes.length);
    // The genuine sender still gets through.
    const again = await hosts.get("h1")!.ping("a", parseIp("10.0.0.3"), 1, 10, 1_000);
    expect(again.received).toBe(1);
  });

  it("underlay: a train whose columns do not agree (headers, sizes, payload columns) is refused whole and counted", async () => {
    const h2 = underlays.get("h2")!;
    const refusedBefore = h2.trainsRefused;
    const rxBefore = hosts.get("h2")!.dumpPorts().find((p) => p.name === "tun-h1")!.rxPackets;
    const words = new Uint8Array(4 * packetWords);
    const forger = await connectTestBus(nats.url, { processId: "forger" });
    buses.push(forger);
    const subject = forger.subjects.underlay("agent-h2", "h2", "agent-h1");
    for (const train of [
      { headers: words, sizes: [98, 98] },
      { headers: new Uint8Array(4 * packetWords + 3), sizes: [98] },
      { headers: words, sizes: [98], flows: [1, 2] },
      { headers: words, sizes: [98], echoIds: [1], echoSeqs: [1], sentMs: [0, 0] },
    ]) {
      forger.publish(subject, v1.UnderlayTrain, { fromHost: "h1", toHost: "h2", ...train });
    }
    await forger.flush();
    await eventually("four trains refused", () => (h2.trainsRefused === refusedBefore + 4 ? true : undefined), 5_000);
    expect(hosts.get("h2")!.dumpPorts().find((p) => p.name === "tun-h1")!.rxPackets).toBe(rxBefore);
  });
});
