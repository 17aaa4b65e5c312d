// The connection every simdc process holds to NATS, and the typed operations
// over it: protobuf request/reply served with the NATS services framework,
// events, and KV buckets, with the fault hooks applied to every message.
// Nothing outside this package touches the NATS client; nothing here knows
// what a VM or a volume is.

import {
  connect,
  headers,
  RequestStrategy,
  Events,
  type MsgHdrs,
  type NatsConnection,
  type Msg,
  type ServiceMsg,
  type Service,
  type Subscription,
  type NatsError,
  type JetStreamClient,
  ErrorCode as NatsErrorCode,
} from "nats";
import {
  assert,
  SimdcError,
  isErrorCodeName,
  toSimdcError,
  unavailable,
  wallClock,
  wallNowMs,
  errorCodes,
  type Clock,
  type Logger,
} from "@simdc/common";
import { decodeMessage, encodeMessage, typeName, type Input, type MessageType } from "./codec.js";
import type { RpcMethod } from "./contract.js";
import { Subjects } from "./subjects.js";
import { Bucket, type BucketOptions } from "./kv.js";
import { FaultRules, type FaultVerdict, type MessageKey } from "./faults.js";
import { Outbox } from "./outbox.js";
import { EventHistory } from "./history.js";
import { Metrics } from "./metrics.js";
import { simdc } from "@simdc/proto";

import v1 = simdc.v1;

/** Header naming the sender's identities (most specific first: a host id, then process id and role), space-separated. */
export const sourceHeader = "Simdc-Src";
/** Header numbering the sender's messages on one subject, so fault sampling is a function of the message. */
export const seqHeader = "Simdc-Seq";
/** Messages held back by delay rules at once; past this they are dropped, so a rule cannot exhaust memory. */
export const delayedMessagesMax = 10_000;
/** How long `fault list` waits for every process to report. */
export const faultReportWindowMs = 500;
export const faultBucket = "faults";
/** NATS's default max_payload, used until the server says otherwise. */
export const payloadMaxDefault = 1024 * 1024;
export const faultRulesKey = "rules";
/** Publish-failure events a process sends per second at most; every failure is still counted and logged. */
export const publishFailureEventsPerSecondMax = 10;

export interface BusOptions {
  /** NATS URLs, "nats://127.0.0.1:4222" or several, comma-separated. */
  servers: string;
  /** Subject prefix; several datacenters may share one NATS. */
  prefix?: string;
  /** Datacenter name, put into every service's name and metadata. */
  dc?: string;
  /** This process's identity, used as the NATS connection name. */
  processId: string;
  /** The process's role (controller, host-agent, ...): an identity fault rules can name. */
  role?: string;
  logger: Logger;
  /** Simulated time, for fault delays; the wall clock when absent. */
  clock?: Clock;
  /** The run's seed: fault sampling is a hash of it and each message. */
  seed?: number;
  /** Credentials of the process's role, when the server requires them. */
  user?: string;
  password?: string;
  /**
   * How often the client pings the server. Short, so a cut connection is
   * noticed in seconds rather than the client's default minutes.
   */
  pingIntervalMs?: number;
  /** Give up connecting at start after this long (reconnects afterwards never give up). */
  connectTimeoutMs?: number;
}

export interface CallOptions {
  /** For host-, SAN- and id-scoped methods: see Bus.subjectOf. */
  scopeId?: string;
  timeoutMs?: number;
  /** Who sends, when one process speaks for several (a simulated host); fault rules match it. */
  source?: string;
  /** Extra headers for the server (a token it requires). */
  headers?: Record<string, string>;
}

export const callTimeoutMsDefault = 5_000;

/** A server-side implementation of one RPC method. */
export interface Endpoint<Req = unknown, Res = unknown> {
  method: RpcMethod<Req, Res>;
  /**
   * Receives the decoded request; throws SimdcError for operating errors.
   * Must validate every field it uses: the decoder accepts defaults.
   */
  handle(request: Req, msg: Msg): Promise<Input<Res>> | Input<Res>;
}

/** Pairs a method with its handler, keeping the request and response types tied. */
export function endpoint<Req, Res>(
  method: RpcMethod<Req, Res>,
  handle: (request: Req, msg: Msg) => Promise<Input<Res>> | Input<Res>,
): Endpoint<Req, Res> {
  return { method, handle };
}

