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
import { Receipt, SendWindow } from "./flow-control.js";

import v1 = simdc.v1;

/** Packets a train carries at most; more go in the next one. */
export const trainPacketsMax = 256;

/** Trains kept for their paths' next packets, at most (a train is made once a path, not once a turn); and agents' flow-control state. */
const trainsKeptMax = 4_096;
const agentsKeptMax = 4_096;
/** Header bytes a packet takes in a train. */
const headerBytes = packetWords * 4;
/** A packet's record in a train: its header words, then what agent.proto's UnderlayTrain.records lists. */
export const recordBytes = headerBytes + 32;
const SIZE = headerBytes;
const FLAGS = headerBytes + 4;
const ECHO_ID = headerBytes + 8;
const ECHO_SEQ = headerBytes + 12;
const FLOW = headerBytes + 16;
const RESPONSE_BYTES = headerBytes + 20;
const SENT_MS = headerBytes + 24;
const CARRIES_ECHO = 1;
const REPLY = 2;

/** A train being filled: its packets' records, as the wire carries them (exported for its encoding's test). */
export class PendingTrain {
  bytes: Uint8Array;
  view: DataView;
  count = 0;
  /** In this turn's list of trains to send. */
  queued = false;
  private readonly envelope: Uint8Array;

  constructor(
    readonly subject: string,
    readonly fromHost: string,
    readonly toHost: string,
    /** The flow control towards the agent that runs toHost. */
    readonly window: SendWindow,
    capacity: number,
  ) {
    this.bytes = new Uint8Array(recordBytes * Math.min(capacity, 16));
    this.view = new DataView(this.bytes.buffer);
    this.envelope = envelopeOf(fromHost, toHost);
  }

  push(headers: Uint32Array, payload: Payload, size: number): void {
    const at = this.count * recordBytes;
    if (at + recordBytes > this.bytes.length) {
      const grown = new Uint8Array(this.bytes.length * 2);
      grown.set(this.bytes);
      this.bytes = grown;
      this.view = new DataView(grown.buffer);
    }
    const view = this.view;
    for (let i = 0; i < packetWords; i++) view.setUint32(at + 4 * i, headers[i]!, true);
    const echoed = payload.echoId !== undefined || payload.echoSeq !== undefined || payload.sentMs !== undefined;
    view.setUint32(at + SIZE, size, true);
    view.setUint32(at + FLAGS, (echoed ? CARRIES_ECHO : 0) | (payload.reply ? REPLY : 0), true);
    view.setUint32(at + ECHO_ID, payload.echoId ?? 0, true);
    view.setUint32(at + ECHO_SEQ, payload.echoSeq ?? 0, true);
    view.setUint32(at + FLOW, payload.flow ?? 0, true);
    view.setUint32(at + RESPONSE_BYTES, payload.responseBytes ?? 0, true);
    view.setFloat64(at + SENT_MS, payload.sentMs ?? 0, true);
    this.count += 1;
  }

  /**
   * The train as it leaves, numbered for the flow control, encoded as
   * agent.proto's UnderlayTrain (fields in the generated encoder's order,
   * byte for byte the same: train-encoding.test.ts holds it to that). Built
   * here rather than by protobufjs's writer, which cost more than the rest
   * of a one-packet train's hop on the sending side.
   */
  encode(): Uint8Array {
    const seq = this.window.depart();
    const wantsCredit = this.window.wantsCredit;
    const records = this.count * recordBytes;
    // From Node's pool of small buffers: a typed array with a backing store of its own cost more than the rest of this.
    const out = Buffer.allocUnsafe(this.envelope.length + 1 + varintBytes(records) + records + 1 + varintBytes(seq) + (wantsCredit ? 2 : 0));
    out.set(this.envelope);
    let at = this.envelope.length;
    out[at++] = RECORDS_TAG;
    at = writeVarint(out, at, records);
    out.set(this.bytes.subarray(0, records), at);
    at += records;
    out[at++] = SEQ_TAG;
    at = writeVarint(out, at, seq);
    if (wantsCredit) {
      out[at++] = WANTS_CREDIT_TAG;
      out[at] = 1;
    }
    return out;
  }
}

/** Tags (field number << 3 | wire type) of UnderlayTrain's fields. */
const FROM_HOST_TAG = (1 << 3) | 2;
const TO_HOST_TAG = (2 << 3) | 2;
const RECORDS_TAG = (12 << 3) | 2;
const SEQ_TAG = (13 << 3) | 0;
const WANTS_CREDIT_TAG = (14 << 3) | 0;

export function varintBytes(n: number): number {
  let bytes = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 0x80);
    bytes += 1;
  }
  return bytes;
}

