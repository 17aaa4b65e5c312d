export { describeEvent, eventMatches, kindName, knownKinds, vmStateName } from "./event.js";
export type { DatacenterEvent } from "./event.js";
export { readEvents } from "./read.js";
export type { ReadEventsResult } from "./read.js";