/** Who receives a message, for fault rules: one fixed id, or the id named by a token of its subject. */
export type Owner = string | ((subject: string) => string);

export interface ServeOptions {
  /** Role of the serving process: controller, host, san-node, supervisor. */
  role: string;
  /**
   * Where host-, SAN- and id-scoped methods are served (see subjectOf); may
   * hold "*" to serve many ids with one subscription. Goes into metadata.
   */
  scopeId?: string;
  /** Who receives, for fault rules; the scope id when absent and not a wildcard. */
  owner?: Owner;
  description: string;
}

export interface SubscribeOptions {
  queue?: string;
  /** Who receives, for fault rules (the process's identities are added). */
  owner?: Owner;
}

/** One message carried in a batch, as `subscribeBatch` judges and delivers it. */
export interface BatchItem<I> {
  item: I;
  /** The subject it would have had alone. */
  subject: string;
  /** Who sent it (a host id), first of the batch sender's identities. */
  sender: string;
  /** Its number among the sender's messages on `subject`, for seeded sampling. */
  seq: number;
}

/** The scope id of a host-scoped method: the host's agent and the host. */
export function hostScope(agentId: string, hostId: string): string {
  return `${agentId}.${hostId}`;
}

export class Bus {
  readonly subjects: Subjects;
  readonly dc: string;
  readonly processId: string;
  readonly logger: Logger;
  readonly clock: Clock;
  readonly seed: number;
  /** This process's Prometheus metrics; roles add theirs. */
  readonly metrics: Metrics;
  private readonly services: Service[] = [];
  /** Who this process is, for fault rules: its id and its role. */
  private readonly processIdentities: readonly string[];
  /** The ids it speaks for (its hosts, its node), for fault reports. */
  private readonly ownedIds = new Set<string>();
  private faults = new FaultRules(0, []);
  private readonly outbox = new Outbox();
  private readonly faultCounts = { dropped: 0, delayed: 0, duplicated: 0 };
  /** What each rule of the applied set did here, by rule id. */
  private ruleCounts = new Map<string, v1.FaultRuleCounts>();
  /** The last rule that dropped a message from each sender here, and when, so the silence it caused can be traced to it. */
  private readonly lastDrop = new Map<string, { ruleId: string; atMs: number }>();
  private delayedNow = 0;
  /** Per sender and subject, how many messages this process has sent. */
  private readonly sent = new Map<string, number>();
  private readonly connectionListeners: ((connected: boolean) => void)[] = [];
  private publishFailures = 0;
  private failureEventWindow = { startMs: 0, count: 0 };

  private constructor(
    private readonly nc: NatsConnection,
    options: BusOptions,
  ) {
    this.subjects = new Subjects(options.prefix ?? "simdc");
    this.dc = options.dc ?? "dc1";
    this.processId = options.processId;
    this.logger = options.logger;
    this.clock = options.clock ?? wallClock;
    this.seed = options.seed ?? 0;
    this.processIdentities = [...new Set([options.processId, ...(options.role ? [options.role] : [])])];
    this.metrics = new Metrics(options.role ?? "client", options.processId);
    this.metrics.gauge("simdc_fault_messages_held", "Messages delay rules hold back right now", () => this.delayedNow);
    this.metrics.gauge("simdc_nats_connected", "1 while the NATS connection is open", () => (this.nc.isClosed() ? 0 : 1));
  }

