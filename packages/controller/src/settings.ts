// The controller's settings: identity, heartbeat policy, overcommit ratios,
// the lease and KV replication. Defaults follow REFERENCES.md where it has one.

import type { Settings, SettingsSpec } from "@simdc/common";

export const controllerSettings = {
  "controller-id": {
    kind: "string",
    env: "SIMDC_CONTROLLER_ID",
    default: "controller-1",
    help: "this controller's id; every controller of a datacenter needs its own",
  },
  "heartbeat-interval-ms": {
    kind: "int",
    env: "SIMDC_HEARTBEAT_INTERVAL_MS",
    default: 1000,
    min: 50,
    max: 60_000,
    help: "how often hosts and SAN nodes heartbeat (simulated ms)",
  },
  "heartbeat-misses-max": {
    kind: "int",
    env: "SIMDC_HEARTBEAT_MISSES_MAX",
    default: 3,
    min: 1,
    max: 100,
    help: "missed heartbeats after which a host or SAN node is disconnected",
  },
  "metrics-interval-ms": {
    kind: "int",
    env: "SIMDC_METRICS_INTERVAL_MS",
    default: 10_000,
    min: 100,
    max: 3_600_000,
    help: "how often hosts publish their metrics (simulated ms)",
  },
  "cpu-overcommit": {
    kind: "number",
    env: "SIMDC_CPU_OVERCOMMIT",
    default: 4,
    min: 1,
    max: 32,
    help: "vCPUs placed per physical CPU, at most (vSphere caps at 32)",
  },
  "memory-overcommit": {
    kind: "number",
    env: "SIMDC_MEMORY_OVERCOMMIT",
    default: 1.5,
    min: 1,
    max: 20,
    help: "VM memory placed per MiB of host memory, at most",
  },
  "kv-replicas": {
    kind: "int",
    env: "SIMDC_KV_REPLICAS",
    default: 1,
    min: 1,
    max: 5,
    help: "JetStream replicas of the desired-state buckets (3 in a NATS cluster)",
  },
  "lease-ttl-ms": {
    kind: "int",
    env: "SIMDC_LEASE_TTL_MS",
    default: 1000,
    min: 100,
    max: 600_000,
    help: "a standby takes over once the lease went this long unrenewed; the active one renews it 5 times as often (simulated ms)",
  },
  "inventory-interval-ms": {
    kind: "int",
    env: "SIMDC_INVENTORY_INTERVAL_MS",
    default: 30_000,
    min: 100,
    max: 3_600_000,
    help: "how often each SAN node's volumes are compared with desired state (simulated ms)",
  },
  "document-chunk-bytes": {
    kind: "int",
    env: "SIMDC_DOCUMENT_CHUNK_BYTES",
    default: 512 * 1024,
    min: 1024,
    max: 900 * 1024,
    help: "bytes of VMs per chunk of a host document (under NATS's payload limit)",
  },
  "crash-at": {
    kind: "string",
    env: "SIMDC_CRASH_AT",
    default: "",
    help: "die (as with SIGKILL) on reaching these points of a change, comma-separated: record-stored, answer-stored, before-answer, document-written, backing-created, backing-deleted (a fault to inject)",
  },
} as const satisfies SettingsSpec;

export interface ControllerConfig {
  controllerId: string;
  heartbeatIntervalMs: number;
  heartbeatMissesMax: number;
  metricsIntervalMs: number;
  cpuOvercommit: number;
  memoryOvercommit: number;
  kvReplicas: number;
  leaseTtlMs: number;
  inventoryIntervalMs: number;
  documentChunkBytes: number;
  /** Points of a change where the controller dies on purpose (none by default). */
  crashAt?: string;
}

/** The configuration its checked settings give (the defaults for whatever `settings` leaves out, in tests). */
export function controllerConfigOf(settings: Settings<typeof controllerSettings>): ControllerConfig {
  return {
    controllerId: settings["controller-id"],
    heartbeatIntervalMs: settings["heartbeat-interval-ms"],
    heartbeatMissesMax: settings["heartbeat-misses-max"],
    metricsIntervalMs: settings["metrics-interval-ms"],
    cpuOvercommit: settings["cpu-overcommit"],
    memoryOvercommit: settings["memory-overcommit"],
    kvReplicas: settings["kv-replicas"],
    leaseTtlMs: settings["lease-ttl-ms"],
    inventoryIntervalMs: settings["inventory-interval-ms"],
    documentChunkBytes: settings["document-chunk-bytes"],
    crashAt: settings["crash-at"],
  };
}
