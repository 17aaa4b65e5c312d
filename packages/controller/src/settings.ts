// The controller's settings: identity, heartbeat policy, overcommit ratios
// and KV replication. Defaults follow REFERENCES.md where it has one.

import type { SettingsSpec } from "@simdc/common";

export const controllerSettings = {
  "controller-id": {
    kind: "string",
    env: "SIMDC_CONTROLLER_ID",
    default: "controller-1",
    help: "this controller's process id",
  },
  "heartbeat-interval-ms": {
    kind: "int",
    env: "SIMDC_HEARTBEAT_INTERVAL_MS",
    default: 1000,
    min: 50,
    max: 60_000,
    help: "how often hosts and SAN nodes heartbeat",
  },
  "heartbeat-misses-max": {
    kind: "int",
    env: "SIMDC_HEARTBEAT_MISSES_MAX",
    default: 3,
    min: 1,
    max: 100,
    help: "missed heartbeats after which a host or SAN node is disconnected",
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
  "resync-interval-ms": {
    kind: "int",
    env: "SIMDC_RESYNC_INTERVAL_MS",
    default: 5000,
    min: 100,
    max: 600_000,
    help: "how often every VM not yet realized is reconciled again",
  },
} as const satisfies SettingsSpec;

export interface ControllerConfig {
  controllerId: string;
  heartbeatIntervalMs: number;
  heartbeatMissesMax: number;
  cpuOvercommit: number;
  memoryOvercommit: number;
  kvReplicas: number;
  resyncIntervalMs: number;
}