  /**
   * Connects, retrying until connectTimeoutMs, then reconnecting forever.
   * @throws SimdcError UNAVAILABLE when no server answers in time, or at once
   * when the server refuses the credentials.
   */
  static async connect(options: BusOptions): Promise<Bus> {
    const deadline = wallNowMs() + (options.connectTimeoutMs ?? 30_000);
    let lastError: unknown;
    while (wallNowMs() < deadline) {
      try {
        const nc = await connect({
          servers: options.servers.split(",").map((s) => s.trim()),
          name: options.processId,
          maxReconnectAttempts: -1,
          reconnectTimeWait: 250,
          pingInterval: options.pingIntervalMs ?? 2_000,
          maxPingOut: 2,
          timeout: 2_000,
          // Replies come back under the process's own inbox, so NATS
          // permissions can keep one role from reading another's replies.
          inboxPrefix: `_INBOX.${options.processId}`,
          // No stack captured for every request (each KV write is one): it
          // was a fifth of the controller's CPU under a create load, and a
          // failed call is turned into a SimdcError naming the method anyway.
          noAsyncTraces: true,
          ...(options.user ? { user: options.user, pass: options.password ?? "" } : {}),
        });
        const bus = new Bus(nc, options);
        bus.watchStatus();
        return bus;
      } catch (err) {
        lastError = err;
        if ((err as NatsError).code === NatsErrorCode.AuthorizationViolation) {
          throw unavailable(`NATS at ${options.servers} refused the credentials of ${options.user ?? "(none)"}: ${(err as Error).message}`, err);
        }
        await wallClock.sleep(250);
      }
    }
    throw unavailable(`cannot reach NATS at ${options.servers}: ${(lastError as Error)?.message}`, lastError);
  }

  private watchStatus(): void {
    void (async () => {
      for await (const status of this.nc.status()) {
        // Reconnects and disconnects are what a fault experiment looks for in
        // the logs; the client's routine ping timer is not.
        const level = status.type === "pingTimer" ? "debug" : "info";
        this.logger[level]({ natsStatus: status.type, data: String(status.data) }, "nats connection status");
        if (status.type === Events.Disconnect || status.type === Events.Reconnect) {
          const connected = status.type === Events.Reconnect;
          for (const listener of this.connectionListeners) listener(connected);
        }
      }
    })();
  }

  /** Calls `listener` when the connection to NATS is lost (false) and when it is back (true). */
  onConnectionChange(listener: (connected: boolean) => void): void {
    this.connectionListeners.push(listener);
  }

  /** Ids this process speaks for besides its own (its simulated hosts), shown in fault reports. */
  declareOwned(ids: Iterable<string>): void {
    for (const id of ids) this.ownedIds.add(id);
  }

  /**
   * The subject where `method` is served. `scopeId` is, by scope: the
   * caller's own id ("api-by-id"), "<agentId>.<hostId>" ("host"; see
   * hostScope), the node id ("san"), the process id ("ctl"); "*" (or
   * "<agentId>.*") where a server subscribes for every id.
   */
  subjectOf(method: RpcMethod<unknown, unknown>, scopeId?: string): string {
    switch (method.scope) {
      case "api":
        return this.subjects.api(method.service, method.method);
      case "api-by-id":
        return this.subjects.apiById(method.service, method.method, requireScope(method, scopeId));
      case "host": {
        const scope = requireScope(method, scopeId);
        const dot = scope.indexOf(".");
        return this.subjects.host(scope.slice(0, dot), dot < 0 ? "" : scope.slice(dot + 1), method.method);
      }
      case "san":
        return this.subjects.san(requireScope(method, scopeId), method.method);
      case "ctl":
        return this.subjects.ctl(requireScope(method, scopeId), method.method);
    }
  }

  /**
   * Calls an RPC method and decodes its reply.
   * @throws SimdcError with the code the server sent, or UNAVAILABLE on timeout
   * or when nobody serves the subject.
   */
  async call<Req, Res>(method: RpcMethod<Req, Res>, request: Input<Req>, options: CallOptions = {}): Promise<Res> {
    const subject = this.subjectOf(method, options.scopeId);
    const timeoutMs = options.timeoutMs ?? callTimeoutMsDefault;
    let reply: Msg;
    try {
      let h = this.sourceHeaders(subject, options.source);
      if (options.headers) {
        h ??= headers();
        for (const [name, value] of Object.entries(options.headers)) h.set(name, value);
      }
      const data = encodeMessage(method.request, request);
      const opts = { timeout: timeoutMs, ...(h ? { headers: h } : {}) };
      reply = await new Promise<Msg>((resolve, reject) => {
        this.outbox.add(() => {
          try {
            this.nc.request(subject, data, opts).then(resolve, reject);
          } catch (err) {
            reject(err);
          }
        });
      });
    } catch (err) {
      throw natsRequestError(err as NatsError, method, timeoutMs);
    }
    const failure = replyError(reply);
    if (failure) throw failure;
    return decodeMessage(method.response, reply.data);
  }

