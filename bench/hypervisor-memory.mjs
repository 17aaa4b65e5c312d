// The memory manager against the issue's targets: real memory per simulated
// VM at 20,000 VMs (1,000 hosts of 20 VDI desktops) at most 64 KiB, 2 GiB in
// all; a step of a 20-VM host well under 100 µs in each memory state; a
// simulated hour in well under a second. Baseline in the same run: reading
// the 20 VMs' counters once, what a host agent's report does each step.
// Usage: node bench/hypervisor-memory.mjs (it re-runs itself with --expose-gc).
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { Rng } from "../packages/common/dist/mod.js";
import { MemoryManager, vdiMemoryImage, vdiMemoryProfile } from "../packages/hypervisor/dist/mod.js";

if (typeof globalThis.gc !== "function") {
  const run = spawnSync(process.execPath, ["--expose-gc", fileURLToPath(import.meta.url)], { stdio: "inherit" });
  process.exit(run.status ?? 1);
}

const hostsCount = 1_000;
const vmsPerHost = 20;

function makeHost(seed, i) {
  const mm = new MemoryManager({ memoryMb: 96 * 1024, images: { [vdiMemoryImage.id]: vdiMemoryImage.sizeMb } }, new Rng(seed, `host-${i}`));
  for (let v = 0; v < vmsPerHost; v++) {
    mm.addVm(`vm-${v}`, vdiMemoryProfile);
    mm.setGuestActivity(`vm-${v}`, { activeFraction: 0.05 * v, usedFraction: 0.6, dirtyFractionPerSec: 0.001 });
  }
  return mm;
}

function memoryNow() {
  for (let i = 0; i < 3; i++) globalThis.gc();
  const m = process.memoryUsage();
  return { heap: m.heapUsed + m.external, rss: m.rss };
}

// Memory: every host booted and pressed below hard's threshold once, so its VMs have pages shared, ballooned, compressed and swapped.
const before = memoryNow();
const hosts = [];
for (let i = 0; i < hostsCount; i++) hosts.push(makeHost(1, i));
for (const mm of hosts) {
  for (let t = 0; t < 5; t++) mm.step(1000);
  const h = mm.hostCounters();
  mm.setPressureMb(h.freeMb - 0.2 * h.minFreeMb);
  for (let t = 0; t < 5; t++) mm.step(1000);
}
const after = memoryNow();
const vms = hostsCount * vmsPerHost;
const perVm = (after.heap - before.heap) / vms;
const states = new Map();
let compressedMb = 0;
let swappedMb = 0;
let balloonMb = 0;
for (const mm of hosts) {
  const h = mm.hostCounters();
  states.set(h.state, (states.get(h.state) ?? 0) + 1);
  compressedMb += h.compressedMb;
  swappedMb += h.swappedMb;
  balloonMb += h.balloonMb;
}
const tb = (mb) => `${(mb / 2 ** 20).toFixed(2)} TB`;
console.log(`memory: ${vms.toLocaleString("en")} VMs on ${hostsCount.toLocaleString("en")} hosts (states: ${[...states].map(([s, n]) => `${s} ${n}`).join(", ")}; simulated: ${tb(compressedMb)} compressed, ${tb(swappedMb)} swapped, ${tb(balloonMb)} ballooned)`);
console.log(`  heap + external: ${(perVm / 1024).toFixed(2)} KiB per VM (target ≤ 64 KiB), ${((after.heap - before.heap) / 2 ** 20).toFixed(1)} MiB in all (target ≤ 2,048 MiB)`);
console.log(`  rss growth: ${((after.rss - before.rss) / 2 ** 20).toFixed(1)} MiB, ${((after.rss - before.rss) / vms / 1024).toFixed(2)} KiB per VM`);
hosts.length = 0;

/** Median of 3 timed runs of `n` calls, in µs per call. */
function cost(n, fn) {
  for (let i = 0; i < Math.min(n, 2_000); i++) fn(i);
  const runs = [];
  for (let r = 0; r < 3; r++) {
    const start = process.hrtime.bigint();
    for (let i = 0; i < n; i++) fn(i);
    runs.push(Number(process.hrtime.bigint() - start) / 1e3 / n);
  }
  runs.sort((a, b) => a - b);
  return runs[1];
}

// Step cost of one 20-VM host, held in each state by outside pressure (set once a second of simulated time, as a fault would).
const mm = makeHost(1, 0);
for (let t = 0; t < 10; t++) mm.step(1000);
const baseline = cost(20_000, () => {
  for (let v = 0; v < vmsPerHost; v++) mm.vmCounters(`vm-${v}`);
});
for (const [label, share] of [["high", null], ["soft", 0.5], ["hard", 0.2]]) {
  const hold = () => {
    if (share === null) return;
    const h = mm.hostCounters();
    mm.setPressureMb(Math.min(h.memoryMb, Math.max(0, h.pressureMb + h.freeMb - share * h.minFreeMb)));
  };
  const us = cost(20_000, () => {
    hold();
    mm.step(1000);
  });
  console.log(`step of a 20-VM host, ${label} (seen: ${mm.hostCounters().state}): ${us.toFixed(2)} µs (target < 100 µs; ${(us / baseline).toFixed(2)}x the baseline)`);
  mm.setPressureMb(0);
  for (let t = 0; t < 1200; t++) mm.step(1000);
}
console.log(`baseline: vmCounters of the 20 VMs: ${baseline.toFixed(2)} µs`);

const hour = makeHost(2, 1);
const start = performance.now();
for (let t = 0; t < 3600; t++) {
  if (t % 600 === 0) hour.setPressureMb(((t / 600) % 3) * 20 * 1024);
  hour.step(1000);
}
console.log(`a simulated hour of a 20-VM host in 1 s steps, pressure changing every 10 min: ${(performance.now() - start).toFixed(0)} ms (target well under 1,000 ms)`);
