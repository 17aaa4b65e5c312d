// simdc's benchmarks, each next to a baseline taken in the same run on the
// same machine (these machines are shared and noisy, so only ratios and
// same-run figures mean anything):
//   1. GetVm round trip (p50, p99) against a bare NATS request/reply with the
//      same payload sizes, each served by a separate process;
//   2. CreateVm end to end (accepted, placed, persisted) over many VMs with
//      requests in flight, against raw JetStream KV creates of the same size
//      and concurrency; boot (create to RUNNING) measured on its own;
//   3. `simdc up` until ready, and peak memory per process, for 10 hosts and
//      for 100 hosts in 2 agent processes.
// Usage: node bench/run.mjs [--vms 10000] [--in-flight 64] [--rounds 5] [--only getvm,createvm,up]

import { execFile, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs, promisify } from "node:util";
import { connect } from "nats";
import { computeService, hostService, storageService } from "@simdc/bus";
import { simdc } from "@simdc/proto";
import { connectTestBus, eventually, startService, startTestNats } from "@simdc/testkit";
import { freePort } from "@simdc/cli";

const v1 = simdc.v1;
const here = dirname(fileURLToPath(import.meta.url));
const cli = join(here, "..", "packages", "cli", "dist", "main.js");
const { values: opts } = parseArgs({
  options: {
    vms: { type: "string", default: "10000" },
    "in-flight": { type: "string", default: "64" },
    rounds: { type: "string", default: "5" },
    only: { type: "string", default: "getvm,createvm,up" },
  },
});
const only = new Set(opts.only.split(","));
const rounds = Number(opts.rounds);

const percentile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const ms = (x) => `${x.toFixed(3)} ms`;
const nowMs = () => Number(process.hrtime.bigint()) / 1e6;

/** Round-trip times of `count` sequential calls of `once`, after `warmup` unmeasured ones. */
async function roundTrips(once, count, warmup) {
  for (let i = 0; i < warmup; i++) await once();
  const out = new Float64Array(count);
  for (let i = 0; i < count; i++) {
    const t = nowMs();
    await once();
    out[i] = nowMs() - t;
  }
  return [...out].sort((a, b) => a - b);
}

/** Runs `count` calls of `once(i)` with `inFlight` in flight; returns per-call latencies and the wall time. */
async function inFlight(once, count, concurrency) {
  const latencies = new Float64Array(count);
  let next = 0;
  const started = nowMs();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      for (let i = next++; i < count; i = next++) {
        const t = nowMs();
        await once(i);
        latencies[i] = nowMs() - t;
      }
    }),
  );
  return { wallMs: nowMs() - started, sorted: [...latencies].sort((a, b) => a - b) };
}

