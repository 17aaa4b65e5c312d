// The san-storage process: one SAN node per process, started from flags and
// environment by the shared process runner. A bad setting ends it with one
// line on stderr and exit code 2 before it connects to anything.

import { runProcess } from "@simdc/bus";
import { SanNode } from "./san-node.js";
import { checkSanStorageSettings, sanStorageSettings } from "./settings.js";

await runProcess({
  service: "san-storage",
  settings: sanStorageSettings,
  idOf: (settings) => {
    // runProcess calls idOf right after reading the flags, before the logger
    // and the bus exist, so the checks the settings table cannot express go here.
    checkSanStorageSettings(settings);
    return settings["node-id"];
  },
  run: ({ bus, settings, logger, clock, rng }) =>
    SanNode.start({
      bus,
      logger,
      clock,
      random: rng.random,
      nodeId: settings["node-id"],
      dataDir: settings["data-dir"],
      capacityMib: settings["capacity-mib"],
      blockSizeBytes: settings["block-size-bytes"],
      heartbeatIntervalMs: settings["heartbeat-interval-ms"],
    }),
});
