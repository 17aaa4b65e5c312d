// A JetStream KV bucket holding protobuf values, with the compare-and-set
// operations desired state needs (create fails on an existing key, update on
// a stale revision) and a follow mode that keeps a copy current. Writes
// resolve only after JetStream has stored them, so what a caller
// acknowledges survives a crash. A fenced bucket wraps every value with the
// lease epoch of its writer, so a reader can tell a deposed writer's records.

import type { JetStreamClient, KV, KvEntry, QueuedIterator } from "nats";
import { SimdcError, unavailable, wallClock } from "@simdc/common";
import { simdc } from "@simdc/proto";
import { decodeMessage, encodeMessage, type Input, type MessageType } from "./codec.js";

import v1 = simdc.v1;

export interface BucketOptions {
  /** JetStream replicas; 3 in a NATS cluster. */
  replicas?: number;
  /**
   * Wrap values in a StoredRecord with the writer's epoch (from `epochOf`).
   * Reads from the stream leader only (no direct gets from replicas), so a
   * reader never sees a value older than one it was told is written.
   */
  fenced?: { epochOf: () => number };
  /** Keys older than this are removed by the server, in ms (0: kept). */
  ttlMs?: number;
  /** Revisions kept per key (1 by default), for undoing writes. */
  history?: number;
  /** Only bind to a bucket that exists (its creator chose its settings); fail when it does not. */
  bindOnly?: boolean;
  /** How long a read or write may wait for JetStream, in ms (the client's default, 5 s, when absent). */
  timeoutMs?: number;
}

export interface Stored<T> {
  value: T;
  revision: number;
  /** The writer's lease epoch (0 in buckets that are not fenced). */
  epoch: number;
}

/** One change seen by a follower: a value, or its deletion (value null). */
export interface Change<T> {
  key: string;
  value: T | null;
  revision: number;
  epoch: number;
}

export interface Following {
  stop(): void;
}

/**
 * The key a new writer marks its start under: every write before the mark
 * has a lower revision, every write after it a higher one, and followers see
 * the mark in order with the rest.
 */
export const barrierKey = "_barrier";
/** Tries at making a bucket's watch whose stream a cluster does not know yet, and the wait between (real ms: NATS, not the simulation). */
const watchAttemptsMax = 25;
/** Tries at making a bucket in a cluster that times out making it. */
const openAttemptsMax = 4;
const watchRetryMs = 200;

/** JetStream's API error for "wrong last sequence", which KV create and update raise. */
const wrongLastSequence = 10071;

export class Bucket<T> {
  private constructor(
    private readonly kv: KV,
    private readonly type: MessageType<T>,
    readonly name: string,
    private readonly fenced: BucketOptions["fenced"],
    /** Revisions kept per key. */
    readonly historyKept: number,
  ) {}

  static async open<T>(js: JetStreamClient, name: string, type: MessageType<T>, options: BucketOptions): Promise<Bucket<T>> {
    for (let attempt = 1; ; attempt++) {
      try {
        const kv = await js.views.kv(name, {
          history: options.history ?? 1,
          replicas: options.replicas ?? 1,
          ...(options.fenced ? { allow_direct: false } : {}),
          ...(options.ttlMs ? { ttl: options.ttlMs } : {}),
          ...(options.bindOnly ? { bindOnly: true } : {}),
        });
        return new Bucket(kv, type, name, options.fenced, options.history ?? 1);
      } catch (err) {
        // A cluster that is still forming (compose's three servers, two controllers making every
        // bucket at once) may time out making a replicated stream; making it again with the same
        // configuration is harmless. A bucket that is not there to bind to is the caller's answer.
        if (!options.bindOnly && /timeout|temporarily unavailable/i.test((err as Error).message) && attempt < openAttemptsMax) continue;
        throw unavailable(`cannot open KV bucket ${name}: ${(err as Error).message}`, err);
      }
    }
  }

  private encode(value: Input<T>): Uint8Array {
    const message = encodeMessage(this.type, value);
    if (!this.fenced) return message;
    return encodeMessage(v1.StoredRecord, { writerEpoch: this.fenced.epochOf(), message });
  }

