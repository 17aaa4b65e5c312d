// The controller is a process; this entry exists for in-process tests and benchmarks.
export { Controller } from "./controller.js";
export { controllerSettings } from "./settings.js";
export type { ControllerConfig } from "./settings.js";
export { placeVm } from "./placement/placement.js";
export { HostRanking } from "./placement/host-ranking.js";
export { SortedKeys } from "./store/sorted-keys.js";
