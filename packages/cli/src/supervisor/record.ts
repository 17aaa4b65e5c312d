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
  startedAtMs: number;
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
  const path = recordPath(dataDir);
  if (!existsSync(path)) return null;
  try {
    const record = JSON.parse(readFileSync(path, "utf8")) as UpRecord;
    return isAlive(record.supervisorPid) ? record : null;
  } catch {
    // A half-written or foreign file means no usable record.
    return null;
  }
}

export function removeUpRecord(dataDir: string): void {
  rmSync(recordPath(dataDir), { force: true });
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
