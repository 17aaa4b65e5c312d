// Volumes as sparse files on the node's disk, and block I/O on them. It owns the
// layout under <dataDir>/volumes, the scan at start, capacity accounting and the
// durability rule (a write is fdatasynced before it is acknowledged). It knows
// nothing of NATS: it throws SimdcError and the SAN node puts that on the wire.

import { mkdir, open, readdir, readFile, stat, unlink } from "node:fs/promises";
import { join } from "node:path";
import {
  alreadyExists,
  failedPrecondition,
  checkName,
  checkRange,
  invalidArgument,
  notFound,
  resourceExhausted,
  SimdcError,
  unavailable,
  wallClock,
  type Clock,
  type Logger,
} from "@simdc/common";
import { syncDirectory, tempSuffix, writeFileAtomic } from "./atomic-file.js";
import { HandleCache, type Lease } from "./handle-cache.js";
import {
  blockRequestsInFlightMax,
  blockRequestsQueuedMax,
  blocksPerRequestMax,
  bytesPerMib,
  isValidBlockSize,
  openVolumesMaxDefault,
  volumeOpsQueuedMax,
  volumeSizeMibMax,
  volumesMax,
} from "./limits.js";
import { SerialQueue } from "./serial-queue.js";
import {
  encodeMeta,
  imageFileName,
  imageSuffix,
  metaFileBytesMax,
  metaFileName,
  metaSuffix,
  parseMeta,
  type VolumeMeta,
} from "./volume-meta.js";

export interface BlockStoreOptions {
  /** The node's data directory; volumes live in its `volumes/` folder, created when missing. */
  dataDir: string;
  /** Sum of volume sizes the node promises at most, in MiB. */
  capacityMib: number;
  /** Block size of volumes created from now on, in bytes; existing volumes keep theirs. */
  blockSizeBytes: number;
  logger: Logger;
  clock?: Clock;
  /** Idle image files kept open (openVolumesMaxDefault when absent). */
  openVolumesMax?: number;
}

/** The outcome of createVolume: the volume, and whether this call made it. */
export interface CreatedVolume {
  volume: VolumeMeta;
  created: boolean;
}

export class BlockStore {
  readonly volumesDir: string;
  readonly capacityMib: number;
  readonly blockSizeBytes: number;
  private readonly logger: Logger;
  private readonly clock: Clock;
  private readonly volumes = new Map<string, VolumeMeta>();
  private readonly handles: HandleCache;
  private readonly volumeOps = new SerialQueue("volume operations", volumeOpsQueuedMax);
  private allocated = 0;
  private blockRequestsInFlight = 0;
  private readonly blockRequestsWaiting: (() => void)[] = [];
  private closed = false;
  /** Why the disk cannot take writes now (read-only, I/O errors, full), or null. */
  private problem: string | null = null;

  private constructor(options: BlockStoreOptions) {
    this.volumesDir = join(options.dataDir, "volumes");
    this.capacityMib = options.capacityMib;
    this.blockSizeBytes = options.blockSizeBytes;
    this.logger = options.logger;
    this.clock = options.clock ?? wallClock;
    this.handles = new HandleCache(options.openVolumesMax ?? openVolumesMaxDefault, (volumeId, err) =>
      this.logger.warn({ volumeId, err }, "closing a volume's image file failed"),
    );
  }

  /**
   * Opens the store: creates `<dataDir>/volumes` when missing and scans it.
   * Unusable volume files are logged and skipped, never fatal.
   * @throws SimdcError INVALID_ARGUMENT for a bad block size or capacity; the
   * file system's error when the directory cannot be created or listed.
   */
  static async open(options: BlockStoreOptions): Promise<BlockStore> {
    if (!isValidBlockSize(options.blockSizeBytes)) {
      throw invalidArgument(`block size ${options.blockSizeBytes} is not a power of two from 512 to 4096 bytes`);
    }
    checkRange("capacityMib", options.capacityMib, 1, Number.MAX_SAFE_INTEGER);
    const store = new BlockStore(options);
    await mkdir(store.volumesDir, { recursive: true });
    await store.scan();
    return store;
  }

  /** Number of volumes held. */
  get volumeCount(): number {
    return this.volumes.size;
  }

  /** Sum of the sizes of the volumes held, in MiB (thin: promised, not written). */
  get allocatedMib(): number {
    return this.allocated;
  }