  /** @throws SimdcError INVALID_ARGUMENT when the bytes do not decode. */
  private decode(data: Uint8Array): { value: T; epoch: number } {
    if (!this.fenced) return { value: decodeMessage(this.type, data), epoch: 0 };
    const record = decodeMessage(v1.StoredRecord, data);
    return { value: decodeMessage(this.type, record.message), epoch: record.writerEpoch };
  }

  /** The stored value, or null when the key is absent or deleted. */
  async get(key: string): Promise<Stored<T> | null> {
    let entry: KvEntry | null;
    try {
      entry = await this.kv.get(key);
    } catch (err) {
      throw unavailable(`KV get ${this.name}/${key} failed: ${(err as Error).message}`, err);
    }
    if (!entry || entry.operation !== "PUT") return null;
    return { ...this.decode(entry.value), revision: entry.revision };
  }

  /**
   * Stores a new key.
   * @returns the revision.
   * @throws SimdcError ALREADY_EXISTS when the key holds a value.
   */
  async create(key: string, value: Input<T>): Promise<number> {
    try {
      return await this.kv.create(key, this.encode(value));
    } catch (err) {
      if (isWrongLastSequence(err)) throw new SimdcError("ALREADY_EXISTS", `${key} exists already`);
      throw unavailable(`KV create ${this.name}/${key} failed: ${(err as Error).message}`, err);
    }
  }

  /**
   * Replaces a value only if it is still at `revision`.
   * @throws SimdcError CONFLICT when someone else wrote it since.
   */
  async update(key: string, value: Input<T>, revision: number): Promise<number> {
    try {
      return await this.kv.update(key, this.encode(value), revision);
    } catch (err) {
      if (isWrongLastSequence(err)) throw new SimdcError("CONFLICT", `${key} changed since revision ${revision}`);
      throw unavailable(`KV update ${this.name}/${key} failed: ${(err as Error).message}`, err);
    }
  }

  /** Stores a value whatever was there. @returns the revision. */
  async put(key: string, value: Input<T>): Promise<number> {
    try {
      return await this.kv.put(key, this.encode(value));
    } catch (err) {
      throw unavailable(`KV put ${this.name}/${key} failed: ${(err as Error).message}`, err);
    }
  }

  /**
   * Deletes a key; with `revision`, only if it is still at that revision.
   * @throws SimdcError CONFLICT when it changed since.
   */
  async delete(key: string, revision?: number): Promise<void> {
    try {
      await this.kv.delete(key, revision !== undefined ? { previousSeq: revision } : undefined);
    } catch (err) {
      if (isWrongLastSequence(err)) throw new SimdcError("CONFLICT", `${key} changed since revision ${revision}`);
      throw unavailable(`KV delete ${this.name}/${key} failed: ${(err as Error).message}`, err);
    }
  }

  /**
   * When the bucket's stream was made: it changes when the bucket was deleted
   * and made anew, which a watch does not notice on its own.
   * @throws SimdcError UNAVAILABLE when the bucket does not exist (or NATS does not answer).
   */
  async madeAt(): Promise<string> {
    try {
      return (await this.kv.status()).streamInfo.created;
    } catch (err) {
      throw unavailable(`KV status ${this.name} failed: ${(err as Error).message}`, err);
    }
  }

  /**
   * Writes the barrier mark (an empty value under barrierKey).
   * @returns its revision: every write that completed before this call has a
   * lower one, every write made after it a higher one.
   */
  async writeBarrier(): Promise<number> {
    return this.put(barrierKey, this.type.create() as Input<T>);
  }

  /**
   * The revisions of one key the bucket still holds (its history setting),
   * oldest first; deletions have a null value.
   */
  async history(key: string): Promise<Change<T>[]> {
    const out: Change<T>[] = [];
    try {
      const entries = await this.kv.history({ key });
      for await (const entry of entries) {
        if (entry.operation !== "PUT") {
          out.push({ key, value: null, revision: entry.revision, epoch: 0 });
          continue;
        }
        const decoded = this.decode(entry.value);
        out.push({ key, value: decoded.value, revision: entry.revision, epoch: decoded.epoch });
      }
    } catch (err) {
      throw unavailable(`KV history ${this.name}/${key} failed: ${(err as Error).message}`, err);
    }
    return out;
  }

