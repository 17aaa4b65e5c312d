// The first answer to every request that carried a request id, so a retried
// or duplicated request returns it instead of acting twice. Answers are kept
// in KV (a fenced store, an hour) so a controller that restarts or takes over
// still knows them; a request that is still running is joined, not repeated.

import { encodeMessage, type MessageType } from "@simdc/bus";
import { bytesDigest, invalidArgument, type Clock } from "@simdc/common";
import { simdc } from "@simdc/proto";
import type { FencedStore } from "./fenced-store.js";

import v1 = simdc.v1;

/** How long answers are remembered, in ms of real time (the KV bucket's TTL). */
export const requestMemoryMs = 60 * 60 * 1000;
const requestIdPattern = /^[A-Za-z0-9_-]{1,64}$/;

/** @throws SimdcError INVALID_ARGUMENT for a malformed request id ("" is none). */
export function checkRequestId(requestId: string): string {
  if (requestId && !requestIdPattern.test(requestId)) {
    throw invalidArgument(`request_id must be 1-64 characters of A-Z, a-z, 0-9, '-' and '_', got ${JSON.stringify(requestId.slice(0, 80))}`);
  }
  return requestId;
}

/** A request's fingerprint: its bytes without the mutation options, hashed. */
export function fingerprintOf<T extends { mutation?: unknown }>(type: MessageType<T>, request: T): number {
  return bytesDigest(encodeMessage(type, { ...request, mutation: null }));
}

export class RequestLog {
  private readonly running = new Map<string, { fingerprint: number; done: Promise<unknown> }>();

  constructor(
    readonly records: FencedStore<v1.RequestRecord>,
    private readonly clock: Clock,
  ) {}

  /**
   * The remembered answer to `requestId`, or undefined.
   * @throws SimdcError INVALID_ARGUMENT when the id was used for another request.
   */
  answer(requestId: string, rpc: string, fingerprint: number): Uint8Array | undefined {
    const record = this.records.get(requestId)?.value;
    if (!record) return undefined;
    if (record.rpc !== rpc || record.fingerprint !== fingerprint) {
      throw invalidArgument(`request id ${requestId} was used for another request (${record.rpc}); choose a new id for a new request`);
    }
    return record.response;
  }

  /** The same request already running here, to be joined. */
  joinable(requestId: string, fingerprint: number): Promise<unknown> | undefined {
    const run = this.running.get(requestId);
    if (run && run.fingerprint !== fingerprint) {
      throw invalidArgument(`request id ${requestId} is in use by another request; choose a new id for a new request`);
    }
    return run?.done;
  }

  /** Marks a request running until `done` settles. */
  track(requestId: string, fingerprint: number, done: Promise<unknown>): void {
    this.running.set(requestId, { fingerprint, done });
    done.then(
      () => this.running.delete(requestId),
      () => this.running.delete(requestId),
    );
  }

  /** Stores the first answer. */
  async remember(requestId: string, rpc: string, fingerprint: number, response: Uint8Array): Promise<void> {
    const record = v1.RequestRecord.create({ rpc, fingerprint, response, answeredAtMs: this.clock.nowMs() });
    const existing = this.records.get(requestId);
    await this.records.write(requestId, record, existing?.revision);
  }
}
