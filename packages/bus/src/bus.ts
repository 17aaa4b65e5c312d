// The connection every simdc process holds to NATS, and the typed operations
// over it: protobuf request/reply served with the NATS services framework,
// events, and KV buckets. Nothing outside this package touches the NATS
// client; nothing here knows what a VM or a volume is.

import {
  connect,
  type NatsConnection,
  type Msg,
  type ServiceMsg,
  type Service,
  type Subscription,
  type NatsError,
  type JetStreamClient,
  ErrorCode as NatsErrorCode,
} from "nats";
import { SimdcError, isErrorCodeName, toSimdcError, unavailable, type Logger, errorCodes } from "@simdc/common";
import { decodeMessage, encodeMessage, typeName, type Input, type MessageType } from "./codec.js";
import type { RpcMethod } from "./contract.js";
import { Subjects } from "./subjects.js";
import { Bucket, type BucketOptions } from "./kv.js";

export interface BusOptions {
  /** NATS URLs, "nats://127.0.0.1:4222" or several, comma-separated. */
  servers: string;
  /** Subject prefix; several datacenters may share one NATS. */
  prefix?: string;
  /** Datacenter name, put into every service's name and metadata. */
  dc?: string;
  /** This process's identity, used as the NATS connection name. */
  processId: string;
  logger: Logger;
  /**
   * How often the client pings the server. Short, so a cut connection is
   * noticed in seconds rather than the client's default minutes.
   */
  pingIntervalMs?: number;
  /** Give up connecting at start after this long (reconnects afterwards never give up). */
  connectTimeoutMs?: number;
}

export interface CallOptions {
  /** The host or SAN node id, for methods not served by the controller. */
  scopeId?: string;
  timeoutMs?: number;
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

export interface ServeOptions {
  /** Role of the serving process: controller, host, san-node, supervisor. */
  role: string;
  /** Host or node id, for host- and san-scoped methods; also goes into metadata. */
  scopeId?: string;
  description: string;
}

export class Bus {
  readonly subjects: Subjects;
  readonly dc: string;
  readonly processId: string;
  readonly logger: Logger;
  private readonly services: Service[] = [];

  private constructor(
    private readonly nc: NatsConnection,
    options: BusOptions,
  ) {
    this.subjects = new Subjects(options.prefix ?? "simdc");
    this.dc = options.dc ?? "dc1";
    this.processId = options.processId;
    this.logger = options.logger;
  }

  /**
   * Connects, retrying until connectTimeoutMs, then reconnecting forever.
   * @throws SimdcError UNAVAILABLE when no server answers in time.
   */
  static async connect(options: BusOptions): Promise<Bus> {
    const deadline = Date.now() + (options.connectTimeoutMs ?? 30_000);
    let lastError: unknown;
    while (Date.now() < deadline) {
      try {
        const nc = await connect({
          servers: options.servers.split(",").map((s) => s.trim()),
          name: options.processId,
          maxReconnectAttempts: -1,
          reconnectTimeWait: 250,
          pingInterval: options.pingIntervalMs ?? 2_000,
          maxPingOut: 2,
          timeout: 2_000,
        });
        const bus = new Bus(nc, options);
        bus.watchStatus();
        return bus;
      } catch (err) {
        lastError = err;
        await new Promise((r) => setTimeout(r, 250));
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
      }
    })();
  }