  /** Ids of the volumes held, sorted. */
  volumeIds(): string[] {
    return [...this.volumes.keys()].sort();
  }

  /** Every volume held, in id order. */
  list(): VolumeMeta[] {
    return this.volumeIds().map((id) => this.volumes.get(id)!);
  }

  /** Why the disk cannot take writes now (read-only, I/O errors, full), or null when it can. */
  get diskProblem(): string | null {
    return this.problem;
  }

  /**
   * Writes and fsyncs a small file beside the volumes, so the node knows
   * whether its disk takes writes even while nobody writes a volume (a disk
   * that went read-only, or came back).
   */
  async probeDisk(): Promise<void> {
    const path = join(this.volumesDir, "..", "disk-probe");
    try {
      const file = await open(path, "w", 0o644);
      try {
        await file.write(`${this.clock.nowMs()}\n`);
        await file.sync();
      } finally {
        await file.close();
      }
      this.problem = null;
    } catch (err) {
      this.diskFailure("probe", "(none)", err);
    }
  }

  /** The volume's metadata, or undefined when the node does not hold it. */
  volume(volumeId: string): VolumeMeta | undefined {
    return this.volumes.get(volumeId);
  }

  /** Image files currently cached open. */
  get openFileCount(): number {
    return this.handles.size;
  }

  /**
   * Creates a zero-filled sparse volume of `sizeMib` MiB, durably (image and
   * metadata fsynced, directory fsynced). Creating a volume that exists with
   * the same size and incarnation returns it unchanged.
   * @param incarnation the controller's incarnation of the volume.
   * @param stateId the datacenter state it belongs to.
   * @throws SimdcError INVALID_ARGUMENT for a bad id or size, ALREADY_EXISTS
   * when the volume exists with another size or incarnation, RESOURCE_EXHAUSTED
   * over capacity, over volumesMax or when too many volume operations wait.
   */
  async createVolume(volumeId: string, sizeMib: number, incarnation = "", stateId = ""): Promise<CreatedVolume> {
    checkName("volumeId", volumeId);
    checkRange("sizeMib", sizeMib, 1, volumeSizeMibMax);
    return this.volumeOps.run(async () => {
      this.checkOpen();
      const existing = this.volumes.get(volumeId);
      if (existing) {
        if (existing.sizeMib === sizeMib && existing.incarnation === incarnation) return { volume: existing, created: false };
        throw alreadyExists(`volume ${volumeId} exists with ${existing.sizeMib} MiB as incarnation ${JSON.stringify(existing.incarnation)}, not ${sizeMib} MiB as ${JSON.stringify(incarnation)}`);
      }
      if (this.volumes.size >= volumesMax) {
        throw resourceExhausted(`the node holds ${volumesMax} volumes, its limit`);
      }
      if (this.allocated + sizeMib > this.capacityMib) {
        throw resourceExhausted(
          `volume ${volumeId} of ${sizeMib} MiB does not fit: ${this.allocated} of ${this.capacityMib} MiB allocated`,
        );
      }
      const volume: VolumeMeta = {
        volumeId,
        sizeMib,
        blockSizeBytes: this.blockSizeBytes,
        createdAtMs: this.clock.nowMs(),
        incarnation,
        stateId,
      };
      try {
        await this.writeImage(volume);
        // The metadata file is the commit point: a crash before its rename
        // leaves an image without metadata, which the scan ignores.
        await writeFileAtomic(this.volumesDir, metaFileName(volumeId), encodeMeta(volume));
      } catch (err) {
        await this.removeQuietly(metaFileName(volumeId));
        await this.removeQuietly(imageFileName(volumeId));
        throw this.diskFailure("create", volumeId, err);
      }
      this.problem = null;
      this.add(volume);
      return { volume, created: true };
    });
  }

