// A host's physical NIC, the underlay side of its tunnels: a bandwidth, a
// transmit queue and a wire latency, on the simulated clock. A packet waits
// for the packets ahead of it (the backlog drains at the line rate); one that
// would overflow the queue is dropped and counted. Departures within the
// same millisecond leave together (the simulation's timers are millisecond
// grained), so a saturated NIC costs a timer a millisecond, not a packet,
// and a packet that crosses at once costs none.
// The converged NIC also carries the host's storage traffic: reserve() is the
// hook the SAN work will call for every block it moves. A fault may reshape a
// NIC at run time (a slower line, a shorter queue) and put it back.

import type { Clock } from "@simdc/common";

export interface UplinkSpec {
  name: string;
  bandwidthMbps: number;
  queueBytes: number;
  latencyMs: number;
}

export class Uplink {
  txPackets = 0;
  txBytes = 0;
  drops = 0;
  storageBytes = 0;
  backlogBytesMax = 0;
  /** When the line is free again (simulated ms). */
  private busyUntilMs = 0;
  /** Packets leaving at each whole millisecond, with the timer that sends them. */
  private readonly departures = new Map<number, (() => void)[]>();

  private bytesPerMs: number;
  /** As configured, for restore(). */
  readonly configured: UplinkSpec;

  constructor(
    public spec: UplinkSpec,
    private readonly clock: Clock,
    /** Told of drops (the datapath reports them as events, at most one a second). */
    private readonly dropped: (uplink: Uplink) => void,
  ) {
    this.configured = { ...spec };
    this.bytesPerMs = bytesPerMsOf(spec);
  }

  /**
   * A new bandwidth or queue from now on. What is queued keeps the departure
   * it was given; a queue made shorter than its backlog takes nothing new
   * until the backlog fits.
   */
  reshape(change: { bandwidthMbps?: number; queueBytes?: number }): void {
    this.spec = { ...this.spec, ...change };
    this.bytesPerMs = bytesPerMsOf(this.spec);
  }

  /** Bytes waiting for the line now. */
  backlogBytes(now = this.clock.nowMs()): number {
    return Math.max(0, this.busyUntilMs - now) * this.bytesPerMs;
  }

  /**
   * Queues `bytes` for the line. @returns in how many ms they will have
   * crossed it (under 1: now, no timer needed), or -1 when the queue was
   * full and they were dropped.
   */
  transmit(bytes: number): number {
    const now = this.clock.nowMs();
    const backlog = this.backlogBytes(now);
    if (backlog + bytes > this.spec.queueBytes) {
      this.drops += 1;
      this.dropped(this);
      return -1;
    }
    if (backlog + bytes > this.backlogBytesMax) this.backlogBytesMax = Math.round(backlog + bytes);
    this.busyUntilMs = Math.max(now, this.busyUntilMs) + bytes / this.bytesPerMs;
    this.txPackets += 1;
    this.txBytes += bytes;
    return this.busyUntilMs + this.spec.latencyMs - now;
  }

  /** Runs `send` once `delayMs` (from transmit) has passed, with the others leaving in the same millisecond. */
  later(delayMs: number, send: () => void): void {
    const now = this.clock.nowMs();
    const slot = Math.ceil(now + delayMs);
    let leaving = this.departures.get(slot);
    if (!leaving) {
      this.departures.set(slot, (leaving = []));
      this.clock.after(slot - now, () => {
        const batch = this.departures.get(slot) ?? [];
        this.departures.delete(slot);
        for (const go of batch) go();
      });
    }
    leaving.push(send);
  }

  /** Storage traffic on this NIC: it takes the line's time like any packet, and is never dropped (the SAN retries). */
  reserve(bytes: number): void {
    const now = this.clock.nowMs();
    this.busyUntilMs = Math.max(now, this.busyUntilMs) + bytes / this.bytesPerMs;
    this.storageBytes += bytes;
  }
}

function bytesPerMsOf(spec: UplinkSpec): number {
  return (spec.bandwidthMbps * 1e6) / 8 / 1_000;
}
