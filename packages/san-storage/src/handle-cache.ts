// The open image files of a block store, in a bounded least-recently-used
// cache so block I/O does not open and close a file per request. Files are
// leased while a request uses them, so neither eviction nor a volume's deletion
// closes a file under a request; concurrent writers share fdatasync calls
// (group commit). It knows keys and paths, not volumes or blocks.

import { open, type FileHandle } from "node:fs/promises";

/** A file held open for one request; release it exactly once. */
export interface Lease {
  readonly file: FileHandle;
  /**
   * Resolves once everything written through this file before the call is on
   * disk (fdatasync), sharing one sync among the writers that wait together.
   * @throws the file system's error when the sync fails.
   */
  sync(): Promise<void>;
  release(): void;
}

interface Entry {
  readonly key: string;
  readonly opened: Promise<FileHandle>;
  readonly syncs: SyncBatcher;
  /** Leases not yet released. */
  users: number;
  /** Set once the entry left the cache; resolves when its file is closed. */
  retired: Promise<void> | null;
  /** Starts the close once a retired entry has no users. */
  onIdle: (() => void) | null;
  /** True once the file was opened read-only because the disk refused read-write. */
  readOnly: () => boolean;
}

export class HandleCache {
  private readonly entries = new Map<string, Entry>();
  /** Retired entries whose files are not closed yet (some may wait for leases). */
  private readonly closing = new Set<Promise<void>>();

  /**
   * @param openFilesMax idle files kept open; files leased by requests are never
   * closed early, so the count may exceed it by the requests in flight.
   * @param onCloseError told when closing a file fails (nothing else can be done).
   */
  constructor(
    readonly openFilesMax: number,
    private readonly onCloseError: (key: string, err: unknown) => void,
  ) {}

  /** Files in the cache (leased retired files not counted). */
  get size(): number {
    return this.entries.size;
  }

  /**
   * Leases the file of `key`, opening `path` read-write when it is not cached
   * (read-only when the disk refuses read-write).
   * The lease counts from the moment of the call, before the returned promise
   * settles, so a retire() made afterwards waits for it.
   * @param forWrite the lease is for a write: a file cached read-only is
   * opened afresh, since the disk may take writes again.
   * @throws the file system's error when the file cannot be opened.
   */
  async acquire(key: string, path: string, forWrite = false): Promise<Lease> {
    let entry = this.entries.get(key);
    // Without this a volume read while the disk was read-only would refuse
    // writes until its file left the cache, long after the disk recovered.
    if (entry?.readOnly() && forWrite) {
      void this.retireEntry(entry);
      entry = undefined;
    }
    if (entry) {
      // Re-inserting moves the key to the end of the Map's order: most recently used.
      this.entries.delete(key);
      this.entries.set(key, entry);
      entry.users += 1;
    } else {
      // A disk that went read-only still serves reads: fall back to a read-only handle.
      let readOnly = false;
      const opened = open(path, "r+").catch((err: NodeJS.ErrnoException) => {
        if (err.code === "EROFS" || err.code === "EACCES" || err.code === "EPERM") {
          readOnly = true;
          return open(path, "r");
        }
        throw err;
      });
      entry = { key, opened, syncs: new SyncBatcher(opened), users: 1, retired: null, onIdle: null, readOnly: () => readOnly };
      this.entries.set(key, entry);
      this.trim();
    }
    const held = entry;
    let file: FileHandle;
    try {
      file = await held.opened;
    } catch (err) {
      this.release(held);
      void this.retireEntry(held);
      throw err;
    }
    let released = false;
    return {
      file,
      sync: () => held.syncs.sync(),
      release: () => {
        if (released) return;
        released = true;
        this.release(held);
      },
    };
  }

  /**
   * Takes `key` out of the cache; resolves when its file is closed, which is
   * after every lease on it is released. Later acquires open the path afresh.
   */
  retire(key: string): Promise<void> {
    const entry = this.entries.get(key);
    return entry ? this.retireEntry(entry) : Promise.resolve();
  }

  /** Retires every file; resolves when all are closed, including evicted ones still leased. */
  async closeAll(): Promise<void> {
    for (const entry of this.entries.values()) void this.retireEntry(entry);
    await Promise.all([...this.closing]);
  }

  private retireEntry(entry: Entry): Promise<void> {
    if (this.entries.get(entry.key) === entry) this.entries.delete(entry.key);
    if (!entry.retired) {
      entry.retired = new Promise<void>((resolve) => {
        entry.onIdle = resolve;
      }).then(() => this.close(entry));
      const closed = entry.retired;
      this.closing.add(closed);
      void closed.then(() => this.closing.delete(closed));
      if (entry.users === 0) entry.onIdle?.();
    }
    return entry.retired;
  }

  private release(entry: Entry): void {
    entry.users -= 1;
    if (entry.users === 0) entry.onIdle?.();
  }

  /** Closes least recently used idle files until the cache is within its limit. */
  private trim(): void {
    for (const entry of this.entries.values()) {
      if (this.entries.size <= this.openFilesMax) return;
      if (entry.users === 0) void this.retireEntry(entry);
    }
  }

  private async close(entry: Entry): Promise<void> {
    let file: FileHandle;
    try {
      file = await entry.opened;
    } catch {
      // It never opened, so there is nothing to close; the acquire that
      // opened it has already reported the error.
      return;
    }
    try {
      await file.close();
    } catch (err) {
      this.onCloseError(entry.key, err);
    }
  }
}

/**
 * Group commit for one file: a sync() caller waits for an fdatasync that
 * started after its call. While one sync runs, every new caller joins the one
 * queued behind it, so N concurrent writers cost about two fdatasyncs, not N.
 */
class SyncBatcher {
  private running: Promise<void> | null = null;
  private queued: Promise<void> | null = null;

  constructor(private readonly opened: Promise<FileHandle>) {}

  sync(): Promise<void> {
    if (!this.running) return this.start();
    // The running sync may have started before this caller's write finished,
    // so it cannot count; the caller joins the next one.
    if (!this.queued) {
      const settled = this.running.then(
        () => undefined,
        () => undefined,
      );
      this.queued = settled.then(() => {
        this.queued = null;
        return this.start();
      });
    }
    return this.queued;
  }

  private start(): Promise<void> {
    const run = this.opened
      .then((file) => file.datasync())
      .finally(() => {
        if (this.running === run) this.running = null;
      });
    this.running = run;
    return run;
  }
}