  /**
   * Deletes a volume and both its files, after the requests already using it finish.
   * @param incarnation when not "", only that incarnation is deleted.
   * @throws SimdcError INVALID_ARGUMENT for a bad id, NOT_FOUND when the node
   * does not hold the volume, FAILED_PRECONDITION when it holds another incarnation.
   */
  async deleteVolume(volumeId: string, incarnation = ""): Promise<void> {
    checkName("volumeId", volumeId);
    return this.volumeOps.run(async () => {
      this.checkOpen();
      const volume = this.volumes.get(volumeId);
      if (!volume) throw notFound(`volume ${volumeId} not found`);
      if (incarnation && volume.incarnation !== incarnation) {
        throw failedPrecondition(`volume ${volumeId} is incarnation ${JSON.stringify(volume.incarnation)}, not ${JSON.stringify(incarnation)}`);
      }
      // New requests see NOT_FOUND from here on; requests holding the file
      // finish before it is closed. Both happen in this one synchronous step,
      // so no request can open the file again in between.
      this.remove(volume);
      await this.handles.retire(volumeId);
      try {
        // Removing the metadata is the commit point: an image left behind by a
        // crash after it is ignored by the scan and truncated by a later create.
        await unlink(join(this.volumesDir, metaFileName(volumeId)));
      } catch (err) {
        this.add(volume);
        throw this.diskFailure("delete", volumeId, err);
      }
      try {
        await unlink(join(this.volumesDir, imageFileName(volumeId))).catch((err: NodeJS.ErrnoException) => {
          if (err.code !== "ENOENT") throw err;
        });
        await syncDirectory(this.volumesDir);
      } catch (err) {
        throw this.diskFailure("delete", volumeId, err);
      }
    });
  }

  /**
   * Reads `blockCount` blocks from block `lba`; blocks never written read as zeros.
   * @returns a new buffer of blockCount x the volume's block size bytes.
   * @throws SimdcError INVALID_ARGUMENT for a bad id, a count outside
   * 1..blocksPerRequestMax or blocks beyond the volume; NOT_FOUND for an
   * unknown volume; RESOURCE_EXHAUSTED when too many block requests are in flight.
   */
  async readBlocks(volumeId: string, lba: number, blockCount: number): Promise<Buffer> {
    const volume = this.requireVolume(volumeId);
    checkRange("blockCount", blockCount, 1, blocksPerRequestMax);
    checkExtent(volume, lba, blockCount);
    return this.withFile(volume, "read", async (lease) => {
      // One buffer per request, filled in place; it becomes the reply as it is.
      const buffer = Buffer.allocUnsafe(blockCount * volume.blockSizeBytes);
      await readFully(lease, buffer, lba * volume.blockSizeBytes);
      return buffer;
    });
  }

  /**
   * Writes whole blocks from block `lba` and returns once they are on disk (fdatasync).
   * @returns the number of blocks written.
   * @throws SimdcError INVALID_ARGUMENT for a bad id, data that is empty or
   * not a whole number of blocks, more than blocksPerRequestMax blocks or
   * blocks beyond the volume; NOT_FOUND for an unknown volume;
   * RESOURCE_EXHAUSTED when too many block requests are in flight or the disk is full.
   */
  async writeBlocks(volumeId: string, lba: number, data: Uint8Array): Promise<number> {
    const volume = this.requireVolume(volumeId);
    const blockSize = volume.blockSizeBytes;
    if (data.length === 0 || data.length % blockSize !== 0) {
      throw invalidArgument(`data of ${data.length} bytes is not a whole, non-zero number of ${blockSize}-byte blocks`);
    }
    const blockCount = data.length / blockSize;
    checkRange("blocks in data", blockCount, 1, blocksPerRequestMax);
    checkExtent(volume, lba, blockCount);
    try {
      const written = await this.withFile(volume, "write", async (lease) => {
        // The request's bytes go to the file as they are, without a copy.
        await writeFully(lease, data, lba * blockSize);
        await lease.sync();
        return blockCount;
      });
      this.problem = null;
      return written;
    } catch (err) {
      throw this.diskFailure("write", volumeId, err);
    }
  }

  /**
   * Refuses new work, waits for running volume operations and block requests,
   * and closes every file. Idempotent.
   */
  async close(): Promise<void> {
    this.closed = true;
    await this.volumeOps.idle();
    await this.handles.closeAll();
  }