  /**
   * Serves endpoints as one NATS service, so `$SRV.PING/INFO/STATS` list them
   * with their proto method names. Every request ends in a reply: a decode
   * failure or a thrown error becomes a typed error reply, never a crash.
   */
  async serve(options: ServeOptions, endpoints: Endpoint<any, any>[]): Promise<Service> {
    const metadata: Record<string, string> = { dc: this.dc, role: options.role, process: this.processId };
    if (options.scopeId) metadata["id"] = options.scopeId;
    const fixedScope = options.scopeId && !options.scopeId.includes("*") ? options.scopeId : undefined;
    const owner = options.owner ?? fixedScope;
    if (typeof owner === "string") this.ownedIds.add(owner);
    const service = await this.nc.services.add({
      name: `${this.dc}-${options.role}`,
      version: "0.1.0",
      description: options.description,
      metadata,
    });
    for (const ep of endpoints) {
      // A method that names its caller in the subject is served for every caller.
      const subject = this.subjectOf(ep.method, ep.method.scope === "api-by-id" ? "*" : options.scopeId);
      service.addEndpoint(ep.method.method, {
        subject,
        metadata: { rpc: ep.method.rpc, request: typeName(ep.method.request), response: typeName(ep.method.response) },
        handler: (err, msg) => {
          if (err) {
            this.logger.error({ err, subject }, "service endpoint failed");
            return;
          }
          const receiver = this.receiverOf(owner, msg.subject);
          this.receive(msg, receiver, () => this.handleRequest(ep, msg, receiver));
        },
      });
    }
    this.services.push(service);
    // Resolved means served: the server has the endpoints' subscriptions before anyone is told to call them.
    await this.nc.flush();
    return service;
  }

  private receiverOf(owner: Owner | undefined, subject: string): readonly string[] {
    if (owner === undefined) return this.processIdentities;
    const id = typeof owner === "string" ? owner : owner(subject);
    return id ? [id, ...this.processIdentities] : this.processIdentities;
  }

  private handleRequest(ep: Endpoint<any, any>, msg: ServiceMsg, responder: readonly string[]): void {
    const timer = this.metrics.rpcSeconds.startTimer({ rpc: ep.method.rpc });
    let settled: Promise<unknown>;
    try {
      const request = decodeMessage(ep.method.request, msg.data);
      settled = Promise.resolve(ep.handle(request, msg));
    } catch (err) {
      settled = Promise.reject(err);
    }
    settled.then(
      (response) => {
        const data = encodeMessage(ep.method.response, response as Input<unknown>);
        const payloadMax = this.payloadMax;
        if (data.length > payloadMax) {
          // NATS would refuse to send it; say why instead of leaving the caller to time out.
          const failure = new SimdcError(
            "RESOURCE_EXHAUSTED",
            `the reply to ${ep.method.rpc} is ${data.length} bytes, over the server's ${payloadMax}-byte limit; ask for less (a smaller page)`,
          );
          this.logger.warn({ rpc: ep.method.rpc, bytes: data.length, payloadMax }, "reply too large");
          timer({ code: failure.code });
          this.reply(msg, responder, () => this.send(() => msg.respondError(failure.httpStatus, failure.toString()), ep));
          return;
        }
        timer({ code: "OK" });
        this.reply(msg, responder, () => this.send(() => msg.respond(data), ep));
      },
      (err: unknown) => {
        const failure = toSimdcError(err);
        timer({ code: failure.code });
        if (failure.code === "INTERNAL") {
          this.logger.error({ err, rpc: ep.method.rpc }, "request failed with an internal error");
        } else {
          this.logger.debug({ rpc: ep.method.rpc, code: failure.code, reason: failure.message }, "request refused");
        }
        this.reply(msg, responder, () => this.send(() => msg.respondError(failure.httpStatus, failure.toString()), ep));
      },
    );
  }

  /** Sends a reply with this turn's other messages; a connection closing under it is logged, never thrown into the event loop. */
  private send(respond: () => boolean, ep: Endpoint<any, any>): void {
    this.outbox.add(() => {
      try {
        respond();
      } catch (err) {
        this.logger.warn({ err, rpc: ep.method.rpc }, "could not send a reply");
      }
    });
  }