  /**
   * Every live key with its value, read in one pass of a watcher rather than a
   * request per key, so a controller with thousands of VMs restarts quickly.
   * A value that no longer decodes is reported to `onCorrupt` and skipped.
   */
  async loadAll(onCorrupt: (key: string, err: unknown) => void): Promise<Map<string, Stored<T>>> {
    const out = new Map<string, Stored<T>>();
    const following = await this.follow({
      onChange: (change) => {
        if (change.value === null) out.delete(change.key);
        else out.set(change.key, { value: change.value, revision: change.revision, epoch: change.epoch });
      },
      onCorrupt,
    });
    following.stop();
    return out;
  }

  /**
   * Reports every live key (or those matching `key`, a NATS-style pattern),
   * then every change, in revision order, until stopped; resolves once the
   * keys that existed at the call have been reported. A value that does not
   * decode goes to `onCorrupt` and is otherwise skipped.
   */
  async follow(options: {
    key?: string;
    onChange: (change: Change<T>) => void;
    onCorrupt: (key: string, err: unknown) => void;
    /** Told when the watch ends without stop() (its stream was deleted, the connection closed). */
    onEnded?: (err?: unknown) => void;
    /**
     * True when the follower already holds this revision of the key (its own
     * write coming back): the entry is then not decoded, only its revision
     * reported to onKnown.
     */
    isKnown?: (key: string, revision: number) => boolean;
    onKnown?: (revision: number) => void;
  }): Promise<Following> {
    let resolveReady!: () => void;
    const ready = new Promise<void>((r) => (resolveReady = r));
    let watcher: QueuedIterator<KvEntry>;
    for (let attempt = 1; ; attempt++) {
      try {
        watcher = await this.kv.watch({ ...(options.key ? { key: options.key } : {}), initializedFn: () => resolveReady() });
        break;
      } catch (err) {
        // The bucket was opened, so its stream exists: in a cluster, a stream just created may not
        // be known yet where the watch's consumer is made (a controller starting with a new
        // datacenter failed so, now and then, in the compose e2e). That passes within moments.
        if (/stream not found/i.test((err as Error).message) && attempt < watchAttemptsMax) {
          await wallClock.sleep(watchRetryMs);
          continue;
        }
        throw unavailable(`KV watch ${this.name} failed: ${(err as Error).message}`, err);
      }
    }
    let stopped = false;
    void (async () => {
      for await (const entry of watcher) {
        if (options.isKnown?.(entry.key, entry.revision)) {
          options.onKnown?.(entry.revision);
          continue;
        }
        if (entry.operation !== "PUT") {
          options.onChange({ key: entry.key, value: null, revision: entry.revision, epoch: 0 });
          continue;
        }
        let decoded: { value: T; epoch: number };
        try {
          decoded = this.decode(entry.value);
        } catch (err) {
          options.onCorrupt(entry.key, err);
          continue;
        }
        options.onChange({ key: entry.key, value: decoded.value, revision: entry.revision, epoch: decoded.epoch });
      }
    })().then(
      () => stopped || options.onEnded?.(),
      (err: unknown) => stopped || options.onEnded?.(err),
    );
    await ready;
    return {
      stop: () => {
        stopped = true;
        watcher.stop();
      },
    };
  }

  /**
   * Calls `onChange` with the key's current value (null when absent, deleted
   * or not decodable) before it resolves, and again after every change, until
   * the connection closes. A value may be reported twice; callers are idempotent.
   */
  async watchKey(key: string, onChange: (value: T | null) => void): Promise<void> {
    let seen = false;
    await this.follow({
      key,
      onChange: (change) => {
        seen = true;
        onChange(change.value);
      },
      onCorrupt: () => {
        seen = true;
        onChange(null);
      },
    });
    if (!seen) onChange(null);
  }
}

function isWrongLastSequence(err: unknown): boolean {
  const e = err as { api_error?: { err_code?: number }; message?: string };
  return e.api_error?.err_code === wrongLastSequence || /wrong last sequence/i.test(e.message ?? "");
}
