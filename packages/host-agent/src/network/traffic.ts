// Traffic the guests of one host send and receive: constant-rate UDP flows,
// paced on the simulated clock (a tick every 10 ms sends what the rate owes,
// so a fast flow goes out in bursts that the underlay carries as trains),
// and, on the receiving side, what arrived of each flow: count, bytes and
// one-way latency. Pure: the clock is injected, packets go through the guest.

import type { Clock, Timer } from "@simdc/common";
import { formatIp, type PacketWords } from "@simdc/vswitch";
import type { GuestNic } from "./guest.js";
import type { Payload } from "./packets.js";

export const trafficTickMs = 10;
export const ratePpsMax = 100_000;
const udpSourcePort = 40_000n;

export interface UdpFlowSpec {
  vmId: string;
  guest: GuestNic;
  target: bigint;
  ratePps: number;
  bytes: number;
  dstPort: number;
  durationMs: number;
}

interface UdpFlow extends UdpFlowSpec {
  id: number;
  sent: number;
  credit: number;
  /** When the flow was last paced: credit follows the simulated time that passed, however late a tick runs. */
  pacedMs: number;
  startedMs: number;
  stoppedMs: number;
  timer: Timer | null;
  /** The datagrams' header words, once the target's MAC is known (ARP). */
  headers: PacketWords | undefined;
  resolving: boolean;
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

export class Traffic {
  private readonly flows = new Map<number, UdpFlow>();
  /** What arrived, by receiving VM, then by source address and flow (one number: no string built a packet). */
  private readonly received = new Map<string, Map<number, Received>>();
  private nextId = 1;

  constructor(private readonly clock: Clock) {}

  start(spec: UdpFlowSpec): number {
    const id = this.nextId++;
    const flow: UdpFlow = { ...spec, id, sent: 0, credit: 0, pacedMs: this.clock.nowMs(), startedMs: this.clock.nowMs(), stoppedMs: 0, timer: null, headers: undefined, resolving: false };
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

  private end(flow: UdpFlow): void {
    if (!flow.timer) return;
    flow.timer.cancel();
    flow.timer = null;
    flow.stoppedMs = this.clock.nowMs();
  }

  private tick(flow: UdpFlow): void {
    const now = this.clock.nowMs();
    // A flow with a duration sends what its rate owes up to its end, and stops.
    const endMs = flow.durationMs ? flow.startedMs + flow.durationMs : Infinity;
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
          if (mac !== undefined) flow.headers = flow.guest.udpHeaders(mac, flow.target, udpSourcePort, BigInt(flow.dstPort));
        });
      }
      return;
    }
    // Credit follows the simulated time that passed (however late this tick runs), from when the target answered ARP.
    const until = Math.min(now, endMs);
    flow.credit += (flow.ratePps * Math.max(0, until - flow.pacedMs)) / 1_000;
    flow.pacedMs = until;
    while (flow.credit >= 1) {
      flow.credit -= 1;
      flow.sent += 1;
      flow.guest.sendWords(flow.headers, { flow: flow.id, echoSeq: flow.sent, sentMs: now }, flow.bytes);
    }
  }

  /** A datagram of a flow reached a guest of this host. */
  arrived(vmId: string, sourceIp: bigint, payload: Payload, bytes: number): void {
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
