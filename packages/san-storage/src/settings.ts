// The flags (and environment variables) of the san-storage process, checked
// before anything starts. It only describes and checks settings; main.ts
// feeds them to the SAN node.

import { checkName, invalidArgument, type SettingsSpec } from "@simdc/common";
import { blockSizeBytesMax, blockSizeBytesMin, capacityMibMax, isValidBlockSize } from "./limits.js";

export const sanStorageSettings = {
  "node-id": {
    kind: "string",
    env: "SIMDC_SAN_NODE_ID",
    help: "this SAN node's id (a-z, 0-9 and '-'); its subjects are <prefix>.san.<node-id>.*",
  },
  "data-dir": {
    kind: "string",
    env: "SIMDC_DATA_DIR",
    help: "directory holding the node's volumes (created when missing)",
  },
  "capacity-mib": {
    kind: "int",
    env: "SIMDC_CAPACITY_MIB",
    default: 102_400,
    min: 1,
    max: capacityMibMax,
    help: "sum of volume sizes the node accepts, in MiB",
  },
  "block-size-bytes": {
    kind: "int",
    env: "SIMDC_BLOCK_SIZE_BYTES",
    default: 4096,
    min: blockSizeBytesMin,
    max: blockSizeBytesMax,
    help: "block size of new volumes, a power of two, in bytes",
  },
  "heartbeat-interval-ms": {
    kind: "int",
    default: 1000,
    min: 50,
    max: 60_000,
    help: "how often the node publishes its heartbeat, in ms",
  },
} as const satisfies SettingsSpec;

/**
 * The checks the settings table cannot express.
 * @throws SimdcError INVALID_ARGUMENT for a node id that is not a name or a
 * block size that is not a power of two.
 */
export function checkSanStorageSettings(settings: { "node-id": string; "block-size-bytes": number }): void {
  checkName("--node-id", settings["node-id"]);
  if (!isValidBlockSize(settings["block-size-bytes"])) {
    throw invalidArgument(`--block-size-bytes must be a power of two from ${blockSizeBytesMin} to ${blockSizeBytesMax}`);
  }
}
