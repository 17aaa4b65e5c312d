export { Bus, endpoint, callTimeoutMsDefault } from "./bus.js";
export type { BusOptions, CallOptions, Endpoint, ServeOptions } from "./bus.js";
export { Subjects } from "./subjects.js";
export type { RpcScope, EventObjectKind } from "./subjects.js";
export { decodeMessage, encodeMessage, typeName } from "./codec.js";
export type { MessageType } from "./codec.js";
export * from "./contract.js";
export { Bucket } from "./kv.js";
export type { BucketOptions, Stored } from "./kv.js";
