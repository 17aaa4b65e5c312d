// A train's hand-built encoding against the generated protobuf encoder:
// byte for byte the same, and it decodes to what was pushed, across
// multi-byte lengths and sequence numbers and with and without a request
// for credit; its varints against protobufjs's.

import { describe, expect, it } from "vitest";
import { Writer } from "protobufjs";
import { simdc } from "@simdc/proto";
import { packetWords } from "@simdc/vswitch";
import { SendWindow, windowPackets } from "./flow-control.js";
import { PendingTrain, recordBytes, varintBytes, writeVarint } from "./underlay.js";

import v1 = simdc.v1;

function words(seed: number): Uint32Array {
  return Uint32Array.from({ length: packetWords }, (_, i) => (seed * 2_654_435_761 + i * 40_503) >>> 0);
}

describe("train encoding", () => {
  it("train encoding: byte for byte what the generated encoder makes, and it decodes to the packets pushed", () => {
    const window = new SendWindow(() => 0);
    const train = new PendingTrain("x.dp.agent-2.host-22.agent-1", "host-1", "host-22", window, 256);
    // Sequence numbers past one, two and four varint bytes.
    for (let round = 0; round < 300; round++) {
      const packets = round === 7 ? 200 : (round % 3) + 1;
      for (let i = 0; i < packets; i++) {
        window.admit();
        train.push(words(round * 1_000 + i), i % 2 ? { flow: 7, echoSeq: round, sentMs: 1.5 * round } : { echoId: 3, echoSeq: i, reply: true, responseBytes: 900 }, 100 + i);
      }
      const records = new Uint8Array(train.bytes.subarray(0, packets * recordBytes));
      const wire = train.encode();
      train.count = 0;
      const seq = round + 1;
      const expected = v1.UnderlayTrain.encode({ fromHost: "host-1", toHost: "host-22", records, seq, wantsCredit: window.wantsCredit || undefined }).finish();
      expect(Buffer.from(wire).equals(Buffer.from(expected))).toBe(true);
      const decoded = v1.UnderlayTrain.decode(wire);
      expect(decoded.seq).toBe(seq);
      expect(Buffer.from(decoded.records).equals(Buffer.from(records))).toBe(true);
      if (round === 7) expect(records.length).toBeGreaterThan(16_384);
    }
    // A window past half full asks for credit, on the wire too.
    for (let i = 0; i < windowPackets; i++) window.admit();
    train.push(words(1), {}, 64);
    expect(v1.UnderlayTrain.decode(train.encode()).wantsCredit).toBe(true);
  });

  it("train encoding: varints of every length, as protobuf writes them", () => {
    for (const n of [0, 1, 127, 128, 16_383, 16_384, 2 ** 21 - 1, 2 ** 21, 2 ** 28 - 1, 2 ** 28, 2 ** 32 - 1]) {
      const out = new Uint8Array(varintBytes(n));
      expect(writeVarint(out, 0, n)).toBe(out.length);
      expect(Buffer.from(out).equals(Buffer.from(Writer.create().uint32(n).finish()))).toBe(true);
    }
  });
});
