// What `simdc up` records in its data directory so that other invocations of
// the CLI find the running datacenter (its NATS URL and prefix) and its
// supervisor.

import { existsSync, readFileSync, rmSync, writeFileSync, renameSync } from "node:fs";
import { join } from "node:path";

export interface UpRecord {
  natsUrl: string;
  prefix: string;
  supervisorPid: number;
  dataDir: string;
  /** The run's time origin (simulated and wall time coincide here) and scale. */
  startedAtMs: number;
  timeScale?: number;
  /**
   * The pid of every process the supervisor started, kept current, so that
   * `simdc down` can still stop them if the supervisor itself was killed.
   */
  pids: Record<string, number>;
}

const fileName = "up.json";

export function recordPath(dataDir: string): string {
  return join(dataDir, fileName);
}

export function writeUpRecord(record: UpRecord): void {
  const path = recordPath(record.dataDir);
  writeFileSync(`${path}.tmp`, JSON.stringify(record, null, 2));
  renameSync(`${path}.tmp`, path);
}

/** The record, or null when no `simdc up` runs from this data directory. */
export function readUpRecord(dataDir: string): UpRecord | null {
  const record = readAnyUpRecord(dataDir);
  return record && isAlive(record.supervisorPid) ? record : null;
}

/** The record even when its supervisor is gone (its children may live on). */
export function readAnyUpRecord(dataDir: string): UpRecord | null {
  const path = recordPath(dataDir);
  if (!existsSync(path)) return null;
  try {
    return JSON.parse(readFileSync(path, "utf8")) as UpRecord;
  } catch {
    // A half-written or foreign file means no usable record.
    return null;
  }
}

export function removeUpRecord(dataDir: string): void {
  rmSync(recordPath(dataDir), { force: true });
}

/**
 * True when `pid` still runs and is one of the record's processes, judged by
 * its command line naming the record's NATS URL or data dir, so a pid the
 * system has since reused is never signalled.
 */
export function isRecordedProcess(pid: number, record: UpRecord): boolean {
  if (!isAlive(pid)) return false;
  try {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8");
    return cmdline.includes(record.natsUrl) || cmdline.includes(record.dataDir);
  } catch {
    // No /proc (not Linux) or the process just ended: do not signal it.
    return false;
  }
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    // ESRCH: no such process.
    return false;
  }
}
