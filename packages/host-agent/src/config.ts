// The host agent's flags (with their environment variables and defaults) and
// the checked configuration built from them. It only reads and checks; it
// starts nothing, so a bad value ends the process before it touches NATS.

import { checkName, invalidArgument, type Settings, type SettingsSpec } from "@simdc/common";
import { bootBlocksMax, heartbeatIntervalMsMax, heartbeatIntervalMsMin, hostsPerAgentMax } from "./limits.js";
import type { HostCapacity } from "./host.js";
import type { VmTiming } from "./vm.js";
import { failModes, inactivityProbeMsDefault, type FailMode } from "./network/controller-link.js";
import type { UplinkSpec } from "./network/uplink.js";
import type { HypervisorSettings } from "./hypervisor.js";

/** Flags of the host-agent process, merged with the bus's common ones by runProcess. */
export const hostAgentSettings = {
  "agent-id": { kind: "string", env: "SIMDC_AGENT_ID", help: "this agent process's id, a valid name" },
  hosts: {
    kind: "string",
    env: "SIMDC_HOSTS",
    help: `comma-separated ids of the simulated hosts this process runs (1-${hostsPerAgentMax})`,
  },
  pcpus: { kind: "int", env: "SIMDC_PCPUS", default: 16, min: 1, max: 4_096, help: "physical CPUs of each host" },
  "memory-mib": {
    kind: "int",
    env: "SIMDC_MEMORY_MIB",
    default: 65_536,
    min: 1,
    max: 0xffff_ffff,
    help: "memory of each host, in MiB",
  },
  nics: { kind: "int", env: "SIMDC_NICS", default: 2, min: 1, max: 64, help: "network interfaces of each host" },
  "boot-blocks": {
    kind: "int",
    env: "SIMDC_BOOT_BLOCKS",
    // The boot sector by default; more make every boot a heavier read of the SAN (a boot storm is its own experiment).
    default: 1,
    min: 1,
    max: bootBlocksMax,
    help: "blocks a VM reads from its boot volume when it boots",
  },
  "boot-time-ms": { kind: "int", default: 300, min: 0, max: 600_000, help: "time from the boot read to RUNNING" },
  "stop-time-ms": { kind: "int", default: 100, min: 0, max: 600_000, help: "time from STOPPING to STOPPED" },
  "boot-retry-ms": {
    kind: "int",
    default: 30_000,
    min: 0,
    max: 3_600_000,
    help: "how long a boot keeps retrying a SAN node that is unreachable or busy (as a hypervisor retries I/O to a datastore with all paths down) before the VM fails UNAVAILABLE",
  },
  "heartbeat-interval-ms": {
    kind: "int",
    default: 1_000,
    min: heartbeatIntervalMsMin,
    max: heartbeatIntervalMsMax,
    help: "heartbeat interval until the controller's registration reply sets it",
  },
  "nic-mbps": { kind: "int", env: "SIMDC_NIC_MBPS", default: 10_000, min: 1, max: 400_000, help: "each physical NIC's bandwidth, Mbit/s (simulated time)" },
  "nic-queue-kib": { kind: "int", env: "SIMDC_NIC_QUEUE_KIB", default: 1_024, min: 1, max: 1_048_576, help: "each physical NIC's transmit queue, KiB; a packet that would overflow it is dropped" },
  "nic-latency-us": { kind: "int", env: "SIMDC_NIC_LATENCY_US", default: 50, min: 0, max: 10_000_000, help: "each physical NIC's wire latency, microseconds (under a millisecond it is not felt: timers are millisecond grained)" },
  "fail-mode": {
    kind: "string",
    env: "SIMDC_FAIL_MODE",
    default: "secure",
    help: "what each host's vswitch does when its controller is lost: secure (keep flows, install nothing new) or standalone (after 3 probe intervals flush and learn MACs)",
  },
  "inactivity-probe-ms": {
    kind: "int",
    env: "SIMDC_INACTIVITY_PROBE_MS",
    default: inactivityProbeMsDefault,
    min: 100,
    max: 600_000,
    help: "how often a vswitch probes its controller (simulated ms); lost after one probe interval without an answer",
  },
  "threads-per-core": { kind: "int", env: "SIMDC_THREADS_PER_CORE", default: 1, min: 1, max: 2, help: "logical CPUs per core: 2 with hyperthreading (each of two busy threads is charged about half)" },
  "core-mhz": { kind: "int", env: "SIMDC_CORE_MHZ", default: 2_000, min: 1, max: 10_000, help: "each core's speed; CPU reservations and limits are in MHz of it" },
  "cpu-quantum-ms": { kind: "int", env: "SIMDC_CPU_QUANTUM_MS", default: 50, min: 1, max: 1_000, help: "the vCPU scheduler's time slice (simulated ms)" },
  coscheduling: {
    kind: "string",
    env: "SIMDC_COSCHEDULING",
    default: "relaxed",
    help: "co-scheduling of a multi-vCPU VM: relaxed (only vCPUs that run ahead of the slowest busy one stop, ESX 3+) or strict (the whole VM stops until all its vCPUs can run together, ESX 2)",
  },
  "hosted-overhead-pct": { kind: "int", env: "SIMDC_HOSTED_OVERHEAD_PCT", default: 0, min: 0, max: 90, help: "a hosted (type 2) hypervisor's cost: this share of every vCPU's run time does no guest work; 0 for bare metal" },
  "vcpus-per-core-max": { kind: "int", env: "SIMDC_VCPUS_PER_CORE_MAX", default: 32, min: 1, max: 256, help: "admission cap: powered-on vCPUs per core at most (vSphere 5.5: 32)" },
  "share-salting": {
    kind: "string",
    env: "SIMDC_SHARE_SALTING",
    default: "per-vm",
    help: "page sharing between VMs: per-vm (Mem.ShareForceSalting=2, vSphere's default: only VMs with equal sched.mem.pshare.salt share) or off (legacy: every VM shares)",
  },
  "hypervisor-step-ms": { kind: "int", env: "SIMDC_HYPERVISOR_STEP_MS", default: 100, min: 10, max: 10_000, help: "simulated time each step of every host's CPU and memory models covers (100: 10 Hz)" },
  "test-faults": {
    kind: "bool",
    env: "SIMDC_TEST_FAULTS",
    default: false,
    help: "serve test-only faults that break invariants on purpose (StartStrayVm), for experiments that prove their checkers",
  },
} as const satisfies SettingsSpec;

