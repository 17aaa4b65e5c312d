// The underlay between host vswitches: one NATS subject a host and sending
// agent (<prefix>.dp.<agentId>.<hostId>.<senderAgentId>), one subscription
// an agent. Packets a vswitch sends to the same host in one turn of the
// event loop travel together as one message (a packet train), so a busy
// path costs one NATS message for many packets. Each train is sent as its
// source host, so fault rules on a host or between two hosts cut exactly
// its tunnels. NATS permissions let an agent publish only with its own id
// as the sender token, and a train is taken only when the host it claims
// to come from is one the receiver's tunnels say that agent runs: an agent
// cannot send in another agent's hosts' name.

import { Subjects, type Bus } from "@simdc/bus";
import type { Logger } from "@simdc/common";
import { packetWords } from "@simdc/vswitch";
import { simdc } from "@simdc/proto";
import type { HostDatapath } from "./datapath.js";
import { noPayload, type Payload } from "./packets.js";
import type { Tunnel } from "./section.js";

import v1 = simdc.v1;

/** Packets a train carries at most; more go in the next one. */
export const trainPacketsMax = 256;

/** Emptied trains kept for their paths' next packets, at most. */
const idleTrainsMax = 4_096;
/** Header bytes a packet takes in a train. */
const headerBytes = packetWords * 4;

/** A train being filled: its packets' columns, as the wire carries them. */
class PendingTrain {
  headers: Uint8Array;
  count = 0;
  readonly sizes: number[] = [];
  /** Payload columns, made when the first packet that carries one comes (zeros for the packets before it). */
  echoIds: number[] | null = null;
  echoSeqs: number[] | null = null;
  sentMs: number[] | null = null;
  flows: number[] | null = null;
  responseBytes: number[] | null = null;
  replies: boolean[] | null = null;

  constructor(
    readonly subject: string,
    readonly fromHost: string,
    readonly toHost: string,
    capacity: number,
  ) {
    this.headers = new Uint8Array(headerBytes * Math.min(capacity, 16));
  }

  /** Empties the train for its next packets (its message is encoded already). */
  reset(): void {
    this.count = 0;
    this.sizes.length = 0;
    this.echoIds = this.echoSeqs = this.sentMs = this.flows = this.responseBytes = null;
    this.replies = null;
  }

  push(headers: Uint32Array, payload: Payload, bytes: number): void {
    const at = this.count * headerBytes;
    if (at + headerBytes > this.headers.length) {
      const grown = new Uint8Array(this.headers.length * 2);
      grown.set(this.headers);
      this.headers = grown;
    }
    this.headers.set(new Uint8Array(headers.buffer, headers.byteOffset, headerBytes), at);
    this.sizes.push(bytes);
    if (payload.echoId !== undefined || payload.echoSeq !== undefined || payload.sentMs !== undefined) {
      (this.echoIds ??= this.column(0)).push(payload.echoId ?? 0);
      (this.echoSeqs ??= this.column(0)).push(payload.echoSeq ?? 0);
      (this.sentMs ??= this.column(0)).push(payload.sentMs ?? 0);
    } else if (this.echoIds) {
      this.echoIds.push(0);
      this.echoSeqs!.push(0);
      this.sentMs!.push(0);
    }
    if (payload.flow !== undefined || this.flows) (this.flows ??= this.column(0)).push(payload.flow ?? 0);
    if (payload.responseBytes !== undefined || this.responseBytes) (this.responseBytes ??= this.column(0)).push(payload.responseBytes ?? 0);
    if (payload.reply !== undefined || this.replies) (this.replies ??= this.column(false)).push(payload.reply ?? false);
    this.count += 1;
  }

  private column<T>(empty: T): T[] {
    return new Array<T>(this.count).fill(empty);
  }

  message(): v1.IUnderlayTrain {
    return {
      fromHost: this.fromHost,
      toHost: this.toHost,
      headers: this.headers.subarray(0, this.count * headerBytes),
      sizes: this.sizes,
      ...(this.echoIds ? { echoIds: this.echoIds, echoSeqs: this.echoSeqs, sentMs: this.sentMs } : {}),
      ...(this.flows ? { flows: this.flows } : {}),
      ...(this.responseBytes ? { responseBytes: this.responseBytes } : {}),
      ...(this.replies ? { replies: this.replies } : {}),
    };
  }
}

/** Whether a payload column is absent or has an entry for each of `count` packets. */
const fits = (column: unknown[], count: number): boolean => column.length === 0 || column.length === count;

export class Underlay {
  /** Trains being filled, by the tunnel they go by (each host's section has its own tunnel objects, one a peer). */
  private readonly pending = new Map<Tunnel, PendingTrain>();
  /**
   * Trains sent and emptied, by path, for the path's next packets: making a
   * train (its buffer, its subject) cost more than a packet's whole hop when
   * each packet went alone. The oldest go first past the limit.
   */
  private readonly idle = new Map<Tunnel, PendingTrain>();
  private flushing = false;
  private subscription: ReturnType<Bus["subscribe"]> | null = null;
  trainsSent = 0;
  packetsSent = 0;
  trainsRefused = 0;

