export * from "./nats.js";
export * from "./bus.js";
