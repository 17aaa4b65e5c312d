// Who may say what on the bus: one NATS user per role with subject
// permissions, written into the nats-server configuration `simdc up` (or the
// compose set-up) generates. An agent publishes only its own hosts' subjects
// and serves only its own hosts' endpoints; only the controller drives hosts
// and manages SAN volumes; block I/O comes only from hosts and the
// controller; the supervisor obeys only the operator; an observer reads.
// Pure: it makes text and random passwords, and writes nothing itself.

import { computeService, controllerService, hostService, networkService, storageService, type RpcMethod } from "@simdc/bus";
import { uniqueId } from "@simdc/common";
import type { ProcessPlan } from "./topology.js";

export interface Credential {
  user: string;
  password: string;
}

export interface Permissions {
  publish: { allow?: string[]; deny?: string[] };
  subscribe: { allow?: string[]; deny?: string[] };
}

export interface RoleUser extends Credential {
  permissions: Permissions;
}

/** A fresh password: 32 hex digits, never derived from the run's seed. */
export function newPassword(): string {
  return uniqueId().replaceAll("-", "");
}

/** The KV subjects and JetStream API calls that reading (watching, getting) one bucket needs. */
function kvReader(prefix: string, bucket: string): string[] {
  return streamReader(`KV_${prefix.replaceAll(".", "-")}-${bucket}`);
}

/** Reading the event history: what a KV watch needs, and pulling from an ordered consumer. */
function historyReader(prefix: string): string[] {
  const stream = `${prefix.replaceAll(".", "-")}-events`;
  return [...streamReader(stream), `$JS.API.CONSUMER.MSG.NEXT.${stream}.>`];
}

/** Making (or updating) the event history, for whoever starts first. */
function historyKeeper(prefix: string): string[] {
  const stream = `${prefix.replaceAll(".", "-")}-events`;
  return [`$JS.API.STREAM.CREATE.${stream}`, `$JS.API.STREAM.UPDATE.${stream}`];
}

function streamReader(stream: string): string[] {
  return [
    `$JS.API.INFO`,
    `$JS.API.STREAM.INFO.${stream}`,
    `$JS.API.STREAM.MSG.GET.${stream}`,
    `$JS.API.DIRECT.GET.${stream}.>`,
    `$JS.API.CONSUMER.CREATE.${stream}`,
    `$JS.API.CONSUMER.CREATE.${stream}.>`,
    `$JS.API.CONSUMER.DELETE.${stream}.>`,
    `$JS.API.CONSUMER.INFO.${stream}.>`,
    // Flow control answers of the ordered consumers that watches use.
    `$JS.FC.${stream}.>`,
  ];
}

/** The fault rule bucket: every process follows it, and may create it when it starts first. */
function faultFollower(prefix: string): string[] {
  const stream = `KV_${prefix.replaceAll(".", "-")}-faults`;
  return [...kvReader(prefix, "faults"), `$JS.API.STREAM.CREATE.${stream}`];
}

/**
 * Where a process that serves requests sends its answers: any requester's
 * inbox. Not nats-server's allow_responses, which remembers the reply
 * subject of every message delivered to the user (KV watch deliveries carry
 * one that is never answered) and, past 4,096 remembered, walks them all on
 * each delivery: that cost nats-server 83% of its CPU under a create load.
 * An inbox is `_INBOX.<process id>.<random>`, and only its process may
 * subscribe to it, so nobody learns where another's answers go.
 */
const replies = "_INBOX.>";

/** What every process subscribes to: its replies, service discovery and fault reports. */
function commonSubscriptions(prefix: string, processId: string): string[] {
  return [`_INBOX.${processId}.>`, "$SRV.>", `${prefix}.ctl.faults.report`];
}

export function operatorUser(password: string): RoleUser {
  return { user: "operator", password, permissions: { publish: { allow: [">"] }, subscribe: { allow: [">"] } } };
}

/** The API methods that only read (List*, Get*): NATS permissions match whole tokens, so they are named one by one. */
function readOnlyApi(prefix: string): string[] {
  const methods: RpcMethod<unknown, unknown>[] = [hostService, computeService, storageService, networkService, controllerService].flatMap((s) => Object.values(s));
  return methods.filter((m) => m.scope === "api" && /^(List|Get)/.test(m.method)).map((m) => `${prefix}.api.v1.${m.service}.${m.method}`);
}

/** Reads events and the read-only API; changes nothing. */
export function observerUser(prefix: string, password: string): RoleUser {
  return {
    user: "observer",
    password,
    permissions: {
      publish: {
        allow: [
          ...readOnlyApi(prefix),
          "$SRV.>",
          `${prefix}.ctl.faults.report`,
          ...kvReader(prefix, "faults"),
          ...historyReader(prefix),
        ],
      },
      subscribe: { allow: [`${prefix}.evt.>`, "_INBOX.>"] },
    },
  };
}

