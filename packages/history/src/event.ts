// Every event the bus carries, in one shape a person or a checker reads:
// the controller's, the supervisor's and the CLI's v1.Event messages, and the
// hosts' VM state reports (v1.VmStatus on evt.host.<id>.vm), which are the
// VM state changes. One JSON line each in a recorded history.

import { decodeMessage, Subjects } from "@simdc/bus";
import { simdc } from "@simdc/proto";

import v1 = simdc.v1;

export interface DatacenterEvent {
  /** Simulated time of the event, ms since the Unix epoch. */
  timeMs: number;
  /** What happened: the EventKind in words ("host-disconnected", "vm-state-changed", ...). */
  kind: string;
  /** What it concerns: host, vm, volume, san, process, controller, fault. */
  objectKind: string;
  objectId: string;
  message: string;
  /** The process that said so. */
  source: string;
  /** Who or what caused it, where known (a CLI call, an experiment step, a fault rule). */
  cause?: string;
  /** The failure it reports, as CODE: message. */
  status?: string;
  /** For VM state changes: the host, the state, the generation realized and the incarnation. */
  hostId?: string;
  state?: string;
  observedGeneration?: number;
  incarnation?: string;
}

/** "EVENT_KIND_HOST_DISCONNECTED" -> "host-disconnected". */
export function kindName(kind: number): string {
  return (v1.EventKind[kind] ?? `kind-${kind}`).replace("EVENT_KIND_", "").toLowerCase().replaceAll("_", "-");
}

export function vmStateName(state: number): string {
  return (v1.VmState[state] ?? String(state)).replace("VM_STATE_", "").toLowerCase();
}

function statusText(status: v1.IStatus | null | undefined): string | undefined {
  if (!status?.code) return undefined;
  return `${(v1.ErrorCode[status.code] ?? String(status.code)).replace("ERROR_CODE_", "")}: ${status.message ?? ""}`;
}

/**
 * The event a message on an event subject stands for, or null for telemetry
 * (heartbeats, metrics) and subjects that are not events.
 * @throws Error when the payload does not decode as the subject says.
 */
export function describeEvent(subjects: Subjects, subject: string, data: Uint8Array, fallbackTimeMs: number): DatacenterEvent | null {
  const at = subjects.prefixTokens;
  if (Subjects.token(subject, at) !== "evt") return null;
  const objectKind = Subjects.token(subject, at + 1);
  const objectId = Subjects.token(subject, at + 2);
  const name = Subjects.token(subject, at + 3);
  if (name === "heartbeat" || name === "heartbeats" || name === "metrics") return null;
  if (objectKind === "host" && name === "vm") {
    const status = decodeMessage(v1.VmStatus, data);
    const state = vmStateName(status.state);
    const reason = statusText(status.reason);
    return {
      timeMs: status.timeMs || fallbackTimeMs,
      kind: "vm-state-changed",
      objectKind: "vm",
      objectId: status.vmId,
      message: `vm ${status.vmId} is ${state} on ${objectId}${reason ? ` (${reason})` : ""}`,
      source: objectId,
      hostId: objectId,
      state,
      observedGeneration: status.observedGeneration,
      incarnation: status.incarnation,
      ...(reason ? { status: reason } : {}),
    };
  }
  const event = decodeMessage(v1.Event, data);
  const status = statusText(event.status);
  return {
    timeMs: event.timeMs || fallbackTimeMs,
    kind: kindName(event.kind),
    objectKind,
    objectId: event.objectId || objectId,
    message: event.message,
    source: event.source,
    ...(event.cause ? { cause: event.cause } : {}),
    ...(status ? { status } : {}),
  };
}

/**
 * Whether an event passes `--kind` and `--id` filters: a kind matches by its
 * name ("host-disconnected") or its object kind ("host"); empty lists pass all.
 */
export function eventMatches(event: DatacenterEvent, kinds: readonly string[], ids: readonly string[]): boolean {
  if (kinds.length > 0 && !kinds.includes(event.kind) && !kinds.includes(event.objectKind)) return false;
  if (ids.length > 0 && !ids.includes(event.objectId) && !(event.hostId && ids.includes(event.hostId))) return false;
  return true;
}

/** Every kind name `--kind` accepts: the event kinds and the object kinds. */
export function knownKinds(): string[] {
  const kinds = Object.values(v1.EventKind)
    .filter((k): k is number => typeof k === "number" && k !== 0)
    .map(kindName);
  return [...new Set([...kinds, "host", "vm", "volume", "san", "process", "controller", "fault"])].sort();
}
