// The underlay's flow control as pure logic, on a hand-moved clock: the
// window, credit that covers lost trains, the stall, and when a receiver
// credits.

import { describe, expect, it } from "vitest";
import { Receipt, SendWindow, stallMs, windowPackets } from "./flow-control.js";

function admitted(window: SendWindow, packets: number): number {
  let n = 0;
  for (let i = 0; i < packets; i++) if (window.admit()) n += 1;
  return n;
}

describe("flow control", () => {
  it("flow control: a window admits its packets and no more until credit comes; credit for a train frees exactly what went before it", () => {
    const window = new SendWindow(() => 0);
    expect(admitted(window, 1_000)).toBe(1_000);
    const first = window.depart();
    expect(admitted(window, windowPackets)).toBe(windowPackets - 1_000);
    const second = window.depart();
    expect(second).toBe(first + 1);
    expect(window.admit()).toBe(false);
    window.credit(first);
    expect(window.inFlight).toBe(windowPackets - 1_000);
    expect(admitted(window, 2_000)).toBe(1_000);
    window.credit(second);
    expect(window.inFlight).toBe(1_000);
    // Credit for a train already credited, or one never sent, changes nothing.
    window.credit(first);
    expect(window.inFlight).toBe(1_000);
  });

  it("flow control: credit for a later train covers earlier ones lost on the way", () => {
    const window = new SendWindow(() => 0);
    const seqs: number[] = [];
    for (let i = 0; i < 4; i++) {
      admitted(window, 100);
      seqs.push(window.depart());
    }
    // Trains 1 and 2 were lost; the receiver took 3.
    window.credit(seqs[2]!);
    expect(window.inFlight).toBe(100);
  });

  it("flow control: half a window out asks for credit", () => {
    const window = new SendWindow(() => 0);
    admitted(window, windowPackets / 2 - 1);
    expect(window.wantsCredit).toBe(false);
    admitted(window, 1);
    expect(window.wantsCredit).toBe(true);
  });

  it("flow control: a full window with no credit for the stall time is forgotten, and the next window goes", () => {
    let now = 10_000;
    const window = new SendWindow(() => now);
    admitted(window, windowPackets);
    window.depart();
    expect(window.admit()).toBe(false);
    now += stallMs - 1;
    expect(window.admit()).toBe(false);
    now += 1;
    expect(admitted(window, windowPackets + 1)).toBe(windowPackets);
    // Credit resets the stall: a window that fills again waits its full stall time.
    window.credit(window.depart());
    admitted(window, windowPackets);
    now += stallMs / 2;
    expect(window.admit()).toBe(false);
    now += stallMs / 2;
    expect(window.admit()).toBe(false);
  });

  it("flow control: a receiver credits a sender unasked every quarter window, at once when asked, and once a turn", () => {
    const receipt = new Receipt("agent-1", "x.dp.agent-1.agent-2");
    expect(receipt.took(1, windowPackets / 4 - 1, false)).toBe(false);
    expect(receipt.took(2, 1, false)).toBe(true);
    // Already due this turn: not again.
    expect(receipt.took(3, windowPackets, true)).toBe(false);
    expect(receipt.seq).toBe(3);
    receipt.credited();
    expect(receipt.took(4, 1, false)).toBe(false);
    expect(receipt.took(5, 1, true)).toBe(true);
  });
});