async function datacenter(hosts, pcpus, memoryMib) {
  const nats = await startTestNats();
  const dir = mkdtempSync(join(tmpdir(), "simdc-bench-"));
  const procs = [
    startService("controller", ["--nats-url", nats.url], { LOG_LEVEL: "warn" }),
    startService("san-storage", ["--nats-url", nats.url, "--node-id", "san-1", "--data-dir", join(dir, "san-1")], { LOG_LEVEL: "warn" }),
  ];
  const hostIds = Array.from({ length: hosts }, (_, i) => `host-${i + 1}`);
  procs.push(
    startService("host-agent", ["--nats-url", nats.url, "--agent-id", "agent-1", "--hosts", hostIds.join(","), "--pcpus", String(pcpus), "--memory-mib", String(memoryMib)], { LOG_LEVEL: "warn" }),
  );
  const bus = await connectTestBus(nats.url);
  await eventually("hosts connected", async () => {
    const { hosts: list } = await bus.call(hostService.ListHosts, {}, { timeoutMs: 500 });
    const { nodes } = await bus.call(storageService.ListSanNodes, {}, { timeoutMs: 500 });
    return list.filter((h) => h.state === v1.HostState.HOST_STATE_CONNECTED).length === hosts && nodes.length === 1 ? true : undefined;
  }, 30_000);
  await bus.call(storageService.CreateVolume, { name: "boot", sizeMib: 64 });
  return {
    nats,
    bus,
    procs,
    async dispose() {
      await bus.close();
      await Promise.all(procs.map((p) => p.stop()));
      await nats.dispose();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function benchGetVm() {
  console.log("\n== GetVm round trip vs bare NATS request/reply (one in flight, separate server processes) ==");
  const dc = await datacenter(1, 16, 65536);
  await dc.bus.call(computeService.CreateVm, { name: "vm-1", spec: { vcpus: 1, memoryMib: 512, bootVolume: "boot" } });
  await eventually("vm-1 running", async () => {
    const { vm } = await dc.bus.call(computeService.GetVm, { vmId: "vm-1" });
    return vm.status.state === v1.VmState.VM_STATE_RUNNING ? true : undefined;
  });
  // The baseline carries the same bytes both ways as GetVm does.
  const requestBytes = v1.GetVmRequest.encode({ vmId: "vm-1" }).finish().length;
  const { vm } = await dc.bus.call(computeService.GetVm, { vmId: "vm-1" });
  const replyBytes = v1.GetVmResponse.encode({ vm }).finish().length;
  const responder = spawn(process.execPath, [join(here, "bare-responder.mjs"), dc.nats.url, "bench.bare", String(replyBytes)], { stdio: ["ignore", "pipe", "inherit"] });
  await new Promise((r) => responder.stdout.once("data", r));
  const raw = await connect({ servers: dc.nats.url });
  const payload = new Uint8Array(requestBytes).fill(1);
  const bare = () => raw.request("bench.bare", payload, { timeout: 5_000 });
  const getVm = () => dc.bus.call(computeService.GetVm, { vmId: "vm-1" });
  const count = 3000;
  const results = { bare: { p50: [], p99: [] }, getVm: { p50: [], p99: [] } };
  // Alternating rounds, so drift on a shared machine hits both alike.
  for (let r = 0; r < rounds; r++) {
    for (const [name, fn] of [["bare", bare], ["getVm", getVm]]) {
      const sorted = await roundTrips(fn, count, r === 0 ? 1000 : 200);
      results[name].p50.push(percentile(sorted, 50));
      results[name].p99.push(percentile(sorted, 99));
    }
  }
  const bareP50 = median(results.bare.p50);
  const getP50 = median(results.getVm.p50);
  console.log(`payload: request ${requestBytes} B, reply ${replyBytes} B; ${rounds} rounds x ${count} calls, medians of rounds`);
  console.log(`bare NATS   p50 ${ms(bareP50)}  p99 ${ms(median(results.bare.p99))}`);
  console.log(`GetVm       p50 ${ms(getP50)}  p99 ${ms(median(results.getVm.p99))}`);
  console.log(`GetVm p50 / bare p50 = ${(getP50 / bareP50).toFixed(2)}x (target <= 1.5x)`);
  responder.kill("SIGTERM");
  await raw.close();
  await dc.dispose();
}

async function benchCreateVm() {
  const vms = Number(opts.vms);
  const concurrency = Number(opts["in-flight"]);
  console.log(`\n== CreateVm end to end (accept, place, persist): ${vms} VMs, ${concurrency} in flight ==`);
  // Room for every VM: 10 hosts x 256 pCPUs x 4 = 10,240 vCPUs.
  const dc = await datacenter(10, 256, 1_048_576);
  const statusSeen = new Map();
  const created = new Map();
  dc.bus.subscribe(dc.bus.subjects.event("vm", "*", "status"), v1.VmStatus, (s) => {
    if (s.state === v1.VmState.VM_STATE_RUNNING && !statusSeen.has(s.vmId)) statusSeen.set(s.vmId, nowMs());
  });
  // Baseline: raw KV creates of a VM record's size, same concurrency, same server.
  const kvBus = await connectTestBus(dc.nats.url);
  const bucket = await kvBus.bucket("bench-baseline", v1.Vm);
  const sample = v1.Vm.create({ id: "vm-00000", spec: { vcpus: 1, memoryMib: 64, bootVolume: "boot" }, powerState: 1, generation: 1, hostId: "host-10", createdAtMs: Date.now() });
  const baseline = await inFlight((i) => bucket.create(`vm-${i}`, { ...sample, id: `vm-${i}` }), vms, concurrency);
  const create = await inFlight(async (i) => {
    await dc.bus.call(computeService.CreateVm, { name: `vm-${i}`, spec: { vcpus: 1, memoryMib: 64, bootVolume: "boot" } }, { timeoutMs: 30_000 });
    created.set(`vm-${i}`, nowMs());
  }, vms, concurrency);
  const rate = (r) => (vms / r.wallMs) * 1000;
  console.log(`raw KV create   ${rate(baseline).toFixed(0)}/s  p50 ${ms(percentile(baseline.sorted, 50))}  p99 ${ms(percentile(baseline.sorted, 99))}`);
  console.log(`CreateVm        ${rate(create).toFixed(0)} VMs/s  p50 ${ms(percentile(create.sorted, 50))}  p99 ${ms(percentile(create.sorted, 99))} (target >= 1000 VMs/s)`);
  const bootStart = nowMs();
  await eventually(`every VM running (${vms})`, () => (statusSeen.size >= vms ? true : undefined), 120_000, 200).catch((err) => {
    console.log(`only ${statusSeen.size} of ${vms} VMs reported RUNNING`);
    throw err;
  });
  const boots = [...created].map(([id, at]) => statusSeen.get(id) - at).sort((a, b) => a - b);
  console.log(`boot (create acknowledged -> RUNNING, asynchronous): p50 ${ms(percentile(boots, 50))}  p99 ${ms(percentile(boots, 99))}; all ${vms} running ${((nowMs() - bootStart) / 1000).toFixed(1)} s after the last create`);
  await kvBus.close();
  await dc.dispose();
}

/** Peak resident memory (VmHWM) of a process, in MiB, or NaN when it is gone. */
function peakMib(pid) {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) / 1024 : NaN;
  } catch {
    return NaN;
  }
}

async function benchUp(hosts, hostsPerAgent, sanNodes, targetS) {
  const times = [];
  let memory = null;
  for (let r = 0; r < 3; r++) {
    const dataDir = mkdtempSync(join(tmpdir(), "simdc-bench-up-"));
    const port = await freePort();
    const started = nowMs();
    const up = spawn(process.execPath, [cli, "up", "--data-dir", dataDir, "--nats-port", String(port), "--hosts", String(hosts), "--hosts-per-agent", String(hostsPerAgent), "--san", String(sanNodes)], { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    await new Promise((resolve, reject) => {
      up.stdout.on("data", (c) => {
        out += c;
        if (out.includes("ready in")) resolve();
        if (out.includes("not every host")) reject(new Error(out));
      });
      up.once("exit", () => reject(new Error(`simdc up exited: ${out}`)));
    });
    times.push((nowMs() - started) / 1000);
    if (r === 0) {
      const { stdout } = await promisify(execFile)(process.execPath, [cli, "--data-dir", dataDir, "-o", "json", "status"]);
      const processes = JSON.parse(stdout).processes;
      memory = [{ name: "supervisor (simdc up)", pid: up.pid }, ...processes].map((p) => `${p.name} ${peakMib(p.pid).toFixed(0)} MiB`);
    }
    await promisify(execFile)(process.execPath, [cli, "--data-dir", dataDir, "down"]);
    rmSync(dataDir, { recursive: true, force: true });
  }
  console.log(`simdc up, ${hosts} hosts in ${Math.ceil(hosts / hostsPerAgent)} agent processes, ${sanNodes} SAN nodes: ready in ${median(times).toFixed(2)} s (median of ${times.map((t) => t.toFixed(2)).join(", ")}; target <= ${targetS} s)`);
  console.log(`  peak memory: ${memory.join(", ")}`);
}

console.log(`simdc benchmarks, ${new Date().toISOString()}, node ${process.version}`);
if (only.has("getvm")) await benchGetVm();
if (only.has("createvm")) await benchCreateVm();
if (only.has("up")) {
  console.log("\n== simdc up until the controller sees every host connected and every SAN node registered ==");
  await benchUp(10, 1, 2, 5);
  await benchUp(100, 50, 2, 10);
}
process.exit(0);
