// The metadata file that makes a volume exist: `<volumeId>.json` beside its
// image `<volumeId>.img`. This module owns the file names and the JSON format
// and checks every field when reading; it does no I/O itself.

import { checkName, isValidName } from "@simdc/common";
import { isValidBlockSize, volumeSizeMibMax } from "./limits.js";

/** What a volume's metadata file records. */
export interface VolumeMeta {
  volumeId: string;
  sizeMib: number;
  /** Fixed when the volume is created; a node setting changed later does not re-address it. */
  blockSizeBytes: number;
  /** Unix time in ms. */
  createdAtMs: number;
  /** The controller's incarnation of the volume ("" for volumes of format 1). */
  incarnation: string;
  /** The datacenter state the volume was created under ("" for format 1). */
  stateId: string;
}

/** Version of the JSON layout, so a later format can tell old files apart; format 1 had no incarnation. */
export const metaFormatVersion = 2;
const incarnationLengthMax = 64;

/** Largest metadata file a scan reads, in bytes; anything bigger is not ours. */
export const metaFileBytesMax = 4096;

export const metaSuffix = ".json";
export const imageSuffix = ".img";

/**
 * The metadata file name of a volume.
 * @throws SimdcError INVALID_ARGUMENT when the id is not a valid name (so no
 * id such as `../x` ever becomes a path).
 */
export function metaFileName(volumeId: string): string {
  return `${checkName("volumeId", volumeId)}${metaSuffix}`;
}

/**
 * The image file name of a volume.
 * @throws SimdcError INVALID_ARGUMENT when the id is not a valid name.
 */
export function imageFileName(volumeId: string): string {
  return `${checkName("volumeId", volumeId)}${imageSuffix}`;
}

/** The JSON text of a metadata file. */
export function encodeMeta(meta: VolumeMeta): string {
  return `${JSON.stringify({ version: metaFormatVersion, ...meta })}\n`;
}

/**
 * Parses and checks a metadata file found on disk under the name `<volumeId>.json`.
 * @throws Error saying what is wrong (bad JSON, a missing or out-of-range field,
 * an id that differs from the file name).
 */
export function parseMeta(volumeId: string, text: string): VolumeMeta {
  if (!isValidName(volumeId)) throw new Error(`file name ${JSON.stringify(volumeId)} is not a valid volume id`);
  const value: unknown = JSON.parse(text);
  if (typeof value !== "object" || value === null) throw new Error("not a JSON object");
  const record = value as Record<string, unknown>;
  const version = record["version"];
  if (version !== metaFormatVersion && version !== 1) throw new Error(`unknown version ${JSON.stringify(version)}`);
  if (record["volumeId"] !== volumeId) {
    throw new Error(`volumeId ${JSON.stringify(record["volumeId"])} differs from the file name`);
  }
  const sizeMib = record["sizeMib"];
  if (typeof sizeMib !== "number" || !Number.isInteger(sizeMib) || sizeMib < 1 || sizeMib > volumeSizeMibMax) {
    throw new Error(`sizeMib ${JSON.stringify(sizeMib)} is not an integer from 1 to ${volumeSizeMibMax}`);
  }
  const blockSizeBytes = record["blockSizeBytes"];
  if (typeof blockSizeBytes !== "number" || !isValidBlockSize(blockSizeBytes)) {
    throw new Error(`blockSizeBytes ${JSON.stringify(blockSizeBytes)} is not a supported block size`);
  }
  const createdAtMs = record["createdAtMs"];
  if (typeof createdAtMs !== "number" || !Number.isFinite(createdAtMs) || createdAtMs < 0) {
    throw new Error(`createdAtMs ${JSON.stringify(createdAtMs)} is not a time`);
  }
  const incarnation = version === 1 ? "" : record["incarnation"];
  const stateId = version === 1 ? "" : record["stateId"];
  for (const [field, value] of [["incarnation", incarnation], ["stateId", stateId]] as const) {
    if (typeof value !== "string" || value.length > incarnationLengthMax) throw new Error(`${field} ${JSON.stringify(value)} is not a string of at most ${incarnationLengthMax} characters`);
  }
  return { volumeId, sizeMib, blockSizeBytes, createdAtMs, incarnation: incarnation as string, stateId: stateId as string };
}