  constructor(
    private readonly bus: Bus,
    private readonly agentId: string,
    private readonly datapathOf: (hostId: string) => HostDatapath | undefined,
    private readonly logger: Logger,
    /** Packets a message at most (1: every packet its own message, as the benchmark's unbatched case). */
    private readonly trainMax = trainPacketsMax,
  ) {}

  start(): void {
    const { subjects } = this.bus;
    const subject = subjects.underlay(this.agentId, "*", "*");
    this.subscription = this.bus.subscribe(subject, v1.UnderlayTrain, (train, at) => this.receive(train, Subjects.token(at, subjects.underlayHostToken), Subjects.token(at, subjects.underlaySenderToken)), {
      owner: (at) => Subjects.token(at, subjects.underlayHostToken),
    });
  }

  stop(): void {
    this.subscription?.unsubscribe();
    this.subscription = null;
  }

  /** Queues a packet for `tunnel`'s host; the queue goes out once this turn of the event loop is over. */
  send(fromHost: string, tunnel: Tunnel, headers: Uint32Array, payload: Payload, bytes: number): void {
    let train = this.pending.get(tunnel);
    if (!train) {
      // A tunnel object stands for one path as one section names it (a peer that moves to another agent comes in a new section, with a new object).
      train = this.idle.get(tunnel);
      if (train) this.idle.delete(tunnel);
      else train = new PendingTrain(this.bus.subjects.underlay(tunnel.agentId, tunnel.hostId, this.agentId), fromHost, tunnel.hostId, this.trainMax);
      this.pending.set(tunnel, train);
    }
    // The words are copied into the train now: the verdict's may be reused once this returns.
    train.push(headers, payload, bytes);
    if (train.count >= this.trainMax) this.sendTrain(tunnel, train);
    if (!this.flushing) {
      this.flushing = true;
      queueMicrotask(() => this.flush());
    }
  }

  private flush(): void {
    this.flushing = false;
    for (const [key, train] of this.pending) this.sendTrain(key, train);
  }

  private sendTrain(key: Tunnel, train: PendingTrain): void {
    this.pending.delete(key);
    if (train.count === 0) return;
    this.trainsSent += 1;
    this.packetsSent += train.count;
    // Encoded here and now: the train is empty for its path's next packets once this returns.
    this.bus.publish(train.subject, v1.UnderlayTrain, train.message(), train.fromHost);
    train.reset();
    if (this.idle.size >= idleTrainsMax) this.idle.delete(this.idle.keys().next().value!);
    this.idle.set(key, train);
  }

  /**
   * A train for one of this agent's hosts; one addressed elsewhere, to a
   * host not here, or from a host its sending agent does not run, is refused.
   */
  private receive(train: v1.UnderlayTrain, hostId: string, senderAgentId: string): void {
    const datapath = this.datapathOf(hostId);
    if (!datapath || train.toHost !== hostId) {
      this.trainsRefused += 1;
      this.logger.debug({ hostId, toHost: train.toHost, fromHost: train.fromHost }, "underlay train refused: not for a host here");
      return;
    }
    const count = train.sizes.length;
    if (datapath.tunnelAgentOf(train.fromHost) !== senderAgentId) {
      this.trainsRefused += 1;
      // Counted where the host's other refused packets are (dump-ports).
      datapath.underlayRefused += count;
      this.logger.warn({ hostId, fromHost: train.fromHost, senderAgentId }, "underlay train refused: its sender does not run the host it claims to come from");
      return;
    }
    const columns = [train.echoIds, train.echoSeqs, train.sentMs, train.flows, train.responseBytes, train.replies];
    if (train.headers.length !== count * headerBytes || !columns.every((c) => fits(c, count))) {
      this.trainsRefused += 1;
      datapath.underlayRefused += count;
      this.logger.debug({ hostId, fromHost: train.fromHost, packets: count }, "underlay train refused: its columns do not agree");
      return;
    }
    const echoed = train.echoIds.length > 0;
    for (let i = 0; i < count; i++) {
      const flow = train.flows[i];
      const responseBytes = train.responseBytes[i];
      // Flow 0 is no flow: flows are numbered from 1 at their sender.
      const payload: Payload =
        echoed || flow || responseBytes || train.replies[i]
          ? {
              echoId: train.echoIds[i] ?? 0,
              echoSeq: train.echoSeqs[i] ?? 0,
              sentMs: train.sentMs[i] ?? 0,
              ...(flow ? { flow } : {}),
              ...(responseBytes ? { responseBytes } : {}),
              ...(train.replies[i] ? { reply: true } : {}),
            }
          : noPayload;
      datapath.fromUnderlay(train.fromHost, train.headers.subarray(i * headerBytes, (i + 1) * headerBytes), payload, train.sizes[i]!);
    }
  }
}