  /** The largest message the server takes, in bytes. */
  get payloadMax(): number {
    return this.nc.info?.max_payload ?? payloadMaxDefault;
  }

  /**
   * Publishes one protobuf message (an event or a heartbeat); `source` as in
   * CallOptions. A publish that fails (a message over the payload limit, a
   * closed connection) is logged, counted and reported as a PUBLISH_FAILED
   * event when the connection allows, never dropped silently.
   * @returns true when the message was taken to be sent (it leaves with the
   * others of this turn).
   */
  publish<T>(subject: string, type: MessageType<T>, message: Input<T>, source?: string): boolean {
    let data: Uint8Array;
    try {
      data = encodeMessage(type, message);
    } catch (err) {
      this.publishFailed(subject, typeName(type), err, source);
      return false;
    }
    return this.publishEncoded(subject, type, data, source);
  }

  /**
   * Publishes a message of `type` its sender encoded itself (a hot path
   * that builds its bytes without protobufjs's writer), as publish() does.
   */
  publishEncoded<T>(subject: string, type: MessageType<T>, data: Uint8Array, source?: string): boolean {
    if (data.length > this.payloadMax) {
      this.publishFailed(subject, typeName(type), new SimdcError("RESOURCE_EXHAUSTED", `${data.length} bytes is over the server's ${this.payloadMax}-byte limit`), source);
      return false;
    }
    const h = this.sourceHeaders(subject, source);
    this.outbox.add(() => {
      try {
        this.nc.publish(subject, data, h ? { headers: h } : undefined);
      } catch (err) {
        this.publishFailed(subject, typeName(type), err, source);
      }
    });
    return true;
  }

  /** Publish failures since the process started. */
  get publishFailureCount(): number {
    return this.publishFailures;
  }

  private publishFailed(subject: string, type: string, err: unknown, source: string | undefined): void {
    this.publishFailures += 1;
    this.metrics.publishFailures.inc();
    const reason = err instanceof Error ? err.message : String(err);
    this.logger.error({ subject, type, err: reason, failures: this.publishFailures }, "publish failed");
    const nowMs = wallNowMs();
    const window = this.failureEventWindow;
    if (nowMs - window.startMs >= 1_000) {
      window.startMs = nowMs;
      window.count = 0;
    }
    if (window.count >= publishFailureEventsPerSecondMax || this.nc.isClosed()) return;
    window.count += 1;
    const objectId = source ?? this.processId;
    try {
      const event = v1.Event.create({
        kind: v1.EventKind.EVENT_KIND_PUBLISH_FAILED,
        objectId,
        timeMs: this.clock.nowMs(),
        message: `could not publish ${type} on ${subject}: ${reason}`,
        status: { code: v1.ErrorCode.ERROR_CODE_UNAVAILABLE, message: reason },
        source: this.processId,
      });
      this.nc.publish(this.subjects.event("process", this.processId, "publish-failed"), encodeMessage(v1.Event, event));
    } catch (eventErr) {
      // The report itself could not go out either (the connection is gone); the log line above stands.
      this.logger.debug({ err: String(eventErr) }, "could not report a failed publish");
    }
  }

  /**
   * Subscribes to typed messages. A message that does not decode is logged and
   * dropped; a handler that throws or rejects is logged; neither ends the process.
   */
  subscribe<T>(
    subject: string,
    type: MessageType<T>,
    handler: (message: T, subject: string) => void | Promise<void>,
    options: SubscribeOptions = {},
  ): Subscription {
    const owner = options.owner;
    if (typeof owner === "string") this.ownedIds.add(owner);
    return this.nc.subscribe(subject, {
      ...(options.queue ? { queue: options.queue } : {}),
      callback: (err, msg) => {
        if (err) {
          this.logger.error({ err, subject }, "subscription failed");
          return;
        }
        // The hot path (the underlay's trains): with no fault rules, no receiver to work out and no closure to make.
        if (this.faults.empty) this.deliver(type, handler, msg);
        else this.receive(msg, this.receiverOf(owner, msg.subject), () => this.deliver(type, handler, msg));
      },
    });
  }