/** Writes `n` (below 2^32) as a protobuf varint at `at`. @returns where the next byte goes. */
export function writeVarint(out: Uint8Array, at: number, n: number): number {
  while (n >= 0x80) {
    out[at++] = (n & 0x7f) | 0x80;
    n >>>= 7;
  }
  out[at++] = n;
  return at;
}

/** A train's first two fields, the same for every train of its path. */
function envelopeOf(fromHost: string, toHost: string): Uint8Array {
  const utf8 = new TextEncoder();
  const from = utf8.encode(fromHost);
  const to = utf8.encode(toHost);
  const out = new Uint8Array(2 + varintBytes(from.length) + from.length + varintBytes(to.length) + to.length);
  out[0] = FROM_HOST_TAG;
  let at = writeVarint(out, 1, from.length);
  out.set(from, at);
  at += from.length;
  out[at++] = TO_HOST_TAG;
  at = writeVarint(out, at, to.length);
  out.set(to, at);
  return out;
}

/** What a packet's record carries beyond its headers, as the guests see it (undefined: a time that is no time). */
function payloadOf(view: DataView, at: number): Payload | undefined {
  const flags = view.getUint32(at + FLAGS, true);
  const flow = view.getUint32(at + FLOW, true);
  const responseBytes = view.getUint32(at + RESPONSE_BYTES, true);
  if (!flags && !flow && !responseBytes) return noPayload;
  const sentMs = view.getFloat64(at + SENT_MS, true);
  if (!Number.isFinite(sentMs)) return undefined;
  // One shape for every packet, made in one step (optional fields spread in cost an object each).
  return {
    echoId: view.getUint32(at + ECHO_ID, true),
    echoSeq: view.getUint32(at + ECHO_SEQ, true),
    sentMs,
    // Flow 0 is no flow: flows are numbered from 1 at their sender.
    flow: flow || undefined,
    responseBytes: responseBytes || undefined,
    reply: flags & REPLY ? true : undefined,
  };
}

