// Crash-safe small-file writes for the block store's metadata: a file is either
// its old content or its new content after a crash, never a torn mix. It does
// not lock anything; callers serialize writers of the same file.

import { open, rename, unlink } from "node:fs/promises";
import { join } from "node:path";

/** Suffix of the temporary file a write goes through; a scan may remove leftovers. */
export const tempSuffix = ".tmp";

/**
 * Writes `text` to `<dir>/<name>` atomically: write a temp file, fsync it,
 * rename it over the target, fsync the directory so the rename is durable.
 * @throws the file system's error; the temp file is removed on failure.
 */
export async function writeFileAtomic(dir: string, name: string, text: string): Promise<void> {
  const target = join(dir, name);
  const temp = `${target}${tempSuffix}`;
  const file = await open(temp, "w", 0o644);
  try {
    try {
      await file.writeFile(text, "utf8");
      await file.sync();
    } finally {
      await file.close();
    }
    await rename(temp, target);
  } catch (err) {
    await unlink(temp).catch(() => {
      // The temp file may not exist (open failed before creating it); the
      // original error is the one worth reporting.
    });
    throw err;
  }
  await syncDirectory(dir);
}

/**
 * fsyncs a directory, making file creations, renames and removals in it durable.
 * @throws the file system's error.
 */
export async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
