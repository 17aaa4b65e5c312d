export { fields, fieldIndex, formatIp, formatMac, parseIp, parseMac } from "./fields.js";
export type { FieldSpec } from "./fields.js";
export { defaultPriority, formatFlow, packetFields, parseFlow, parsePacket } from "./flow-syntax.js";
export type { Action, FlowSpec, MatchField, Packet } from "./flow-syntax.js";
export { parseFlowFile, resubmitDepthMax, Vswitch } from "./vswitch.js";
export type { Flow, Verdict, VswitchOptions } from "./vswitch.js";
export { fromWords, hashWords, packetWords, toWords, wordOffset } from "./words.js";
export type { PacketWords } from "./words.js";
export { centralControllerId, reactiveCookie } from "./conventions.js";