  private deliver<T>(type: MessageType<T>, handler: (message: T, subject: string) => void | Promise<void>, msg: Msg): void {
    const message = this.decodeOrDrop(type, msg);
    if (message !== undefined) this.handle(handler, message, msg.subject);
  }

  /**
   * Subscribes to messages that each carry several messages (the heartbeats
   * of an agent's hosts in one). `unpack` says what each item stands for:
   * the subject and sender it would have had alone, and its number. Each
   * item is judged by the fault rules as that message alone would be, so a
   * rule on one host cuts exactly that host, then handed to `handler`.
   */
  subscribeBatch<B, I>(
    subject: string,
    type: MessageType<B>,
    unpack: (batch: B, subject: string) => Iterable<BatchItem<I>>,
    handler: (item: I, subject: string) => void | Promise<void>,
    options: SubscribeOptions = {},
  ): Subscription {
    return this.nc.subscribe(subject, {
      callback: (err, msg) => {
        if (err) {
          this.logger.error({ err, subject }, "subscription failed");
          return;
        }
        const batch = this.decodeOrDrop(type, msg);
        if (batch === undefined) return;
        const receiver = this.receiverOf(options.owner, msg.subject);
        const batchSources = this.faults.empty ? [] : (msg.headers?.get(sourceHeader).split(" ") ?? []);
        let items: Iterable<BatchItem<I>>;
        try {
          items = unpack(batch, msg.subject);
        } catch (unpackErr) {
          this.logHandlerError(msg.subject, unpackErr);
          return;
        }
        for (const { item, subject: itemSubject, sender, seq } of items) {
          const deliver = (): void => this.handle(handler, item, itemSubject);
          if (this.faults.empty) deliver();
          else this.act(this.faults.decide(itemSubject, [sender, ...batchSources], receiver, { sender, seq }), deliver, sender);
        }
      },
    });
  }

  /** The decoded message, or undefined (logged) when it does not decode. */
  private decodeOrDrop<T>(type: MessageType<T>, msg: Msg): T | undefined {
    try {
      return decodeMessage(type, msg.data);
    } catch (decodeErr) {
      this.logger.warn({ subject: msg.subject, err: decodeErr }, "dropped a message that does not decode");
      return undefined;
    }
  }

  /** Runs a message handler; what it throws or rejects with is logged, never thrown into the event loop. */
  private handle<T>(handler: (message: T, subject: string) => void | Promise<void>, message: T, subject: string): void {
    try {
      const done = handler(message, subject);
      if (done) done.catch((handlerErr: unknown) => this.logHandlerError(subject, handlerErr));
    } catch (handlerErr) {
      this.logHandlerError(subject, handlerErr);
    }
  }

  private logHandlerError(subject: string, err: unknown): void {
    this.logger.error({ subject, err }, "message handler failed");
  }

  /**
   * Who sends, and the message's number among the sender's on the subject:
   * what fault rules judge by. Sent only while this process applies rules:
   * every process follows the same rule set, so without rules here nobody
   * judges (but for the moment a new set takes to reach everyone), and the
   * headers would cost every message a header block on both ends.
   */
  private sourceHeaders(subject: string, source: string | undefined): MsgHdrs | undefined {
    if (this.faults.empty) return undefined;
    const h = headers();
    // A simulated host speaks only for itself, not for the other hosts of its process.
    h.set(sourceHeader, source ? `${source} ${this.processIdentities.join(" ")}` : this.processIdentities.join(" "));
    const key = source ? `${source} ${subject}` : subject;
    const seq = (this.sent.get(key) ?? 0) + 1;
    this.sent.set(key, seq);
    h.set(seqHeader, String(seq));
    return h;
  }

  private keyOf(msg: Msg, sources: readonly string[]): MessageKey {
    return { sender: sources[0] ?? "", seq: Number(msg.headers?.get(seqHeader) ?? 0) || 0 };
  }

  /** Applies the fault rules to a message arriving here, then delivers it (or not). */
  private receive(msg: Msg, receiver: readonly string[], deliver: () => void): void {
    if (this.faults.empty) return deliver();
    const sources = msg.headers?.get(sourceHeader).split(" ") ?? [];
    this.act(this.faults.decide(msg.subject, sources, receiver, this.keyOf(msg, sources)), deliver, sources[0]);
  }