/** Everything an agent needs to start its hosts, checked. */
export interface AgentConfig {
  agentId: string;
  hostIds: string[];
  capacity: HostCapacity;
  timing: VmTiming;
  heartbeatIntervalMs: number;
  /** Whether the test-only faults are served. */
  testFaults: boolean;
  failMode: FailMode;
  inactivityProbeMs: number;
  /** Each host's physical NICs: nic0 converged, nic1 dedicated when the host has two. */
  uplinks: UplinkSpec[];
  hypervisor: HypervisorSettings;
}

/** esxtop's default delay: a sample is 5 s of simulated time. */
const sampleMs = 5_000;
/** Ten minutes of samples in each host's ring, five in each VM's. */
const historySamples = 120;
const vmHistorySamples = 60;

/**
 * Builds the agent's configuration from its settings.
 * @throws SimdcError INVALID_ARGUMENT for a bad agent id, a bad or repeated
 * host id, or more than hostsPerAgentMax hosts.
 */
export function agentConfigOf(settings: Settings<typeof hostAgentSettings>): AgentConfig {
  const agentId = checkName("--agent-id", settings["agent-id"]);
  const hostIds = parseHostIds(settings.hosts);
  return {
    agentId,
    hostIds,
    capacity: { pcpus: settings.pcpus, memoryMib: settings["memory-mib"], nics: settings.nics },
    timing: {
      bootBlocks: settings["boot-blocks"],
      bootTimeMs: settings["boot-time-ms"],
      stopTimeMs: settings["stop-time-ms"],
      bootRetryMs: settings["boot-retry-ms"],
    },
    heartbeatIntervalMs: settings["heartbeat-interval-ms"],
    testFaults: settings["test-faults"],
    failMode: checkChoice<FailMode>("--fail-mode", settings["fail-mode"], failModes),
    uplinks: Array.from({ length: Math.min(2, settings.nics) }, (_, i) => ({
      name: `nic${i}`,
      bandwidthMbps: settings["nic-mbps"],
      queueBytes: settings["nic-queue-kib"] * 1024,
      latencyMs: settings["nic-latency-us"] / 1_000,
    })),
    inactivityProbeMs: settings["inactivity-probe-ms"],
    hypervisor: hypervisorSettingsOf(settings.pcpus, settings["memory-mib"], {
      threadsPerCore: settings["threads-per-core"] === 2 ? 2 : 1,
      coreMhz: settings["core-mhz"],
      quantumMs: settings["cpu-quantum-ms"],
      coscheduling: checkChoice("--coscheduling", settings.coscheduling, ["relaxed", "strict"] as const),
      hostedOverheadPct: settings["hosted-overhead-pct"],
      vcpusPerCoreMax: settings["vcpus-per-core-max"],
      salting: checkChoice("--share-salting", settings["share-salting"], ["per-vm", "off"] as const),
      stepMs: settings["hypervisor-step-ms"],
    }),
  };
}

/** A host's hypervisor with the flags' defaults, but for `overrides`. */
export function hypervisorSettingsOf(cores: number, memoryMib: number, overrides: Partial<HypervisorSettings> = {}): HypervisorSettings {
  const stepMs = overrides.stepMs ?? hostAgentSettings["hypervisor-step-ms"].default;
  return {
    cores,
    memoryMib,
    threadsPerCore: 1,
    coreMhz: hostAgentSettings["core-mhz"].default,
    quantumMs: hostAgentSettings["cpu-quantum-ms"].default,
    coscheduling: "relaxed",
    hostedOverheadPct: 0,
    vcpusPerCoreMax: hostAgentSettings["vcpus-per-core-max"].default,
    salting: "per-vm",
    sampleMs: Math.max(sampleMs, stepMs),
    historySamples,
    vmHistorySamples,
    ...overrides,
    stepMs,
  };
}

function checkChoice<T extends string>(flag: string, text: string, choices: readonly T[]): T {
  if (!(choices as readonly string[]).includes(text)) throw invalidArgument(`${flag} must be ${choices.join(" or ")}, got ${JSON.stringify(text)}`);
  return text as T;
}


/**
 * Splits "host-1,host-2" into checked, distinct ids.
 * @throws SimdcError INVALID_ARGUMENT as agentConfigOf.
 */
export function parseHostIds(list: string): string[] {
  const ids = list.split(",").map((id) => id.trim());
  if (ids.length > hostsPerAgentMax) {
    throw invalidArgument(`--hosts names ${ids.length} hosts; one agent runs at most ${hostsPerAgentMax}`);
  }
  const seen = new Set<string>();
  for (const id of ids) {
    checkName("--hosts entry", id);
    if (seen.has(id)) throw invalidArgument(`--hosts names ${id} twice`);
    seen.add(id);
  }
  return ids;
}
