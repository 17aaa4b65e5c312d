// Messages a process sends in one turn of the event loop leave in one write.
// nats.js writes at the end of every run of microtasks, so a process that
// sends from many timers and message handlers (an agent reporting VMs, a
// controller answering requests) paid a write syscall per message, and the
// server a read: at 10,000 hosts that was a quarter of the CPU of a create.
// Held messages leave in the check phase of the same turn, in the order they
// were sent. KV operations go out at once (nats.js sends them itself), so one
// may overtake a message sent before it in the same turn; nothing relies on
// that order.

export class Outbox {
  private held: (() => void)[] = [];
  private scheduled = false;

  /** Runs `send` (which must not throw) once this turn's other sends are held too. */
  add(send: () => void): void {
    this.held.push(send);
    if (this.scheduled) return;
    this.scheduled = true;
    // Transport batching, not simulated time: the send waits for no clock.
    // eslint-disable-next-line no-restricted-globals
    setImmediate(() => this.drain());
  }

  /** Sends everything held now, in order (before a flush or a close). */
  drain(): void {
    this.scheduled = false;
    const sends = this.held;
    this.held = [];
    for (const send of sends) send();
  }
}