  /** Applies the fault rules to a reply leaving here, matched by the request's subject. */
  private reply(request: Msg, responder: readonly string[], send: () => void): void {
    if (this.faults.empty) return send();
    const requester = request.headers?.get(sourceHeader).split(" ") ?? [];
    this.act(this.faults.decide(request.subject, responder, requester, this.keyOf(request, requester), "reply"), send);
  }

  private act(verdict: FaultVerdict, deliver: () => void, sender?: string): void {
    if (verdict.kind === "deliver") return deliver();
    const rule = this.ruleCounts.get(verdict.ruleId);
    if (sender && verdict.kind === "drop") this.lastDrop.set(sender, { ruleId: verdict.ruleId, atMs: this.clock.nowMs() });
    this.metrics.faultMessages.inc({ rule: verdict.ruleId, action: verdict.kind === "drop" ? "dropped" : verdict.kind === "delay" ? "delayed" : "duplicated" });
    switch (verdict.kind) {
      case "drop":
        this.faultCounts.dropped += 1;
        if (rule) rule.dropped += 1;
        return;
      case "duplicate":
        this.faultCounts.duplicated += 1;
        if (rule) rule.duplicated += 1;
        for (let i = 0; i <= verdict.copies; i++) deliver();
        return;
      case "delay":
        if (this.delayedNow >= delayedMessagesMax) {
          this.faultCounts.dropped += 1;
          if (rule) rule.dropped += 1;
          return;
        }
        this.faultCounts.delayed += 1;
        this.delayedNow += 1;
        if (rule) {
          rule.delayed += 1;
          rule.held += 1;
        }
        this.clock.after(verdict.delayMs, () => {
          this.delayedNow -= 1;
          if (rule) rule.held -= 1;
          deliver();
        });
        return;
    }
  }

  /**
   * Follows the fault rule set in KV (applying the current one first, so a
   * process that starts late applies it too) and answers fault reports.
   */
  async followFaultRules(): Promise<void> {
    const bucket = await this.bucket(faultBucket, v1.FaultRuleSet);
    await bucket.watchKey(faultRulesKey, (set) => this.applyFaultRules(set));
    this.nc.subscribe(this.subjects.faultReports(), {
      callback: (_err, msg) => {
        const report = v1.FaultReport.create({
          processId: this.processId,
          identities: [...this.processIdentities, ...this.ownedIds],
          generation: this.faults.generation,
          ...this.faultCounts,
          nowMs: this.clock.nowMs(),
          rules: [...this.ruleCounts.values()],
          held: this.delayedNow,
        });
        try {
          msg.respond(encodeMessage(v1.FaultReport, report));
        } catch (err) {
          this.logger.warn({ err }, "could not answer a fault report");
        }
      },
    });
    // The server knows the subscription once this resolves, so the process is in every report from now on.
    await this.nc.flush();
  }

  private applyFaultRules(set: v1.FaultRuleSet | null): void {
    const generation = set?.generation ?? 0;
    if (generation === this.faults.generation && generation !== 0) return;
    try {
      this.faults = new FaultRules(set?.generation ?? 0, set?.rules ?? [], this.seed, () => this.clock.nowMs());
      // A rule that stays keeps its counts (and the messages it holds); a removed one's go.
      const counts = new Map<string, v1.FaultRuleCounts>();
      for (const ruleId of this.faults.ruleIds) counts.set(ruleId, this.ruleCounts.get(ruleId) ?? v1.FaultRuleCounts.create({ ruleId }));
      this.ruleCounts = counts;
      this.logger.info({ generation: this.faults.generation, rules: set?.rules.length ?? 0 }, "fault rules applied");
    } catch (err) {
      // A rule set that does not check out (written by something other than
      // simdc) is refused whole; the process keeps its previous rules.
      this.logger.error({ err }, "refused a fault rule set");
    }
  }

  /**
   * The fault rule that dropped a message from `sender` here within the last
   * `withinMs` of simulated time, if one did: what a silence it caused is blamed on.
   */
  recentDropBy(sender: string, withinMs: number): string | undefined {
    const drop = this.lastDrop.get(sender);
    return drop && this.clock.nowMs() - drop.atMs <= withinMs ? drop.ruleId : undefined;
  }

