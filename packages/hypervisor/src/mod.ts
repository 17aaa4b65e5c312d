// The public entry of @simdc/hypervisor: one simulated host's CPU and memory
// models, stepped on simulated time by whoever hosts them (the host agent).
export * from "./memory-manager.js";
export { memoryLevelStates, memoryStateThresholdsPct, hysteresisPctDefault as memoryHysteresisPctDefault, minFreeMb, type MemoryState, type MemoryLevel } from "./memory-states.js";
export { pagesPerMb, largePagePages, memorySharesPerMb, compressibilityDefaults, memoryOverheadMb, type PageClass, type MemorySharesPreset, type Compressibility } from "./memory-pages.js";
export { idleTaxDefault, memoryShareRatio } from "./memory-shares.js";
export * from "./cpu-scheduler.js";
export * from "./workload.js";
export * from "./workload-wire.js";