  /**
   * Runs one block request on the volume's leased image file. The caller has
   * just looked the volume up, and the lease is taken before the first await,
   * so a delete either comes before both (NOT_FOUND) or waits for the request.
   */
  private async withFile<T>(volume: VolumeMeta, op: string, work: (lease: Lease) => Promise<T>): Promise<T> {
    this.checkOpen();
    await this.admit();
    let lease: Lease | undefined;
    try {
      // Waiting in line may have outlasted the volume or the node.
      this.checkOpen();
      if (this.volumes.get(volume.volumeId) !== volume) throw notFound(`volume ${volume.volumeId} not found`);
      const leased = this.handles.acquire(volume.volumeId, join(this.volumesDir, imageFileName(volume.volumeId)), op === "write");
      lease = await leased;
      return await work(lease);
    } catch (err) {
      throw ioFailure(op, volume.volumeId, err);
    } finally {
      lease?.release();
      this.releaseSlot();
    }
  }

  /** Takes an I/O slot, waiting in line when all are busy. @throws RESOURCE_EXHAUSTED when the line is full. */
  private async admit(): Promise<void> {
    if (this.blockRequestsInFlight < blockRequestsInFlightMax) {
      this.blockRequestsInFlight += 1;
      return;
    }
    if (this.blockRequestsWaiting.length >= blockRequestsQueuedMax) {
      throw resourceExhausted(
        `${blockRequestsInFlightMax} block requests are in flight and ${blockRequestsQueuedMax} waiting, the node's limit`,
      );
    }
    // The slot is handed over by releaseSlot, already counted.
    await new Promise<void>((resolve) => this.blockRequestsWaiting.push(resolve));
  }

  private releaseSlot(): void {
    const next = this.blockRequestsWaiting.shift();
    if (next) next();
    else this.blockRequestsInFlight -= 1;
  }

  /**
   * Notes why the disk refused a write (read-only, I/O error, full), so the
   * node reports itself not writable, and types the error.
   */
  private diskFailure(op: string, volumeId: string, err: unknown): SimdcError {
    const code = ((err as { cause?: NodeJS.ErrnoException }).cause ?? (err as NodeJS.ErrnoException)).code;
    const reasons: Record<string, string> = {
      EROFS: "the disk is read-only",
      EBADF: "the disk is read-only",
      EIO: "the disk reports I/O errors",
      ENOSPC: "the disk is full",
      EDQUOT: "the disk is full",
    };
    const reason = code ? reasons[code] : undefined;
    if (reason) {
      if (this.problem !== reason) this.logger.error({ op, volumeId, code }, `${reason}: writes fail until it recovers`);
      this.problem = reason;
      if (code === "ENOSPC" || code === "EDQUOT") return resourceExhausted(`${op} on volume ${volumeId}: ${reason}`);
      return new SimdcError("FAILED_PRECONDITION", `${op} on volume ${volumeId}: ${reason}`, { cause: err });
    }
    return ioFailure(op, volumeId, err);
  }

  private requireVolume(volumeId: string): VolumeMeta {
    checkName("volumeId", volumeId);
    const volume = this.volumes.get(volumeId);
    if (!volume) throw notFound(`volume ${volumeId} not found`);
    return volume;
  }

  private checkOpen(): void {
    if (this.closed) throw unavailable("the SAN node is stopping");
  }

  private add(volume: VolumeMeta): void {
    this.volumes.set(volume.volumeId, volume);
    this.allocated += volume.sizeMib;
  }

  private remove(volume: VolumeMeta): void {
    this.volumes.delete(volume.volumeId);
    this.allocated -= volume.sizeMib;
  }

  /** Creates (or truncates an orphan left by a crash) the sparse image and fsyncs it. */
  private async writeImage(volume: VolumeMeta): Promise<void> {
    const file = await open(join(this.volumesDir, imageFileName(volume.volumeId)), "w", 0o644);
    try {
      await file.truncate(volume.sizeMib * bytesPerMib);
      await file.sync();
    } finally {
      await file.close();
    }
  }

  private async removeQuietly(name: string): Promise<void> {
    await unlink(join(this.volumesDir, name)).catch((err: NodeJS.ErrnoException) => {
      // Cleanup after a failed create: a file that was never made is fine,
      // anything else is worth a line but must not hide the create's error.
      if (err.code !== "ENOENT") this.logger.warn({ file: name, err }, "could not remove a file of a failed create");
    });
  }

