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
import { simdc } from "@simdc/proto";
import type { HostDatapath } from "./datapath.js";
import type { Payload } from "./packets.js";
import type { Tunnel } from "./section.js";

import v1 = simdc.v1;

/** Packets a train carries at most; more go in the next one. */
export const trainPacketsMax = 256;

interface PendingTrain {
  subject: string;
  fromHost: string;
  toHost: string;
  packets: v1.IUnderlayPacket[];
}

export class Underlay {
  private readonly pending = new Map<string, PendingTrain>();
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
    const key = `${fromHost}>${tunnel.hostId}`;
    let train = this.pending.get(key);
    if (!train) {
      train = { subject: this.bus.subjects.underlay(tunnel.agentId, tunnel.hostId, this.agentId), fromHost, toHost: tunnel.hostId, packets: [] };
      this.pending.set(key, train);
    }
    const carried =
      payload.echoId === undefined && payload.flow === undefined
        ? null
        : // Absent fields stay off the wire: most packets are datagrams, which carry neither.
          { echoId: payload.echoId ?? 0, echoSeq: payload.echoSeq ?? 0, sentMs: payload.sentMs ?? 0, flow: payload.flow ?? 0, responseBytes: payload.responseBytes, reply: payload.reply };
    // The words are the verdict's, never changed once made: the train refers to them until it is encoded.
    train.packets.push({ headers: new Uint8Array(headers.buffer, headers.byteOffset, headers.byteLength), size: bytes, payload: carried });
    if (train.packets.length >= this.trainMax) this.sendTrain(key, train);
    if (!this.flushing) {
      this.flushing = true;
      queueMicrotask(() => this.flush());
    }
  }

  private flush(): void {
    this.flushing = false;
    for (const [key, train] of this.pending) this.sendTrain(key, train);
  }

  private sendTrain(key: string, train: PendingTrain): void {
    this.pending.delete(key);
    if (train.packets.length === 0) return;
    this.trainsSent += 1;
    this.packetsSent += train.packets.length;
    this.bus.publish(train.subject, v1.UnderlayTrain, { fromHost: train.fromHost, toHost: train.toHost, packets: train.packets }, train.fromHost);
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
    if (datapath.tunnelAgentOf(train.fromHost) !== senderAgentId) {
      this.trainsRefused += 1;
      // Counted where the host's other refused packets are (dump-ports).
      datapath.underlayRefused += train.packets.length;
      this.logger.warn({ hostId, fromHost: train.fromHost, senderAgentId }, "underlay train refused: its sender does not run the host it claims to come from");
      return;
    }
    for (const packet of train.packets) {
      const carried = packet.payload;
      // Flow 0 is no flow: flows are numbered from 1 at their sender.
      const payload: Payload = carried
        ? {
            echoId: carried.echoId ?? 0,
            echoSeq: carried.echoSeq ?? 0,
            sentMs: carried.sentMs ?? 0,
            ...(carried.flow ? { flow: carried.flow } : {}),
            ...(carried.responseBytes ? { responseBytes: carried.responseBytes } : {}),
            ...(carried.reply ? { reply: true } : {}),
          }
        : {};
      datapath.fromUnderlay(train.fromHost, packet.headers ?? new Uint8Array(0), payload, packet.size ?? 0);
    }
  }
}