export class Underlay {
  /**
   * Each path's train, by the tunnel it goes by (each host's section has its
   * own tunnel objects, one a peer), kept once sent for the path's next
   * packets: making a train (its buffer, its subject) cost more than a
   * packet's whole hop when each packet went alone. The oldest go first
   * past the limit.
   */
  private readonly trains = new Map<Tunnel, PendingTrain>();
  /** Trains with packets to send at the end of this turn. */
  private readonly loaded: PendingTrain[] = [];
  /** Flow control: towards each receiving agent, and what each sending agent's trains took here. */
  private readonly windows = new Map<string, SendWindow>();
  private readonly receipts = new Map<string, Receipt>();
  private readonly creditsDue: Receipt[] = [];
  private subscriptions: ReturnType<Bus["subscribe"]>[] = [];
  /** The records of the train being taken. */
  private takenBytes = new Uint8Array(recordBytes * 16);
  private taken = new DataView(this.takenBytes.buffer);
  trainsSent = 0;
  packetsSent = 0;
  trainsRefused = 0;
  /** Packets not sent for want of credit from their receiving agent. */
  packetsThrottled = 0;

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
    this.subscriptions = [
      this.bus.subscribe(subjects.underlay(this.agentId, "*", "*"), v1.UnderlayTrain, (train, at) => {
        // The subscription's last two tokens are the host and the sending agent.
        const sender = at.lastIndexOf(".");
        const host = at.lastIndexOf(".", sender - 1);
        this.receive(train, at.slice(host + 1, sender), at.slice(sender + 1));
      }, {
        owner: (at) => Subjects.token(at, subjects.underlayHostToken),
      }),
      this.bus.subscribe(subjects.underlayCredit(this.agentId, "*"), v1.UnderlayCredit, (credit, at) => this.windows.get(Subjects.token(at, subjects.underlayCreditorToken))?.credit(credit.seq)),
    ];
  }

  stop(): void {
    for (const s of this.subscriptions) s.unsubscribe();
    this.subscriptions = [];
  }

  /**
   * Queues a packet for `tunnel`'s host; the queue goes out once this turn
   * of the event loop is over. @returns false when the packet was dropped
   * for want of credit from the agent that runs the host.
   */
  send(fromHost: string, tunnel: Tunnel, headers: Uint32Array, payload: Payload, bytes: number): boolean {
    let train = this.trains.get(tunnel);
    if (!train) {
      // A tunnel object stands for one path as one section names it (a peer that moves to another agent comes in a new section, with a new object).
      train = new PendingTrain(this.bus.subjects.underlay(tunnel.agentId, tunnel.hostId, this.agentId), fromHost, tunnel.hostId, this.windowTo(tunnel.agentId), this.trainMax);
      if (this.trains.size >= trainsKeptMax) this.forgetOldestTrain();
      this.trains.set(tunnel, train);
    }
    if (!train.window.admit()) {
      this.packetsThrottled += 1;
      return false;
    }
    // The words are copied into the train now: the verdict's may be reused once this returns.
    train.push(headers, payload, bytes);
    if (train.count >= this.trainMax) this.sendTrain(train);
    else if (!train.queued) {
      train.queued = true;
      if (this.loaded.push(train) === 1) queueMicrotask(() => this.flush());
    }
    return true;
  }

  private windowTo(agentId: string): SendWindow {
    let window = this.windows.get(agentId);
    if (!window) {
      if (this.windows.size >= agentsKeptMax) this.windows.delete(this.windows.keys().next().value!);
      this.windows.set(agentId, (window = new SendWindow(() => performance.now())));
    }
    return window;
  }

  private forgetOldestTrain(): void {
    for (const [tunnel, train] of this.trains) {
      if (train.queued) continue;
      this.trains.delete(tunnel);
      return;
    }
  }

  private flush(): void {
    for (const train of this.loaded) {
      train.queued = false;
      this.sendTrain(train);
    }
    this.loaded.length = 0;
  }

  private sendTrain(train: PendingTrain): void {
    if (train.count === 0) return;
    this.trainsSent += 1;
    this.packetsSent += train.count;
    // Encoded here and now: the train is empty for its path's next packets once this returns.
    this.bus.publishEncoded(train.subject, v1.UnderlayTrain, train.encode(), train.fromHost);
    train.count = 0;
  }

  /**
   * A train for one of this agent's hosts; one addressed elsewhere, to a
   * host not here, or from a host its sending agent does not run, is refused.
   */
  private receive(train: v1.UnderlayTrain, hostId: string, senderAgentId: string): void {
    // Taken or refused, the train is off the wire: its sender may send more.
    this.tookFrom(senderAgentId, train);
    const datapath = this.datapathOf(hostId);
    if (!datapath || train.toHost !== hostId) {
      this.trainsRefused += 1;
      this.logger.debug({ hostId, toHost: train.toHost, fromHost: train.fromHost }, "underlay train refused: not for a host here");
      return;
    }
    const records = train.records;
    const count = Math.floor(records.length / recordBytes);
    if (datapath.tunnelAgentOf(train.fromHost) !== senderAgentId) {
      this.trainsRefused += 1;
      // Counted where the host's other refused packets are (dump-ports).
      datapath.underlayRefused += count;
      this.logger.warn({ hostId, fromHost: train.fromHost, senderAgentId }, "underlay train refused: its sender does not run the host it claims to come from");
      return;
    }
    if (records.length !== count * recordBytes) {
      this.trainsRefused += 1;
      datapath.underlayRefused += count + 1;
      this.logger.debug({ hostId, fromHost: train.fromHost, bytes: records.length }, "underlay train refused: its records are cut short");
      return;
    }
    // Copied once into this agent's own buffer: reads through one long-lived view stay cheap (a view a train cost more than its packets' reads).
    if (records.length > this.takenBytes.length) {
      this.takenBytes = new Uint8Array(2 ** Math.ceil(Math.log2(records.length)));
      this.taken = new DataView(this.takenBytes.buffer);
    }
    this.takenBytes.set(records);
    const view = this.taken;
    for (let at = 0; at < records.length; at += recordBytes) {
      const payload = payloadOf(view, at);
      if (payload) datapath.fromUnderlay(train.fromHost, view, at, payload, view.getUint32(at + SIZE, true));
      else datapath.underlayRefused += 1;
    }
  }

  private tookFrom(senderAgentId: string, train: v1.UnderlayTrain): void {
    let receipt = this.receipts.get(senderAgentId);
    if (!receipt) {
      let subject: string;
      try {
        subject = this.bus.subjects.underlayCredit(senderAgentId, this.agentId);
      } catch {
        // No agent has such an id: its train is refused below (no tunnel names it), and it gets no credit.
        return;
      }
      if (this.receipts.size >= agentsKeptMax) this.receipts.delete(this.receipts.keys().next().value!);
      this.receipts.set(senderAgentId, (receipt = new Receipt(senderAgentId, subject)));
    }
    if (!receipt.took(train.seq, Math.ceil(train.records.length / recordBytes), train.wantsCredit)) return;
    if (this.creditsDue.push(receipt) === 1) queueMicrotask(() => this.sendCredits());
  }

  private sendCredits(): void {
    for (const receipt of this.creditsDue) {
      this.bus.publish(receipt.subject, v1.UnderlayCredit, { seq: receipt.seq });
      receipt.credited();
    }
    this.creditsDue.length = 0;
  }
}
