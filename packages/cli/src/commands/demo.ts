// simdc up --demo: a few volumes and VMs, so a newcomer sees a running
// datacenter at once. Safe to run again on the same data: what exists is kept.

import { computeService, hostAgentService, hostScope, hostService, networkService, storageService, type Bus } from "@simdc/bus";
import { SimdcError, wallClock, wallNowMs } from "@simdc/common";
import { simdc } from "@simdc/proto";
import { printTable, vmState } from "../output.js";
import { listAllVms } from "../paging.js";
import { nicsText } from "./resources.js";

import v1 = simdc.v1;

/** A network in each of the seed's modes. */
const demoNetworks = [
  { name: "lan", mode: v1.NetworkMode.NETWORK_MODE_BRIDGE, subnets: ["10.10.0.0/24"] },
  { name: "lab", mode: v1.NetworkMode.NETWORK_MODE_HOST_ONLY, subnets: ["10.20.0.0/24"] },
  { name: "home", mode: v1.NetworkMode.NETWORK_MODE_NAT, subnets: ["10.30.0.0/24"] },
];

const demoVms = [
  { name: "web-1", vcpus: 2, memoryMib: 2048, bootVolume: "web-1-boot", nics: ["lan"], workload: "web" },
  { name: "web-2", vcpus: 2, memoryMib: 2048, bootVolume: "web-2-boot", nics: ["lan", "home"], workload: "web" },
  { name: "db-1", vcpus: 4, memoryMib: 8192, bootVolume: "db-1-boot", nics: ["lan", "lab"], workload: "database" },
];

/** CPU-bound VMs as wide as a host, one more than there are hosts: one host gets two and is contended. */
const crunchHostsMax = 10;

const demoTimeoutMs = 30_000;

async function ignoreExisting(call: Promise<unknown>): Promise<void> {
  try {
    await call;
  } catch (err) {
    if (!(err instanceof SimdcError && err.code === "ALREADY_EXISTS")) throw err;
  }
}

export async function runDemo(bus: Bus, say: (line: string) => void): Promise<void> {
  say("demo: creating networks lan (bridge), lab (host-only) and home (NAT), an external endpoint www (the outside world), and a boot volume and a VM for web-1, web-2 and db-1");
  for (const net of demoNetworks) await ignoreExisting(bus.call(networkService.CreateNetwork, net));
  await ignoreExisting(bus.call(networkService.CreateExternalEndpoint, { name: "www" }));
  for (const vm of demoVms) {
    await ignoreExisting(bus.call(storageService.CreateVolume, { name: vm.bootVolume, sizeMib: 256 }));
    await ignoreExisting(
      bus.call(computeService.CreateVm, {
        name: vm.name,
        spec: { vcpus: vm.vcpus, memoryMib: vm.memoryMib, bootVolume: vm.bootVolume, nics: vm.nics.map((network) => ({ network })), workload: { kind: vm.workload } },
      }),
    );
  }
  const deadline = wallNowMs() + demoTimeoutMs;
  let vms: v1.Vm.$Properties[] = [];
  while (wallNowMs() < deadline) {
    vms = (await listAllVms(bus)).filter((vm) => demoVms.some((d) => d.name === vm.id));
    if (vms.every((vm) => vm.status?.state === v1.VmState.VM_STATE_RUNNING)) break;
    await wallClock.sleep(100);
  }
  printTable(
    ["VM", "STATE", "HOST", "VCPUS", "MEMORY MIB", "BOOT VOLUME", "NICS"],
    vms.map((vm) => [
      vm.id ?? "",
      vmState(vm.status?.state ?? 0),
      vm.hostId ?? "",
      String(vm.spec?.vcpus),
      String(vm.spec?.memoryMib),
      vm.spec?.bootVolume ?? "",
      nicsText(vm),
    ]),
  );
  const running = vms.filter((vm) => vm.status?.state === v1.VmState.VM_STATE_RUNNING).length;
  say(`demo: ${running} of ${demoVms.length} VMs running.`);
  const www = (await bus.call(networkService.ListExternalEndpoints, {})).endpoints.find((e) => e.id === "www");
  await demoPing(bus, vms, "db-1", vms.find((vm) => vm.id === "db-1")?.spec?.nics?.[0]?.ip ?? undefined, "across hosts", say);
  await demoPing(bus, vms, "www", www?.ip ?? undefined, "out of the bridge network lan to the outside", say);
  await demoContention(bus, say);
  say("demo: try simdc top; simdc vm list; simdc net reachability; simdc ofctl dump-flows host-1; simdc vm ping web-2 <www's address> (NAT); simdc events -w (in another terminal); simdc fault kill agent-1; simdc experiment run agent-crash --short");
}