/**
 * Everything: the controller runs the datacenter. It may not drive the
 * supervisor, which asks for the operator's token (a deny rule here would do
 * the same, but nats-server judges a publisher with a deny rule subject by
 * subject, and a controller publishes to a new subject for every KV key and
 * reply: it made every create several times slower).
 */
export function controllerUser(_prefix: string, name: string, password: string): RoleUser {
  return { user: name, password, permissions: { publish: { allow: [">"] }, subscribe: { allow: [">"] } } };
}

/** The header a request to the supervisor over NATS carries the operator's token in. */
export const operatorTokenHeader = "Simdc-Operator-Token";

/** Its own hosts' subjects only; block I/O to any SAN node; its hosts' documents and the security groups'. */
export function agentUser(prefix: string, agentId: string, hostIds: string[], password: string): RoleUser {
  const publish = [
    ...hostIds.flatMap((h) => [`${prefix}.evt.host.${h}.>`, `${prefix}.api.v1.HostService.RegisterHost.${h}`, `${prefix}.api.v1.HostService.ProbeController.${h}`, `${prefix}.api.v1.HostService.PacketIn.${h}`]),
    `${prefix}.evt.process.${agentId}.>`,
    `${prefix}.evt.agent.${agentId}.>`,
    `${prefix}.san.*.ReadBlocks`,
    `${prefix}.san.*.WriteBlocks`,
    // The underlay's last token is the sender: an agent sends trains, and credit for the trains it took, only as itself.
    `${prefix}.dp.*.*.${agentId}`,
    `${prefix}.dp.*.${agentId}`,
    ...faultFollower(prefix),
    ...kvReader(prefix, "docs"),
    ...kvReader(prefix, "group-docs"),
    replies,
  ];
  return {
    user: agentId,
    password,
    permissions: {
      publish: { allow: publish },
      subscribe: { allow: [...commonSubscriptions(prefix, agentId), `${prefix}.host.${agentId}.>`, `${prefix}.dp.${agentId}.>`] },
    },
  };
}

/** Its own node's subjects only. */
export function sanUser(prefix: string, nodeId: string, password: string): RoleUser {
  return {
    user: nodeId,
    password,
    permissions: {
      publish: {
        allow: [
          `${prefix}.evt.san.${nodeId}.>`,
          `${prefix}.evt.process.${nodeId}.>`,
          `${prefix}.api.v1.StorageService.RegisterSanNode.${nodeId}`,
          ...faultFollower(prefix),
          replies,
        ],
      },
      subscribe: { allow: [...commonSubscriptions(prefix, nodeId), `${prefix}.san.${nodeId}.>`] },
    },
  };
}

/** Serves process faults to the operator; publishes what happened to its processes. */
export function supervisorUser(prefix: string, password: string): RoleUser {
  return {
    user: "supervisor",
    password,
    permissions: {
      publish: { allow: [`${prefix}.evt.process.>`, ...faultFollower(prefix), ...historyKeeper(prefix), replies] },
      subscribe: { allow: [...commonSubscriptions(prefix, "supervisor"), `${prefix}.ctl.supervisor.>`] },
    },
  };
}

/** The users of a planned datacenter, one per process, plus operator, observer and supervisor. */
export function usersFor(prefix: string, plans: ProcessPlan[], password: (user: string) => string = newPassword): RoleUser[] {
  const users = [operatorUser(password("operator")), observerUser(prefix, password("observer")), supervisorUser(prefix, password("supervisor"))];
  for (const plan of plans) {
    if (plan.role === "controller") users.push(controllerUser(prefix, plan.name, password(plan.name)));
    else if (plan.role === "san-storage") users.push(sanUser(prefix, plan.name, password(plan.name)));
    else users.push(agentUser(prefix, plan.name, plan.hostIds, password(plan.name)));
  }
  return users;
}

function list(subjects: string[] | undefined): string {
  return `[${(subjects ?? []).map((s) => JSON.stringify(s)).join(", ")}]`;
}

/** The `authorization` block of a nats-server configuration for these users. */
export function authorizationConfig(users: RoleUser[]): string {
  const lines = users.map((u) => {
    const { publish, subscribe } = u.permissions;
    const pub = `publish: { allow: ${list(publish.allow)}${publish.deny ? `, deny: ${list(publish.deny)}` : ""} }`;
    const sub = `subscribe: { allow: ${list(subscribe.allow)}${subscribe.deny ? `, deny: ${list(subscribe.deny)}` : ""} }`;
    return `    { user: ${JSON.stringify(u.user)}, password: ${JSON.stringify(u.password)}, permissions: { ${pub}, ${sub} } }`;
  });
  return `authorization {\n  users: [\n${lines.join(",\n")}\n  ]\n}\n`;
}
