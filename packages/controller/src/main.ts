#!/usr/bin/env node
// The controller process: `node packages/controller/dist/main.js --help`.

import { runProcess } from "@simdc/bus";
import { checkName } from "@simdc/common";
import { Controller } from "./controller.js";
import { parseCrashPoints } from "./crash-points.js";
import { controllerConfigOf, controllerSettings } from "./settings.js";

await runProcess({
  service: "controller",
  settings: controllerSettings,
  idOf: (s) => {
    // Checked before anything starts: a bad crash point is a bad flag.
    parseCrashPoints(s["crash-at"]);
    return checkName("--controller-id", s["controller-id"]);
  },
  run: ({ bus, settings, logger, clock }) =>
    Controller.start(
      bus,
      controllerConfigOf(settings),
      clock,
      logger,
      bus.seed,
    ),
});
