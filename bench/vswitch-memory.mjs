// Heap a vswitch flow takes, for the SDN issue's memory target (the
// vswitches of 1,000 hosts with 20 VMs each in 1 GiB): hosts laid out as
// `bench/run.mjs --only sdnscale` lays them out (20 NICs on 20 networks, each
// network with ports on 19 other hosts), each host's section decoded from
// the wire as an agent gets it and installed in its own datapath; the heap
// before and after, per flow, with the decoded documents kept as the agent
// keeps them.
// Usage: node --expose-gc bench/vswitch-memory.mjs [hosts=100]   (npm run build first)
import { createLogger, ManualClock } from "@simdc/common";
import { simdc } from "@simdc/proto";
import { HostDatapath } from "../packages/host-agent/dist/network/datapath.js";
import { checkNetworkSection } from "../packages/host-agent/dist/network/section.js";

if (!global.gc) throw new Error("run with node --expose-gc");
const logger = createLogger({ service: "bench", id: "vswitch-memory", level: "silent" });
const clock = new ManualClock();
const mac = (n) => `02:00:${[24, 16, 8, 0].map((s) => ((n >> s) & 255).toString(16).padStart(2, "0")).join(":")}`;

function section(h) {
  const ports = [];
  const flows = [];
  const neighbors = [];
  const tunnels = Array.from({ length: 60 }, (_, t) => ({ ofport: 0xf000 + t, hostId: `h${(h + t + 1) % 1000}`, agentId: "a" }));
  for (let n = 0; n < 20; n++) {
    const seg = h * 20 + n + 1;
    const own = mac(h * 100 + n);
    ports.push({ ofport: n + 1, vmId: `v${h}-${n}`, networkId: `n${seg}`, segmentId: seg, mac: own, ip: `10.${n}.${h % 250}.2`, prefixLength: 24, gateway: "", leaseS: 3600 });
    flows.push(`table=0,priority=100,in_port=${n + 1},dl_src=${own} actions=set_field:0x${seg.toString(16)}->metadata,goto_table:10`);
    for (let r = 0; r < 19; r++) {
      const theirs = mac(h * 100000 + n * 100 + r + 50);
      const tunnel = 0xf000 + ((n + r) % 60);
      flows.push(`table=20,priority=100,metadata=0x${seg.toString(16)},dl_dst=${theirs} actions=set_field:0x${seg.toString(16)}->tun_id,output:${tunnel}`);
      flows.push(`table=0,priority=100,in_port=${tunnel},tun_id=0x${seg.toString(16)} actions=set_field:0x${seg.toString(16)}->metadata,goto_table:30`);
      neighbors.push({ segmentId: seg, ip: `10.${n}.${r}.9`, mac: theirs });
    }
    for (const t of [20, 30]) flows.push(`table=${t},priority=100,metadata=0x${seg.toString(16)},dl_dst=${own} actions=output:${n + 1}`);
  }
  return { ports, tunnels, flows, neighbors, controllerTables: 40 };
}

const hosts = Number(process.argv[2] ?? 100);
global.gc();
const before = process.memoryUsage().heapUsed;
const kept = [];
let flows = 0;
for (let h = 0; h < hosts; h++) {
  const raw = simdc.v1.HostNetwork.decode(simdc.v1.HostNetwork.encode(section(h)).finish());
  const datapath = new HostDatapath({ hostId: `h${h}`, clock, random: () => 0.5, logger, tunnel: () => {}, failMode: "secure", inactivityProbeMs: 5_000, probe: async () => true, packetIn: async () => [], uplinks: [{ name: "nic0", bandwidthMbps: 1_000, queueBytes: 1 << 20, latencyMs: 0 }], nicDrops: () => {}, heldInstalled: () => {} });
  datapath.apply(checkNetworkSection(raw));
  flows += datapath.vswitch.flows().length;
  kept.push({ datapath, raw });
}
global.gc();
const bytes = process.memoryUsage().heapUsed - before;
console.log(`${hosts} hosts, ${flows.toLocaleString("en")} flows: ${(bytes / 2 ** 20).toFixed(0)} MiB of heap, ${Math.round(bytes / flows)} B a flow (with the decoded documents); at that rate 901,000 flows (1,000 hosts x 20 VMs) take ${((bytes / flows) * 901_000 / 2 ** 30).toFixed(2)} GiB (target: 1 GiB for the vswitches)`);
if (process.argv[3]) console.log((await import("node:v8")).writeHeapSnapshot(process.argv[3]));
