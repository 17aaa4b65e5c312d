// The named limits of a SAN node, in one place so the code, the settings and
// the tests agree. Each one says what it protects; none is enforced here (the
// block store and the endpoints do that).

/** Blocks one ReadBlocks or WriteBlocks may touch, so a message stays well under NATS's 1 MiB payload. */
export const blocksPerRequestMax = 128;

/** Smallest block size a node accepts, in bytes (a disk sector). */
export const blockSizeBytesMin = 512;

/**
 * Largest block size, in bytes. With blocksPerRequestMax this caps a request's
 * data at 512 KiB, half of NATS's default 1 MiB payload limit.
 */
export const blockSizeBytesMax = 4096;

/**
 * Largest single volume, in MiB (1 TiB). It keeps every block address within
 * the wire's uint32 lba at the smallest block size and far below ext4's file size limit.
 */
export const volumeSizeMibMax = 1_048_576;

/** Largest capacity a node may offer, in MiB (16 TiB); allocatedMib stays within uint32. */
export const capacityMibMax = 16_777_216;

/** Volumes one node holds; the scan and CreateBackingVolume refuse more. */
export const volumesMax = 4096;

/** Image files kept open between requests; least recently used idle ones are closed beyond it. */
export const openVolumesMaxDefault = 64;

/**
 * Block requests a node works on at once (its device queue depth); more wait
 * in line. It bounds the memory held by reply buffers (64 x 512 KiB = 32 MiB).
 */
export const blockRequestsInFlightMax = 64;

/**
 * Block requests waiting for a slot, first come first served, as an array's
 * queue holds I/O rather than failing it; past this they are refused
 * RESOURCE_EXHAUSTED, so a flood cannot exhaust memory.
 */
export const blockRequestsQueuedMax = 256;

/** Volume create/delete requests waiting their turn (they run one at a time). */
export const volumeOpsQueuedMax = 64;

/** One mebibyte, the unit of volume sizes. */
export const bytesPerMib = 1_048_576;

/** True when `value` is a block size this node accepts: a power of two within the bounds. */
export function isValidBlockSize(value: number): boolean {
  return (
    Number.isInteger(value) &&
    value >= blockSizeBytesMin &&
    value <= blockSizeBytesMax &&
    (value & (value - 1)) === 0
  );
}

/** The heartbeat intervals a node accepts from the controller, as the agent does. */
export const heartbeatIntervalMsMin = 50;
export const heartbeatIntervalMsMax = 60_000;
