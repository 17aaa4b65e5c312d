// Every NATS subject simdc uses is built here, from one configurable prefix,
// so several simulated datacenters can share a NATS server and the subject
// table in the README has a single source. Each id put into a subject is
// checked to be one valid token; "*" is accepted where a server subscribes
// for many ids at once.

import { checkName, invalidArgument } from "@simdc/common";

/**
 * Where an RPC method is served: the controller's API, the API with the
 * caller's own id as the last token (registrations, so NATS permissions can
 * tie an id to its owner), one simulated host (in its agent process), one SAN
 * node, or a process's control endpoint.
 */
export type RpcScope = "api" | "api-by-id" | "host" | "san" | "ctl";

export type EventObjectKind = "host" | "agent" | "vm" | "volume" | "san" | "fault" | "process" | "controller";

/**
 * The names of the events a user watches (the last token of an event
 * subject), kept in the datacenter's event history. Heartbeats and metrics
 * share the subject space but are telemetry, not history: they are left out,
 * or 10,000 hosts would fill it in minutes.
 */
export const eventNames = [
  "registered",
  "connected",
  "disconnected",
  "refused",
  "created",
  "deleted",
  "state-changed",
  "vm",
  "adopted",
  "active",
  "deposed",
  "reverted",
  "missing",
  "orphaned",
  "publish-failed",
  "kill",
  "pause",
  "resume",
  "restart",
  "disconnect",
  "connect",
  "exited",
  "added",
  "cleared",
  "nic-drops",
  "memory-state",
] as const;

export type EventName = (typeof eventNames)[number];

/** Periodic messages on event subjects that are not kept in the history. */
export type TelemetryName = "heartbeat" | "heartbeats" | "metrics";

const prefixPattern = /^[a-zA-Z0-9_-]+(\.[a-zA-Z0-9_-]+)*$/;

/** An id token, or "*" to subscribe for every id. */
function idToken(field: string, id: string): string {
  return id === "*" ? id : checkName(field, id);
}

export class Subjects {
  readonly prefix: string;
  /** How many tokens the prefix has, so token positions can be computed. */
  readonly prefixTokens: number;

  /** @throws SimdcError INVALID_ARGUMENT when the prefix is not dot-separated plain tokens. */
  constructor(prefix = "simdc") {
    if (!prefixPattern.test(prefix)) {
      throw invalidArgument(`subject prefix ${JSON.stringify(prefix)} must be dot-separated tokens of [a-zA-Z0-9_-]`);
    }
    this.prefix = prefix;
    this.prefixTokens = prefix.split(".").length;
  }

  /** `<prefix>.api.v1.<Service>.<Method>`: the public API, served by the active controller. */
  api(service: string, method: string): string {
    return `${this.prefix}.api.v1.${service}.${method}`;
  }

  /** `<prefix>.api.v1.<Service>.<Method>.<id>`: an API call that names its caller (a host or SAN node registering). */
  apiById(service: string, method: string, id: string): string {
    return `${this.api(service, method)}.${idToken("caller id", id)}`;
  }

  /**
   * `<prefix>.host.<agentId>.<hostId>.<Method>`: the controller talking to one
   * simulated host. One agent process serves all its hosts with one
   * subscription per method (`<agentId>.*`), so discovery and subscriptions
   * grow with agents, not hosts.
   */
  host(agentId: string, hostId: string, method: string): string {
    return `${this.prefix}.host.${checkName("agent id", agentId)}.${idToken("host id", hostId)}.${method}`;
  }

  /** Position of the host id token in a host() subject. */
  get hostIdToken(): number {
    return this.prefixTokens + 2;
  }

  /** `<prefix>.san.<nodeId>.<Method>`: block I/O and volume management on one SAN node. */
  san(nodeId: string, method: string): string {
    return `${this.prefix}.san.${idToken("SAN node id", nodeId)}.${method}`;
  }

  /** `<prefix>.ctl.<processId>.<Method>`: control endpoints of one process (the `simdc up` supervisor). */
  ctl(processId: string, method: string): string {
    return `${this.prefix}.ctl.${checkName("process id", processId)}.${method}`;
  }

  /**
   * `<prefix>.dp.<agentId>.<hostId>.<senderAgentId>`: the underlay, where one
   * host's virtual switch sends encapsulated packets to another's (the SDN's
   * tunnels). An agent subscribes once for all its hosts; the host id token
   * says which. The last token is the sending agent, which NATS permissions
   * hold each agent to, so a receiver knows who sent a train whatever host
   * the train claims to come from.
   */
  underlay(agentId: string, hostId: string, senderAgentId: string): string {
    return `${this.prefix}.dp.${checkName("agent id", agentId)}.${idToken("host id", hostId)}.${senderAgentId === "*" ? "*" : checkName("agent id", senderAgentId)}`;
  }

  /**
   * `<prefix>.dp.<senderAgentId>.<receiverAgentId>`: the underlay's flow
   * control, a receiving agent's credit back to a sending one (one token
   * fewer than underlay(), so the senders' subscription for trains does not
   * take it). Permissions hold the last token to the publishing agent.
   */
  underlayCredit(senderAgentId: string, receiverAgentId: string): string {
    return `${this.prefix}.dp.${checkName("agent id", senderAgentId)}.${receiverAgentId === "*" ? "*" : checkName("agent id", receiverAgentId)}`;
  }

  /** Position of the receiving (crediting) agent's token in an underlayCredit() subject. */
  get underlayCreditorToken(): number {
    return this.prefixTokens + 2;
  }

  /** Position of the host id token in an underlay() subject. */
  get underlayHostToken(): number {
    return this.prefixTokens + 2;
  }

  /** Position of the sending agent's token in an underlay() subject. */
  get underlaySenderToken(): number {
    return this.prefixTokens + 3;
  }

  /** `<prefix>.evt.<kind>.<id>.<name>`: an event about one object; `id` may be `*` to subscribe. */
  event(kind: EventObjectKind, id: string, name: EventName | TelemetryName | "*"): string {
    return `${this.prefix}.evt.${kind}.${idToken(`${kind} id`, id)}.${name}`;
  }

  /** Position of the object id token in an event() subject. */
  get eventIdToken(): number {
    return this.prefixTokens + 2;
  }

  /** `<prefix>.ctl.faults.report`: every process answers with the fault rules it applied. */
  faultReports(): string {
    return `${this.prefix}.ctl.faults.report`;
  }

  /** Every event in the datacenter, for watchers. */
  allEvents(): string {
    return `${this.prefix}.evt.>`;
  }

  /** The subjects the event history keeps: every event name, for any kind and id. */
  historySubjects(): string[] {
    return eventNames.map((name) => `${this.prefix}.evt.*.*.${name}`);
  }

  /** KV bucket names may not contain dots, so the prefix's dots become dashes. */
  bucket(name: string): string {
    return `${this.prefix.replaceAll(".", "-")}-${name}`;
  }

  /** The token at `index` of `subject` ("" when it has fewer tokens). */
  static token(subject: string, index: number): string {
    let start = 0;
    for (let i = 0; i < index; i++) {
      start = subject.indexOf(".", start) + 1;
      if (start === 0) return "";
    }
    const end = subject.indexOf(".", start);
    return end === -1 ? subject.slice(start) : subject.slice(start, end);
  }
}
