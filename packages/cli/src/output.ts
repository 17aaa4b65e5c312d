// How the CLI prints: aligned tables for people, JSON (protobuf field names
// in camelCase, enums as names) for scripts.

import { simdc } from "@simdc/proto";

import v1 = simdc.v1;

export type OutputFormat = "table" | "json";

export function printTable(headers: string[], rows: string[][]): void {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
      .join("  ")
      .trimEnd();
  process.stdout.write(`${line(headers)}\n`);
  for (const row of rows) process.stdout.write(`${line(row)}\n`);
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** A protobuf message as plain JSON: enums by name, defaults included. */
export function plain(type: { toObject(m: any, o: object): object }, message: unknown): object {
  return type.toObject(message, { enums: String, defaults: true, arrays: true });
}

/** "VM_STATE_RUNNING" -> "running". */
export function enumName(enumObject: Record<number, string>, value: number, prefix: string): string {
  return (enumObject[value] ?? String(value)).replace(prefix, "").toLowerCase();
}

export const vmState = (s: number): string => enumName(v1.VmState, s, "VM_STATE_");
export const hostState = (s: number): string => enumName(v1.HostState, s, "HOST_STATE_");
export const powerState = (s: number): string => enumName(v1.PowerState, s, "POWER_STATE_");
export const processState = (s: number): string => enumName(v1.ProcessState, s, "PROCESS_STATE_");

export function ago(ms: number): string {
  if (!ms) return "-";
  const s = (Date.now() - ms) / 1000;
  return s < 60 ? `${s.toFixed(1)}s ago` : `${Math.round(s / 60)}m ago`;
}
