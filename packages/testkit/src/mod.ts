export * from "./nats.js";
export * from "./bus.js";
export * from "./services.js";
export * from "./stand-ins.js";
export { freePort } from "@simdc/cli";
