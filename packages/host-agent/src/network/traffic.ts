// Traffic the guests of one host send and receive: constant-rate UDP flows,
// paced on the simulated clock (a tick every 10 ms sends what the rate owes,
// so a fast flow goes out in bursts that the underlay carries as trains);
// TCP-like request/response flows (netperf's TCP_RR: one request out at a
// time, the next when its response is back or after a timeout, at most the
// rate a second), with their round trips; and, on the receiving side, what
// arrived of each flow: count, bytes and one-way latency. Pure: the clock is
// injected, packets go through the guest.

import type { Clock, Timer } from "@simdc/common";
import { simdc } from "@simdc/proto";
import { formatIp, type PacketWords } from "@simdc/vswitch";
import type { GuestNic } from "./guest.js";
import { PROTO_TCP, PROTO_UDP, type Payload } from "./packets.js";

import v1 = simdc.v1;

export const trafficTickMs = 10;
export const ratePpsMax = 100_000;
/** A request/response flow gives a request up after this long without its response (simulated ms). */
export const requestTimeoutMs = 1_000;
/** Each flow sends from its own port, so conntrack (security groups, NAT) tells flows apart. */
const sourcePortBase = 40_000;
const sourcePorts = 25_000;

export interface TrafficFlowSpec {
  vmId: string;
  guest: GuestNic;
  target: bigint;
  kind: v1.TrafficKind;
  ratePps: number;
  bytes: number;
  /** TCP_RR: the response's size. */
  responseBytes: number;
  dstPort: number;
  durationMs: number;
}

interface TrafficFlow extends TrafficFlowSpec {
  id: number;
  sent: number;
  credit: number;
  /** When the flow was last paced: credit follows the simulated time that passed, however late a tick runs. */
  pacedMs: number;
  startedMs: number;
  stoppedMs: number;
  timer: Timer | null;
  /** The packets' header words, once the next hop's MAC is known (ARP). */
  headers: PacketWords | undefined;
  resolving: boolean;
  /** TCP_RR: the request out (its sequence, 0: none) and when it left; answered and given-up requests; round trips. */
  outstanding: number;
  outstandingSentMs: number;
  transactions: number;
  timeouts: number;
  rttSumMs: number;
  rttMaxMs: number;
  /** TCP_RR: a timer for when the rate allows the next request. */
  wake: Timer | null;
}

interface Received {
  vmId: string;
  sourceIp: bigint;
  flowId: number;
  received: number;
  bytes: number;
  latencySumMs: number;
  latencyMaxMs: number;
  firstMs: number;
  lastMs: number;
}

/** When a flow with a duration ends (never for one without). */
function endOf(flow: TrafficFlowSpec & { startedMs: number }): number {
  return flow.durationMs ? flow.startedMs + flow.durationMs : Infinity;
}

export class Traffic {
  private readonly flows = new Map<number, TrafficFlow>();
  /** What arrived, by receiving VM, then by source address and flow (one number: no string built a packet). */
  private readonly received = new Map<string, Map<number, Received>>();
  private nextId = 1;

  constructor(private readonly clock: Clock) {}

  start(spec: TrafficFlowSpec): number {
    const id = this.nextId++;
    const now = this.clock.nowMs();
    const flow: TrafficFlow = {
      ...spec,
      id,
      sent: 0,
      credit: 0,
      pacedMs: now,
      startedMs: now,
      stoppedMs: 0,
      timer: null,
      headers: undefined,
      resolving: false,
      outstanding: 0,
      outstandingSentMs: 0,
      transactions: 0,
      timeouts: 0,
      rttSumMs: 0,
      rttMaxMs: 0,
      wake: null,
    };
    flow.timer = this.clock.every(trafficTickMs, () => this.tick(flow));
    this.flows.set(id, flow);
    return id;
  }

  /** Stops one flow (its counts are kept for stats). @returns false when there is no such flow. */
  stop(id: number): boolean {
    const flow = this.flows.get(id);
    if (!flow) return false;
    this.end(flow);
    return true;
  }

  /** Stops every flow a VM sends (it stopped or went away). */
  stopVm(vmId: string): void {
    for (const flow of this.flows.values()) if (flow.vmId === vmId) this.end(flow);
  }

  private end(flow: TrafficFlow): void {
    if (!flow.timer) return;
    flow.timer.cancel();
    flow.timer = null;
    flow.wake?.cancel();
    flow.wake = null;
    flow.stoppedMs = this.clock.nowMs();
  }

  private tick(flow: TrafficFlow): void {
    const now = this.clock.nowMs();
    // A flow with a duration sends what its rate owes up to its end, and stops.
    const endMs = endOf(flow);
    if (now >= endMs) this.end(flow);
    if (flow.guest.lease === "down") {
      // A NIC that is down owes nothing for the time it was down.
      flow.pacedMs = now;
      return;
    }
    if (flow.headers === undefined) {
      // ARP once, as a socket's first datagram does; the flow waits for the answer.
      if (!flow.resolving) {
        flow.resolving = true;
        void flow.guest.resolve(flow.target, 1_000).then((mac) => {
          flow.resolving = false;
          const proto = flow.kind === v1.TrafficKind.TRAFFIC_KIND_TCP_RR ? PROTO_TCP : PROTO_UDP;
          if (mac !== undefined) flow.headers = flow.guest.flowHeaders(mac, flow.target, proto, BigInt(sourcePortBase + (flow.id % sourcePorts)), BigInt(flow.dstPort));
        });
      }
      return;
    }
    this.pace(flow, Math.min(now, endMs));
    if (flow.kind === v1.TrafficKind.TRAFFIC_KIND_TCP_RR) {
      if (flow.outstanding && now - flow.outstandingSentMs >= requestTimeoutMs) {
        flow.timeouts += 1;
        flow.outstanding = 0;
      }
      this.request(flow, now);
      return;
    }
    while (flow.credit >= 1) {
      flow.credit -= 1;
      if (!flow.guest.sendWords(flow.headers, { flow: flow.id, echoSeq: flow.sent + 1, sentMs: now }, flow.bytes)) {
        // The host's underlay is full: the send fails, and the rest of this tick's datagrams are not sent (a paced sender does not catch up on them).
        flow.credit = 0;
        break;
      }
      flow.sent += 1;
    }
  }

