// A JetStream KV bucket holding protobuf values, with the compare-and-set
// operations desired state needs (create fails on an existing key, update on
// a stale revision). Writes resolve only after JetStream has stored them, so
// what a caller acknowledges survives a crash.

import type { JetStreamClient, KV, KvEntry } from "nats";
import { SimdcError, unavailable } from "@simdc/common";
import { decodeMessage, encodeMessage, type Input, type MessageType } from "./codec.js";

export interface BucketOptions {
  /** JetStream replicas; 3 in a NATS cluster. */
  replicas?: number;
}

export interface Stored<T> {
  value: T;
  revision: number;
}

/** JetStream's API error for "wrong last sequence", which KV create and update raise. */
const wrongLastSequence = 10071;

export class Bucket<T> {
  private constructor(
    private readonly kv: KV,
    private readonly type: MessageType<T>,
    readonly name: string,
  ) {}

  static async open<T>(js: JetStreamClient, name: string, type: MessageType<T>, options: BucketOptions): Promise<Bucket<T>> {
    try {
      const kv = await js.views.kv(name, { history: 1, replicas: options.replicas ?? 1 });
      return new Bucket(kv, type, name);
    } catch (err) {
      throw unavailable(`cannot open KV bucket ${name}: ${(err as Error).message}`, err);
    }
  }

  /** The stored value, or null when the key is absent or deleted. */
  async get(key: string): Promise<Stored<T> | null> {
    const entry = await this.kv.get(key);
    if (!entry || entry.operation !== "PUT") return null;
    return { value: decodeMessage(this.type, entry.value), revision: entry.revision };
  }

  /**
   * Stores a new key.
   * @returns the revision.
   * @throws SimdcError ALREADY_EXISTS when the key holds a value.
   */
  async create(key: string, value: Input<T>): Promise<number> {
    try {
      return await this.kv.create(key, encodeMessage(this.type, value));
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
      return await this.kv.update(key, encodeMessage(this.type, value), revision);
    } catch (err) {
      if (isWrongLastSequence(err)) throw new SimdcError("CONFLICT", `${key} changed since revision ${revision}`);
      throw unavailable(`KV update ${this.name}/${key} failed: ${(err as Error).message}`, err);
    }
  }

  /** Stores a value whatever was there. */
  async put(key: string, value: Input<T>): Promise<number> {
    try {
      return await this.kv.put(key, encodeMessage(this.type, value));
    } catch (err) {
      throw unavailable(`KV put ${this.name}/${key} failed: ${(err as Error).message}`, err);
    }
  }

  async delete(key: string): Promise<void> {
    try {
      await this.kv.delete(key);
    } catch (err) {
      throw unavailable(`KV delete ${this.name}/${key} failed: ${(err as Error).message}`, err);
    }
  }

  /**
   * Every live key with its value, read in one pass of a watcher rather than a
   * request per key, so a controller with thousands of VMs restarts quickly.
   * A value that no longer decodes is reported to `onCorrupt` and skipped.
   */
  async loadAll(onCorrupt: (key: string, err: unknown) => void): Promise<Map<string, Stored<T>>> {
    const out = new Map<string, Stored<T>>();
    const status = await this.kv.status();
    if (status.values === 0) return out;
    let resolveReady!: () => void;
    const ready = new Promise<void>((r) => (resolveReady = r));
    const watcher = await this.kv.watch({ initializedFn: () => resolveReady() });
    const reader = (async () => {
      for await (const entry of watcher) this.apply(out, entry, onCorrupt);
    })();
    await ready;
    watcher.stop();
    await reader;
    return out;
  }

  private apply(out: Map<string, Stored<T>>, entry: KvEntry, onCorrupt: (key: string, err: unknown) => void): void {
    if (entry.operation !== "PUT") {
      out.delete(entry.key);
      return;
    }
    try {
      out.set(entry.key, { value: decodeMessage(this.type, entry.value), revision: entry.revision });
    } catch (err) {
      onCorrupt(entry.key, err);
    }
  }

  /**
   * Calls `onChange` with the key's current value (null when absent or
   * deleted) before it resolves, and again after every change, until the
   * connection closes. A value may be reported twice; callers are idempotent.
   */
  async watchKey(key: string, onChange: (value: T | null) => void): Promise<void> {
    let initial: T | null = null;
    try {
      initial = (await this.get(key))?.value ?? null;
    } catch {
      // A value that does not decode is treated as absent, as in the watch below.
    }
    onChange(initial);
    const watcher = await this.kv.watch({ key });
    void (async () => {
      for await (const entry of watcher) {
        if (entry.operation !== "PUT") {
          onChange(null);
          continue;
        }
        try {
          onChange(decodeMessage(this.type, entry.value));
        } catch {
          // A value that does not decode is treated as absent: no rules.
          onChange(null);
        }
      }
    })();
  }
}

function isWrongLastSequence(err: unknown): boolean {
  const e = err as { api_error?: { err_code?: number }; message?: string };
  return e.api_error?.err_code === wrongLastSequence || /wrong last sequence/i.test(e.message ?? "");
}
