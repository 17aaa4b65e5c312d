// The public entry of @simdc/san-storage: the SAN node role (for in-process
// tests and harnesses), its block store, settings and limits. The process
// itself is main.ts; nothing here starts anything on import.

export { SanNode, diskProbeEveryBeats } from "./san-node.js";
export type { SanNodeOptions } from "./san-node.js";
export { BlockStore, volumeBlockCount } from "./block-store.js";
export type { BlockStoreOptions, CreatedVolume } from "./block-store.js";
export type { VolumeMeta } from "./volume-meta.js";
export { sanStorageSettings, checkSanStorageSettings } from "./settings.js";
export * from "./limits.js";
