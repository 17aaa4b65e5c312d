// The datacenter's event history: a JetStream stream that keeps every event
// published on an event subject (not heartbeats or metrics), so `simdc
// events --since` and an experiment's recorder see what happened before they
// looked, and a watcher that reconnects misses nothing.

import { consumerOpts, DiscardPolicy, nanos, RetentionPolicy, StorageType, type NatsConnection, type StreamConfig } from "nats";
import { SimdcError, type Logger } from "@simdc/common";
import type { Subjects } from "./subjects.js";

/** How long events are kept, and how many at most: a day of a busy datacenter. */
export const eventHistoryAgeMs = 24 * 3600_000;
export const eventHistoryMessagesMax = 1_000_000;
const eventHistoryBytesMax = 512 * 1024 * 1024;

/** One stored event: its subject and payload as published, and where the stream put it. */
export interface StoredEvent {
  subject: string;
  data: Uint8Array;
  /** Position in the history, from 1. */
  seq: number;
  /** When NATS stored it (wall time, ms). */
  storedAtMs: number;
}

export interface ReadHistoryOptions {
  /** "all": from the oldest kept event; "new": only what is published from now on. */
  from: "all" | "new";
  /** Keep delivering new events until `signal` aborts; otherwise stop once caught up. */
  follow: boolean;
  signal?: AbortSignal;
}

export class EventHistory {
  constructor(
    private readonly nc: NatsConnection,
    private readonly subjects: Subjects,
    private readonly logger: Logger,
  ) {}

  get streamName(): string {
    return this.subjects.bucket("events");
  }

  /**
   * Makes the history stream, or brings an existing one to this version's
   * subjects. Idempotent: every process that may start first calls it.
   * @throws SimdcError UNAVAILABLE (or PERMISSION_DENIED) when JetStream refuses.
   */
  async ensure(replicas = 1): Promise<void> {
    const config: Partial<StreamConfig> & { name: string } = {
      name: this.streamName,
      subjects: this.subjects.historySubjects(),
      retention: RetentionPolicy.Limits,
      storage: StorageType.File,
      discard: DiscardPolicy.Old,
      max_age: nanos(eventHistoryAgeMs),
      max_msgs: eventHistoryMessagesMax,
      max_bytes: eventHistoryBytesMax,
      num_replicas: replicas,
    };
    try {
      const jsm = await this.nc.jetstreamManager();
      try {
        await jsm.streams.add(config);
      } catch (err) {
        // It exists with another configuration (an older simdc, other limits): take this one's.
        if (!/already in use/i.test((err as Error).message)) throw err;
        await jsm.streams.update(this.streamName, config);
      }
    } catch (err) {
      throw historyError(err, `cannot keep the event history ${this.streamName}`);
    }
  }

  /**
   * Hands every stored event to `onEvent` in order, then (with `follow`)
   * every new one. Without `follow` it resolves once it has delivered what
   * was stored when it began.
   */
  async read(options: ReadHistoryOptions, onEvent: (event: StoredEvent) => void): Promise<void> {
    try {
      if (!options.follow) {
        const info = await (await this.nc.jetstreamManager()).streams.info(this.streamName);
        if (options.from === "new" || info.state.messages === 0) return;
      }
      // An ordered push consumer: what nats-server 2.9 (Debian's) serves; the pull kind needs 2.10.
      const consumer = consumerOpts();
      consumer.orderedConsumer();
      consumer.bindStream(this.streamName);
      if (options.from === "all") consumer.deliverAll();
      else consumer.deliverNew();
      const subscription = await this.nc.jetstream().subscribe(this.subjects.allEvents(), consumer);
      const stop = (): void => subscription.unsubscribe();
      options.signal?.addEventListener("abort", stop, { once: true });
      if (options.signal?.aborted) stop();
      for await (const m of subscription) {
        onEvent({ subject: m.subject, data: m.data, seq: m.seq, storedAtMs: Math.floor(m.info.timestampNanos / 1e6) });
        if (!options.follow && m.info.pending === 0) break;
      }
      options.signal?.removeEventListener("abort", stop);
      subscription.unsubscribe();
    } catch (err) {
      this.logger.debug({ err }, "event history read ended");
      throw historyError(err, `cannot read the event history ${this.streamName}`);
    }
  }
}

function historyError(err: unknown, what: string): SimdcError {
  if (err instanceof SimdcError) return err;
  const message = err instanceof Error ? err.message : String(err);
  if (/stream not found/i.test(message)) return new SimdcError("NOT_FOUND", `${what}: it does not exist yet (no controller or 'simdc up' has started here)`, { cause: err });
  if (/permission/i.test(message)) return new SimdcError("PERMISSION_DENIED", `${what}: ${message}`, { cause: err });
  return new SimdcError("UNAVAILABLE", `${what}: ${message}`, { cause: err });
}