/** web-1 pings a target once it has its address: the first packets of the datacenter. */
async function demoPing(bus: Bus, vms: v1.Vm.$Properties[], targetName: string, target: string | undefined, how: string, say: (line: string) => void): Promise<void> {
  const from = vms.find((vm) => vm.id === "web-1");
  if (!from?.hostId || !target) return;
  const { host } = await bus.call(hostService.GetHost, { hostId: from.hostId });
  const scopeId = hostScope(host?.agentId ?? "", from.hostId);
  const deadline = wallNowMs() + demoTimeoutMs;
  for (;;) {
    try {
      const reply = await bus.call(hostAgentService.Ping, { vmId: "web-1", targetIp: target, count: 3, intervalMs: 200 }, { scopeId, timeoutMs: 10_000 });
      say(`demo: web-1 (${reply.sourceIp}) pinged ${targetName} (${target}) ${how}: ${reply.received} of ${reply.sent} answered, rtt avg ${reply.rttAvgMs.toFixed(1)} ms`);
      return;
    } catch (err) {
      // Until DHCP has given web-1 its address; a demo that cannot ping says why and goes on.
      if (wallNowMs() > deadline || !(err instanceof SimdcError && err.code === "FAILED_PRECONDITION")) {
        say(`demo: web-1 could not ping ${targetName}: ${String(err)}`);
        return;
      }
      await wallClock.sleep(200);
    }
  }
}

/**
 * CPU-bound VMs as wide as a host, one more than the hosts: placement puts
 * two on one host, whose vCPUs then wait for its cores, and the demo shows
 * that host as simdc top does once a sample covers it.
 */
async function demoContention(bus: Bus, say: (line: string) => void): Promise<void> {
  const hosts = (await bus.call(hostService.ListHosts, {})).hosts;
  if (!hosts.length || hosts.length > crunchHostsMax) return;
  const width = Math.min(...hosts.map((h) => (h.capacity?.pcpus ?? 1) * (h.capacity?.threadsPerCore || 1)));
  const names = Array.from({ length: hosts.length + 1 }, (_, i) => `crunch-${i + 1}`);
  say(`demo: creating ${names.length} CPU-bound VMs of ${width} vCPUs (batch workload), one more than the hosts, so one host holds two and is contended`);
  await ignoreExisting(bus.call(storageService.CreateVolume, { name: "crunch-boot", sizeMib: 64 }));
  for (const name of names) {
    await ignoreExisting(bus.call(computeService.CreateVm, { name, spec: { vcpus: width, memoryMib: 1024, bootVolume: "crunch-boot", workload: { kind: "batch" } } }));
  }
  // Two samples (5 s of simulated time each): the second covers the VMs running.
  const deadline = wallNowMs() + demoTimeoutMs;
  let busiest: { stats: v1.IGetHostStatsResponse; crunch: number } | null = null;
  while (wallNowMs() < deadline) {
    await wallClock.sleep(1_000);
    busiest = null;
    for (const h of hosts) {
      const stats = await bus.call(hostAgentService.GetHostStats, {}, { scopeId: hostScope(h.agentId ?? "", h.id ?? ""), timeoutMs: 5_000 });
      // A sample whose whole window had the VMs running: the host's cores all busy.
      const crunch = (stats.host?.utilizationPct ?? 0) < 95 ? 0 : stats.vms.filter((vm) => (vm.vmId ?? "").startsWith("crunch-") && (vm.readyPct ?? 0) > 0).length;
      if (crunch > (busiest?.crunch ?? 0)) busiest = { stats, crunch };
    }
    if (busiest && busiest.crunch >= 2) break;
  }
  if (!busiest || busiest.crunch < 2) {
    say("demo: no host showed the contention within 30 s (see simdc top)");
    return;
  }
  const h = busiest.stats.host;
  say(`demo: ${busiest.stats.hostId} is contended: ${h?.vcpus} vCPUs on ${h?.cores} cores, ${(h?.utilizationPct ?? 0).toFixed(0)}% busy; its VMs' vCPUs wait for a core (%RDY, summed over vCPUs as esxtop does):`);
  printTable(
    ["VM", "WORKLOAD", "VCPUS", "%USED", "%RDY", "LOST WORK %"],
    (busiest.stats.vms ?? []).map((vm) => [vm.vmId ?? "", vm.workload ?? "", String(vm.vcpus), (vm.usedPct ?? 0).toFixed(0), (vm.readyPct ?? 0).toFixed(0), (vm.lostWorkPct ?? 0).toFixed(0)]),
  );
}