  /** Credit follows the simulated time that passed (however late a tick runs), from when the target answered ARP. */
  private pace(flow: TrafficFlow, until: number): void {
    flow.credit += (flow.ratePps * Math.max(0, until - flow.pacedMs)) / 1_000;
    flow.pacedMs = Math.max(flow.pacedMs, until);
    // A closed loop builds no backlog: a request/response flow holds at most one request's credit while it waits.
    if (flow.kind === v1.TrafficKind.TRAFFIC_KIND_TCP_RR && flow.credit > 1) flow.credit = 1;
  }

  /**
   * Sends the next request of a request/response flow if none is out and the
   * rate allows one; when only the rate holds it back, at the moment it will
   * (a tick is too coarse for a fast path's transactions).
   */
  private request(flow: TrafficFlow, now: number): void {
    if (flow.outstanding || !flow.timer || !flow.headers) return;
    if (flow.credit < 1) {
      if (!flow.wake) {
        flow.wake = this.clock.after(((1 - flow.credit) * 1_000) / flow.ratePps, () => {
          flow.wake = null;
          const at = this.clock.nowMs();
          this.pace(flow, Math.min(at, endOf(flow)));
          this.request(flow, at);
        });
      }
      return;
    }
    flow.credit -= 1;
    flow.sent += 1;
    flow.outstanding = flow.sent;
    flow.outstandingSentMs = now;
    flow.guest.sendWords(flow.headers, { flow: flow.id, echoSeq: flow.sent, sentMs: now, responseBytes: flow.responseBytes }, flow.bytes);
  }

  /** A packet of a flow reached a guest of this host: a datagram or a request (counted), or a response to one of its own requests. */
  arrived(vmId: string, sourceIp: bigint, payload: Payload, bytes: number): void {
    if (payload.reply) return this.answered(vmId, payload);
    let byFlow = this.received.get(vmId);
    if (!byFlow) this.received.set(vmId, (byFlow = new Map()));
    const key = Number(sourceIp) * 2 ** 20 + ((payload.flow ?? 0) % 2 ** 20);
    let r = byFlow.get(key);
    const now = this.clock.nowMs();
    if (!r) byFlow.set(key, (r = { vmId, sourceIp, flowId: payload.flow ?? 0, received: 0, bytes: 0, latencySumMs: 0, latencyMaxMs: 0, firstMs: now, lastMs: now }));
    const latency = now - (payload.sentMs ?? now);
    r.received += 1;
    r.bytes += bytes;
    r.latencySumMs += latency;
    if (latency > r.latencyMaxMs) r.latencyMaxMs = latency;
    r.lastMs = now;
  }

  /** A response: the transaction is done if it answers the request out (a late one, given up already, is not counted), and the next may go. */
  private answered(vmId: string, payload: Payload): void {
    const flow = this.flows.get(payload.flow ?? 0);
    if (!flow || flow.vmId !== vmId || flow.kind !== v1.TrafficKind.TRAFFIC_KIND_TCP_RR || payload.echoSeq !== flow.outstanding || flow.outstanding === 0) return;
    const now = this.clock.nowMs();
    const rtt = now - flow.outstandingSentMs;
    flow.transactions += 1;
    flow.rttSumMs += rtt;
    if (rtt > flow.rttMaxMs) flow.rttMaxMs = rtt;
    flow.outstanding = 0;
    if (!flow.timer) return;
    this.pace(flow, Math.min(now, endOf(flow)));
    this.request(flow, now);
  }

  stats(): { sending: Record<string, unknown>[]; received: Record<string, unknown>[] } {
    return {
      sending: [...this.flows.values()].map((f) => ({
        flowId: f.id,
        vmId: f.vmId,
        sourceIp: formatIp(f.guest.ip),
        targetIp: formatIp(f.target),
        ratePps: f.ratePps,
        sizeBytes: f.bytes,
        sent: f.sent,
        running: f.timer !== null,
        startedMs: f.startedMs,
        stoppedMs: f.stoppedMs,
        kind: f.kind,
        transactions: f.transactions,
        timeouts: f.timeouts,
        rttAvgMs: f.transactions ? f.rttSumMs / f.transactions : 0,
        rttMaxMs: f.rttMaxMs,
        responseBytes: f.responseBytes,
      })),
      received: [...this.received.values()].flatMap((byFlow) => [...byFlow.values()]).map((r) => ({
        vmId: r.vmId,
        sourceIp: formatIp(r.sourceIp),
        flowId: r.flowId,
        received: r.received,
        bytes: r.bytes,
        latencyAvgMs: r.received ? r.latencySumMs / r.received : 0,
        latencyMaxMs: r.latencyMaxMs,
        firstMs: r.firstMs,
        lastMs: r.lastMs,
      })),
    };
  }

  /** Every flow stops (the host stops). */
  stopAll(): void {
    for (const flow of this.flows.values()) this.end(flow);
  }
}