  /** Asks every process for the fault rule generation it applied. */
  async faultReports(windowMs = faultReportWindowMs): Promise<v1.FaultReport[]> {
    const replies = await this.nc.requestMany(this.subjects.faultReports(), new Uint8Array(), {
      strategy: RequestStrategy.Timer,
      maxWait: windowMs,
    });
    const out: v1.FaultReport[] = [];
    for await (const reply of replies) {
      try {
        out.push(decodeMessage(v1.FaultReport, reply.data));
      } catch (err) {
        this.logger.warn({ err }, "ignored a fault report that does not decode");
      }
    }
    return out;
  }

  /** The datacenter's event history (a JetStream stream of every event). */
  eventHistory(): EventHistory {
    return new EventHistory(this.nc, this.subjects, this.logger);
  }

  /** Makes the event history stream if it is not there (every process that may start first calls it). */
  async ensureEventHistory(replicas = 1): Promise<void> {
    await this.eventHistory().ensure(replicas);
  }

  /** The bucket holding the fault rule set (for the CLI, which edits it). */
  async faultRuleBucket(): Promise<Bucket<v1.FaultRuleSet>> {
    return this.bucket(faultBucket, v1.FaultRuleSet);
  }

  /** Opens (creating if needed) a KV bucket of protobuf values. */
  async bucket<T>(name: string, type: MessageType<T>, options: BucketOptions = {}): Promise<Bucket<T>> {
    return Bucket.open(this.jetstream(options.timeoutMs), this.subjects.bucket(name), type, options);
  }

  /** A JetStream client whose requests (KV reads and writes) give up after `timeoutMs` when given. */
  private jetstream(timeoutMs?: number): JetStreamClient {
    return this.nc.jetstream(timeoutMs ? { timeout: timeoutMs } : {});
  }

  /** Waits until everything published so far has reached the server. */
  async flush(): Promise<void> {
    this.outbox.drain();
    await this.nc.flush();
  }

  /** True once close() has run or the connection was lost for good. */
  isClosed(): boolean {
    return this.nc.isClosed();
  }

  /** Stops the services (answering nothing new), then drains the connection. */
  async close(): Promise<void> {
    this.outbox.drain();
    await Promise.allSettled(this.services.map((s) => s.stop()));
    this.outbox.drain();
    if (!this.nc.isClosed()) await this.nc.drain();
  }
}

function requireScope(method: RpcMethod<unknown, unknown>, scopeId: string | undefined): string {
  // Calling a scoped method without naming the scope is a bug, not bad input.
  assert(scopeId !== undefined, `${method.rpc} is ${method.scope}-scoped and needs a scope id`);
  return scopeId;
}

/** Turns a reply carrying the standard service error headers into a SimdcError. */
function replyError(reply: Msg): SimdcError | null {
  const codeHeader = reply.headers?.get("Nats-Service-Error-Code");
  if (!codeHeader) return null;
  const description = reply.headers?.get("Nats-Service-Error") ?? "";
  const sep = description.indexOf(": ");
  const name = sep > 0 ? description.slice(0, sep) : "";
  if (isErrorCodeName(name)) return new SimdcError(name, description.slice(sep + 2));
  // A peer that is not simdc (or an older one) sent only the number.
  const byNumber = (Object.keys(errorCodes) as (keyof typeof errorCodes)[]).find(
    (k) => String(errorCodes[k]) === codeHeader,
  );
  return new SimdcError(byNumber ?? "INTERNAL", description || `error ${codeHeader}`);
}

function natsRequestError(err: NatsError, method: RpcMethod<unknown, unknown>, timeoutMs: number): SimdcError {
  if (err.code === NatsErrorCode.NoResponders) return unavailable(`nobody serves ${method.rpc}`, err);
  if (err.code === NatsErrorCode.Timeout) return unavailable(`${method.rpc} got no reply within ${timeoutMs} ms`, err);
  if (err.code === NatsErrorCode.PermissionsViolation) {
    return new SimdcError("PERMISSION_DENIED", `this role may not call ${method.rpc}: ${err.message}`, { cause: err });
  }
  return unavailable(`${method.rpc} failed: ${err.message}`, err);
}
