#!/usr/bin/env node
// The controller process: `node packages/controller/dist/main.js --help`.

import { runProcess } from "@simdc/bus";
import { systemClock } from "@simdc/common";
import { Controller } from "./controller.js";
import { controllerSettings } from "./settings.js";

await runProcess({
  service: "controller",
  settings: controllerSettings,
  idOf: (s) => s["controller-id"],
  run: ({ bus, settings, logger }) =>
    Controller.start(
      bus,
      {
        controllerId: settings["controller-id"],
        heartbeatIntervalMs: settings["heartbeat-interval-ms"],
        heartbeatMissesMax: settings["heartbeat-misses-max"],
        cpuOvercommit: settings["cpu-overcommit"],
        memoryOvercommit: settings["memory-overcommit"],
        kvReplicas: settings["kv-replicas"],
        resyncIntervalMs: settings["resync-interval-ms"],
      },
      systemClock,
      logger,
    ),
});
