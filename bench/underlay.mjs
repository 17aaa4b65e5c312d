// One hop between host vswitches over NATS, against the SDN issue's targets:
// encode, NATS, decode, classify, deliver at least 0.45x a bare NATS
// publish/subscribe of the same size unbatched, at least 1.0x with packet
// trains; and simulated packets per second across agents. Two hosts' data
// planes in this process on two NATS connections (as two agents), a UDP flow
// from a guest on one to a guest on the other, paced fast enough to saturate
// (simulated time at 50x); the baseline publishes messages of one packet's
// encoded size from one connection to another in the same process.
// Usage: node bench/underlay.mjs   (needs nats-server; npm run build first)
import { connect } from "nats";
import { connectTestBus, startTestNats } from "@simdc/testkit";
import { createLogger, WallClock, wallClock } from "@simdc/common";
import { simdc } from "@simdc/proto";
import { parseIp } from "@simdc/vswitch";
import { HostDatapath } from "../packages/host-agent/dist/network/datapath.js";
import { recordBytes, Underlay } from "../packages/host-agent/dist/network/underlay.js";
import { checkNetworkSection } from "../packages/host-agent/dist/network/section.js";
import { twoHostSection } from "../packages/host-agent/dist/network/two-hosts.js";

const v1 = simdc.v1;
const seconds = 3;
const logger = createLogger({ service: "bench", id: "underlay", level: "silent" });
const nats = await startTestNats();

/**
 * Packets a second delivered to the far guest, with trains of at most
 * trainMax packets, simulated time running `scale` times real time: the
 * offered load (100,000 packets a simulated second) must exceed what the
 * path carries. The underlay's flow control drops what the receiving side
 * cannot take (its figure is printed), rather than let NATS pile it up.
 */
async function hop(trainMax, bytes, scale) {
  const clock = new WallClock(scale, Date.now());
  const busA = await connectTestBus(nats.url, { processId: "agent-1" });
  const busB = await connectTestBus(nats.url, { processId: "agent-2" });
  const hosts = new Map();
  const underlays = [];
  for (const [hostId, bus, agentId] of [["h1", busA, "agent-h1"], ["h2", busB, "agent-h2"]]) {
    const underlay = new Underlay(bus, agentId, (id) => hosts.get(id), logger, trainMax);
    const dp = new HostDatapath({ hostId, clock, random: () => 0.5, logger, tunnel: (t, h, p, b) => underlay.send(hostId, t, h, p, b), failMode: "secure", inactivityProbeMs: 600_000, probe: async () => true, packetIn: async () => [],
      // A NIC far faster than the path measured (simulated time runs at 50x here).
      uplinks: [{ name: "nic0", bandwidthMbps: 400_000, queueBytes: 1 << 30, latencyMs: 0 }], nicDrops: () => undefined, heldInstalled: () => undefined });
    dp.apply(checkNetworkSection(twoHostSection(hostId)));
    dp.setRunning(hostId === "h1" ? "a" : "b", true);
    hosts.set(hostId, dp);
    underlay.start();
    underlays.push(underlay);
  }
  await busA.flush();
  await busB.flush();
  await wallClock.sleep(300);
  // 100,000 simulated packets/s: at 10x, 1M offered a second; at 6x, 600,000.
  const flow = hosts.get("h1").startTraffic({ vmId: "a", target: parseIp("10.0.0.3"), kind: simdc.v1.TrafficKind.TRAFFIC_KIND_UDP_STREAM, ratePps: 100_000, bytes, responseBytes: bytes, dstPort: 5001, durationMs: 0 });
  await wallClock.sleep(500);
  const received = () => hosts.get("h2").traffic.stats().received.reduce((n, r) => n + r.received, 0);
  const from = received();
  const started = performance.now();
  await wallClock.sleep(seconds * 1000);
  const rate = (received() - from) / ((performance.now() - started) / 1000);
  hosts.get("h1").traffic.stop(flow.flowId);
  for (const u of underlays) u.stop();
  for (const dp of hosts.values()) dp.stop();
  await busA.close();
  await busB.close();
  return { rate, trains: underlays[0].trainsSent, packets: underlays[0].packetsSent, throttled: underlays[0].packetsThrottled };
}

/** Bare NATS: messages of `size` bytes published one by one from one connection to another in this process. */
async function bare(size) {
  const pubNc = await connect({ servers: nats.url });
  const subNc = await connect({ servers: nats.url });
  let count = 0;
  subNc.subscribe("bare.hop", { callback: () => (count += 1) });
  await subNc.flush();
  const payload = new Uint8Array(size);
  let stop = false;
  const pump = async () => {
    while (!stop) {
      for (let i = 0; i < 1000; i++) pubNc.publish("bare.hop", payload);
      await new Promise((r) => setImmediate(r));
    }
  };
  const pumping = pump();
  await wallClock.sleep(500);
  const from = count;
  const started = performance.now();
  await wallClock.sleep(seconds * 1000);
  const rate = (count - from) / ((performance.now() - started) / 1000);
  stop = true;
  await pumping;
  await pubNc.close();
  await subNc.close();
  return rate;
}

const bytes = 200;
// The size one packet takes on the wire in a train of one.
const oneSize = v1.UnderlayTrain.encode({ fromHost: "h1", toHost: "h2", records: new Uint8Array(recordBytes), seq: 123456 }).finish().length;
const baseline = await bare(oneSize);
console.log(`baseline: bare NATS publish/subscribe of ${oneSize}-byte messages, one process: ${Math.round(baseline).toLocaleString("en")} messages/s`);
const unbatched = await hop(1, bytes, 6);
console.log(`one hop, unbatched (a message a packet): ${Math.round(unbatched.rate).toLocaleString("en")} packets/s delivered (${(unbatched.rate / baseline).toFixed(2)}x the baseline; target 0.45x); ${unbatched.throttled.toLocaleString("en")} offered beyond it dropped by the flow control`);
const trains = await hop(256, bytes, 10);
console.log(`one hop, packet trains (up to 256 a message, ${(trains.packets / Math.max(1, trains.trains)).toFixed(1)} on average): ${Math.round(trains.rate).toLocaleString("en")} packets/s delivered (${(trains.rate / baseline).toFixed(2)}x the baseline; target 1.0x); ${trains.throttled.toLocaleString("en")} dropped by the flow control`);
await nats.dispose();
process.exit(0);