  /** The subject where `method` is served (for `scopeId`, when host- or san-scoped). */
  subjectOf(method: RpcMethod<unknown, unknown>, scopeId?: string): string {
    switch (method.scope) {
      case "api":
        return this.subjects.api(method.service, method.method);
      case "host":
        return this.subjects.host(requireScope(method, scopeId), method.method);
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
      reply = await this.nc.request(subject, encodeMessage(method.request, request), { timeout: timeoutMs });
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
    const service = await this.nc.services.add({
      name: `${this.dc}-${options.role}`,
      version: "0.1.0",
      description: options.description,
      metadata,
    });
    for (const ep of endpoints) {
      const subject = this.subjectOf(ep.method, options.scopeId);
      service.addEndpoint(ep.method.method, {
        subject,
        metadata: { rpc: ep.method.rpc, request: typeName(ep.method.request), response: typeName(ep.method.response) },
        handler: (err, msg) => {
          if (err) {
            this.logger.error({ err, subject }, "service endpoint failed");
            return;
          }
          this.handleRequest(ep, msg);
        },
      });
    }
    this.services.push(service);
    return service;
  }

  private handleRequest(ep: Endpoint<any, any>, msg: ServiceMsg): void {
    let settled: Promise<unknown>;
    try {
      const request = decodeMessage(ep.method.request, msg.data);
      settled = Promise.resolve(ep.handle(request, msg));
    } catch (err) {
      settled = Promise.reject(err);
    }
    settled.then(
      (response) => {
        msg.respond(encodeMessage(ep.method.response, response as Input<unknown>));
      },
      (err: unknown) => {
        const failure = toSimdcError(err);
        if (failure.code === "INTERNAL") {
          this.logger.error({ err, rpc: ep.method.rpc }, "request failed with an internal error");
        } else {
          this.logger.debug({ rpc: ep.method.rpc, code: failure.code, reason: failure.message }, "request refused");
        }
        msg.respondError(failure.httpStatus, failure.toString());
      },
    );
  }

  /** Publishes one protobuf message (an event or a heartbeat). */
  publish<T>(subject: string, type: MessageType<T>, message: Input<T>): void {
    this.nc.publish(subject, encodeMessage(type, message));
  }

  /**
   * Subscribes to typed messages. A message that does not decode is logged and
   * dropped; a handler that throws or rejects is logged; neither ends the process.
   */
  subscribe<T>(
    subject: string,
    type: MessageType<T>,
    handler: (message: T, subject: string) => void | Promise<void>,
    options: { queue?: string } = {},
  ): Subscription {
    return this.nc.subscribe(subject, {
      ...(options.queue ? { queue: options.queue } : {}),
      callback: (err, msg) => {
        if (err) {
          this.logger.error({ err, subject }, "subscription failed");
          return;
        }
        let message: T;
        try {
          message = decodeMessage(type, msg.data);
        } catch (decodeErr) {
          this.logger.warn({ subject: msg.subject, err: decodeErr }, "dropped a message that does not decode");
          return;
        }
        try {
          const done = handler(message, msg.subject);
          if (done) done.catch((handlerErr: unknown) => this.logHandlerError(msg.subject, handlerErr));
        } catch (handlerErr) {
          this.logHandlerError(msg.subject, handlerErr);
        }
      },
    });
  }

  private logHandlerError(subject: string, err: unknown): void {
    this.logger.error({ subject, err }, "message handler failed");
  }

  /** Opens (creating if needed) a KV bucket of protobuf values. */
  async bucket<T>(name: string, type: MessageType<T>, options: BucketOptions = {}): Promise<Bucket<T>> {
    return Bucket.open(this.jetstream(), this.subjects.bucket(name), type, options);
  }

  private jetstream(): JetStreamClient {
    return this.nc.jetstream();
  }

  /** Round-trip time to the server, for health reports. */
  async rtt(): Promise<number> {
    return this.nc.rtt();
  }

  /** Waits until everything published so far has reached the server. */
  async flush(): Promise<void> {
    await this.nc.flush();
  }

  /** True once close() has run or the connection was lost for good. */
  isClosed(): boolean {
    return this.nc.isClosed();
  }

  /** Stops the services (answering nothing new), then drains the connection. */
  async close(): Promise<void> {
    await Promise.allSettled(this.services.map((s) => s.stop()));
    if (!this.nc.isClosed()) await this.nc.drain();
  }
}

function requireScope(method: RpcMethod<unknown, unknown>, scopeId: string | undefined): string {
  if (scopeId === undefined) throw new Error(`${method.rpc} is ${method.scope}-scoped and needs a scope id`);
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
  return unavailable(`${method.rpc} failed: ${err.message}`, err);
}
