// Every NATS subject simdc uses is built here, from one configurable prefix,
// so several simulated datacenters can share a NATS server and the subject
// table in the README has a single source. Each id put into a subject is
// checked to be one valid token.

import { checkName, invalidArgument } from "@simdc/common";

/** Where an RPC method is served: the controller's API, one host, one SAN node, or a process's control endpoint. */
export type RpcScope = "api" | "host" | "san" | "ctl";

export type EventObjectKind = "host" | "vm" | "volume" | "san" | "fault" | "process";

const prefixPattern = /^[a-zA-Z0-9_-]+(\.[a-zA-Z0-9_-]+)*$/;

export class Subjects {
  readonly prefix: string;

  /** @throws SimdcError INVALID_ARGUMENT when the prefix is not dot-separated plain tokens. */
  constructor(prefix = "simdc") {
    if (!prefixPattern.test(prefix)) {
      throw invalidArgument(`subject prefix ${JSON.stringify(prefix)} must be dot-separated tokens of [a-zA-Z0-9_-]`);
    }
    this.prefix = prefix;
  }

  /** `<prefix>.api.v1.<Service>.<Method>`: the public API, served by the controller. */
  api(service: string, method: string): string {
    return `${this.prefix}.api.v1.${service}.${method}`;
  }

  /** `<prefix>.host.<hostId>.<Method>`: the controller talking to one simulated host. */
  host(hostId: string, method: string): string {
    return `${this.prefix}.host.${checkName("host id", hostId)}.${method}`;
  }

  /** `<prefix>.san.<nodeId>.<Method>`: block I/O and volume management on one SAN node. */
  san(nodeId: string, method: string): string {
    return `${this.prefix}.san.${checkName("SAN node id", nodeId)}.${method}`;
  }

  /** `<prefix>.ctl.<processId>.<Method>`: control endpoints of one process (the `simdc up` supervisor). */
  ctl(processId: string, method: string): string {
    return `${this.prefix}.ctl.${checkName("process id", processId)}.${method}`;
  }

  /** `<prefix>.evt.<kind>.<id>.<name>`: an event about one object; `id` may be `*` to subscribe. */
  event(kind: EventObjectKind, id: string, name: string): string {
    const idToken = id === "*" ? id : checkName(`${kind} id`, id);
    return `${this.prefix}.evt.${kind}.${idToken}.${name}`;
  }

  /** `<prefix>.ctl.faults.report`: every process answers with the fault rules it applied. */
  faultReports(): string {
    return `${this.prefix}.ctl.faults.report`;
  }

  /** Every event in the datacenter, for watchers. */
  allEvents(): string {
    return `${this.prefix}.evt.>`;
  }

  /** KV bucket names may not contain dots, so the prefix's dots become dashes. */
  bucket(name: string): string {
    return `${this.prefix.replaceAll(".", "-")}-${name}`;
  }
}
