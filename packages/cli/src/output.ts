// How the CLI prints: aligned tables for people, JSON (protobuf field names
// in camelCase, enums as names) for scripts. Output is never lost: the
// process exits only once stdout has taken everything, and a reader that
// goes away (`simdc vm list | head`) ends the command quietly, not with a
// stack trace.

import { simdc } from "@simdc/proto";
import { wallNowMs } from "@simdc/common";

import v1 = simdc.v1;

export type OutputFormat = "table" | "json";

/** Writes text to stdout (buffered by Node until the pipe takes it). */
export function out(text: string): void {
  process.stdout.write(text);
}

/**
 * Resolves once everything written to stdout has been handed to the OS, so
 * the process may exit without losing output.
 */
export function flushStdout(): Promise<void> {
  return new Promise((resolve) => {
    if (process.stdout.writableLength === 0) return resolve();
    process.stdout.write("", () => resolve());
  });
}

/** A closed pipe on stdout means the reader has all it wants: exit 0 without a word. */
export function quietOnClosedPipe(): void {
  process.stdout.on("error", (err: NodeJS.ErrnoException) => {
    if (err.code === "EPIPE") process.exit(0);
    throw err;
  });
}

export function printTable(headers: string[], rows: string[][]): void {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
      .join("  ")
      .trimEnd();
  // One write for the whole table: thousands of small writes to a pipe are slow.
  out(`${[line(headers), ...rows.map(line)].join("\n")}\n`);
}

export function printJson(value: unknown): void {
  out(`${JSON.stringify(value, null, 2)}\n`);
}

/** A protobuf message as plain JSON: enums by name, defaults included. */
export function plain(type: { toObject(m: any, o: object): object }, message: unknown): object {
  return type.toObject(message, { enums: String, longs: Number, defaults: true, arrays: true });
}

/** "VM_STATE_RUNNING" -> "running". */
export function enumName(enumObject: Record<number, string>, value: number, prefix: string): string {
  return (enumObject[value] ?? String(value)).replace(prefix, "").toLowerCase();
}

export const vmState = (s: number): string => enumName(v1.VmState, s, "VM_STATE_");
export const hostState = (s: number): string => enumName(v1.HostState, s, "HOST_STATE_");
export const powerState = (s: number): string => enumName(v1.PowerState, s, "POWER_STATE_");
export const processState = (s: number): string => enumName(v1.ProcessState, s, "PROCESS_STATE_");
export const volumeState = (s: number): string => enumName(v1.VolumeState, s, "VOLUME_STATE_");

/** How long ago a simulated or wall time was, from `nowMs` (the datacenter's simulated now when known). */
export function ago(ms: number, nowMs = wallNowMs()): string {
  if (!ms) return "-";
  const s = (nowMs - ms) / 1000;
  return s < 60 ? `${s.toFixed(1)}s ago` : `${Math.round(s / 60)}m ago`;
}