  /**
   * Loads every usable volume. A metadata file that does not parse, names
   * another volume or has no image of the right size is logged and skipped;
   * temp files left by a crash mid-write are removed.
   */
  private async scan(): Promise<void> {
    const names = (await readdir(this.volumesDir)).sort();
    const present = new Set(names);
    for (const name of names) {
      const path = join(this.volumesDir, name);
      if (name.endsWith(tempSuffix)) {
        await unlink(path).then(
          () => this.logger.info({ file: name }, "removed a temp file left by an interrupted write"),
          (err: unknown) => this.logger.warn({ file: name, err }, "could not remove a leftover temp file"),
        );
      } else if (name.endsWith(imageSuffix)) {
        const metaName = `${name.slice(0, -imageSuffix.length)}${metaSuffix}`;
        if (!present.has(metaName)) {
          this.logger.warn({ file: name }, "ignored an image without metadata (a create or delete was interrupted)");
        }
      } else if (name.endsWith(metaSuffix)) {
        const volumeId = name.slice(0, -metaSuffix.length);
        try {
          this.add(await this.loadVolume(volumeId, path));
        } catch (err) {
          this.logger.warn({ file: name, reason: (err as Error).message }, "skipped an unusable volume");
        }
      } else {
        this.logger.warn({ file: name }, "ignored a file that is not a volume's");
      }
    }
    if (this.allocated > this.capacityMib) {
      this.logger.warn(
        { allocatedMib: this.allocated, capacityMib: this.capacityMib },
        "volumes on disk exceed the capacity; new volumes will be refused",
      );
    }
    this.logger.info({ volumeCount: this.volumes.size, allocatedMib: this.allocated }, "scanned volumes");
  }

  private async loadVolume(volumeId: string, metaPath: string): Promise<VolumeMeta> {
    const metaStat = await stat(metaPath);
    if (!metaStat.isFile() || metaStat.size > metaFileBytesMax) {
      throw new Error(`not a metadata file of at most ${metaFileBytesMax} bytes`);
    }
    const meta = parseMeta(volumeId, await readFile(metaPath, "utf8"));
    let imageBytes: number;
    try {
      const image = await stat(join(this.volumesDir, imageFileName(volumeId)));
      imageBytes = image.isFile() ? image.size : -1;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") throw new Error("its image file is missing");
      throw err;
    }
    if (imageBytes !== meta.sizeMib * bytesPerMib) {
      throw new Error(`its image is ${imageBytes} bytes, not ${meta.sizeMib} MiB`);
    }
    if (this.volumes.size >= volumesMax) throw new Error(`the node already holds ${volumesMax} volumes, its limit`);
    return meta;
  }
}

/** Blocks in a volume. */
export function volumeBlockCount(volume: VolumeMeta): number {
  return (volume.sizeMib * bytesPerMib) / volume.blockSizeBytes;
}

/** @throws SimdcError INVALID_ARGUMENT when blocks [lba, lba + blockCount) are not all in the volume. */
function checkExtent(volume: VolumeMeta, lba: number, blockCount: number): void {
  const blocks = volumeBlockCount(volume);
  if (!Number.isInteger(lba) || lba < 0 || lba + blockCount > blocks) {
    throw invalidArgument(
      `blocks ${lba} to ${lba + blockCount - 1} are outside volume ${volume.volumeId} (blocks 0 to ${blocks - 1})`,
    );
  }
}

async function readFully(lease: Lease, buffer: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < buffer.length) {
    const { bytesRead } = await lease.file.read(buffer, done, buffer.length - done, position + done);
    if (bytesRead === 0) {
      // The image ends early (it was truncated behind our back); past its end
      // a volume reads as never written.
      buffer.fill(0, done);
      return;
    }
    done += bytesRead;
  }
}

async function writeFully(lease: Lease, data: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await lease.file.write(data, done, data.length - done, position + done);
    if (bytesWritten === 0) throw new Error(`the file system accepted no bytes at offset ${position + done}`);
    done += bytesWritten;
  }
}

/** Keeps typed errors; a full disk is RESOURCE_EXHAUSTED; anything else is INTERNAL with context. */
function ioFailure(op: string, volumeId: string, err: unknown): SimdcError {
  if (err instanceof SimdcError) return err;
  const code = (err as NodeJS.ErrnoException).code;
  if (code === "ENOSPC" || code === "EDQUOT") return new SimdcError("RESOURCE_EXHAUSTED", `${op} on volume ${volumeId}: the disk is full`, { cause: err });
  return new SimdcError("INTERNAL", `${op} on volume ${volumeId} failed: ${(err as Error).message}`, { cause: err });
}
