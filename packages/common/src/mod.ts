export * from "./errors.js";
export * from "./assert.js";
export * from "./names.js";
export * from "./clock.js";
export * from "./log.js";
export * from "./lifecycle.js";
export * from "./config.js";
export * from "./health.js";
