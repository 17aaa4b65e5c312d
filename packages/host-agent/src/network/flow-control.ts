// The underlay's flow control, between a sending agent and a receiving one.
// NATS keeps what a subscriber has not read yet, and past a limit calls it a
// slow consumer and cuts its connection: an agent whose guests sent faster
// than their peers' agent could take the packets lost that agent its
// connection, control plane and all, and on one machine it starved the
// receiving side of the CPU the sender's backlog took. So a sending agent
// keeps at most windowPackets packets on their way to each receiving agent
// and drops (and counts) what would go past, as a full ring does; the
// receiver credits back the last train it took, so the sender may send more.
// Credit for a train covers the trains before it, taken or lost on the way
// (a fault rule, a server that dropped them): a lossy path does not shrink
// the window. When a whole window goes without credit (a partition, a
// receiver gone) the sender forgets it after stallMs and tries again.
// Transport state, not simulation: times are real milliseconds.

/** Packets a sending agent may have on their way to one receiving agent. */
export const windowPackets = 4_096;
/** How long a full window waits for credit before its packets count as lost (real ms). */
export const stallMs = 1_000;
/** Trains a receiver takes from one sender between credits it sends unasked. */
const creditEveryPackets = windowPackets / 4;

/** A sending agent's packets on their way to one receiving agent. */
export class SendWindow {
  private seq = 0;
  /** Packets admitted, and those of them known to be off the wire (taken or lost). */
  private admitted = 0;
  private settled = 0;
  /** Trains on their way, oldest first, two numbers each: the train's seq, and `admitted` once it left. */
  private readonly flights: number[] = [];
  private head = 0;
  private stalledSinceMs = -1;

  constructor(private readonly nowMs: () => number) {}

  /** Whether one more packet may go (false: it is to be dropped). */
  admit(): boolean {
    if (this.admitted - this.settled >= windowPackets) {
      const now = this.nowMs();
      if (this.stalledSinceMs < 0) this.stalledSinceMs = now;
      if (now - this.stalledSinceMs < stallMs) return false;
      this.forget();
    }
    this.admitted += 1;
    return true;
  }

  /** The packets admitted since the last train leave as one: @returns its seq (from 1, wrapping at 2^32). */
  depart(): number {
    this.seq = (this.seq + 1) >>> 0;
    this.flights.push(this.seq, this.admitted);
    return this.seq;
  }

  /** Half the window is out: the receiver is asked to credit at once rather than when it would unasked. */
  get wantsCredit(): boolean {
    return this.admitted - this.settled >= windowPackets / 2;
  }

  /** Packets admitted and not known to be off the wire. */
  get inFlight(): number {
    return this.admitted - this.settled;
  }

  /** The receiver took the train numbered `seq`: it and those before it are off the wire. */
  credit(seq: number): void {
    const flights = this.flights;
    let i = this.head;
    // Seqs compare modulo 2^32: a train before `seq` is at most 2^31 trains older.
    while (i < flights.length && ((flights[i]! - seq) | 0) <= 0) {
      this.settled = flights[i + 1]!;
      i += 2;
    }
    if (i === this.head) return;
    this.stalledSinceMs = -1;
    if (i === flights.length) {
      flights.length = 0;
      this.head = 0;
    } else if (i >= 4_096) {
      flights.splice(0, i);
      this.head = 0;
    } else this.head = i;
  }

  private forget(): void {
    this.settled = this.admitted;
    this.flights.length = 0;
    this.head = 0;
    this.stalledSinceMs = -1;
  }
}

/** What a receiving agent took from one sending agent since it last credited it. */
export class Receipt {
  seq = 0;
  private sinceCredit = 0;
  /** Due to be credited at the end of this turn. */
  due = false;

  constructor(
    readonly sender: string,
    /** Where its credit goes. */
    readonly subject: string,
  ) {}

  /** A train taken (or refused: either way it is off the wire). @returns true when this makes the receipt fall due. */
  took(seq: number, packets: number, wantsCredit: boolean): boolean {
    this.seq = seq;
    this.sinceCredit += packets;
    if (this.due || (!wantsCredit && this.sinceCredit < creditEveryPackets)) return false;
    this.due = true;
    return true;
  }

  /** The credit is sent. */
  credited(): void {
    this.sinceCredit = 0;
    this.due = false;
  }
}
