// Command-line parsing for the CLI: each command declares its flags; unknown
// flags, missing values and malformed numbers are refused with one line.

import { parseArgs } from "node:util";
import { invalidArgument } from "@simdc/common";

export type FlagSpec = Record<string, { type: "string" | "boolean"; short?: string; multiple?: boolean }>;

export interface Parsed {
  flags: Record<string, string | boolean | undefined>;
  positionals: string[];
}

export function parse(argv: string[], spec: FlagSpec): Parsed {
  try {
    const { values, positionals } = parseArgs({ args: argv, options: spec, strict: true, allowPositionals: true });
    return { flags: values as Parsed["flags"], positionals };
  } catch (err) {
    throw invalidArgument((err as Error).message.split("\n")[0] ?? "bad arguments");
  }
}

/** A whole number flag within [min, max], or `fallback` when absent. */
export function intFlag(flags: Parsed["flags"], name: string, fallback: number, min: number, max: number): number {
  const raw = flags[name];
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (typeof raw !== "string" || !/^\d+$/.test(raw) || value < min || value > max) {
    throw invalidArgument(`--${name} must be a whole number from ${min} to ${max}, got ${JSON.stringify(raw)}`);
  }
  return value;
}

export function numberFlag(flags: Parsed["flags"], name: string, fallback: number, min: number, max: number): number {
  const raw = flags[name];
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (typeof raw !== "string" || !/^\d+(\.\d+)?$/.test(raw) || value < min || value > max) {
    throw invalidArgument(`--${name} must be a number from ${min} to ${max}, got ${JSON.stringify(raw)}`);
  }
  return value;
}

export function stringFlag(flags: Parsed["flags"], name: string): string | undefined {
  const raw = flags[name];
  return typeof raw === "string" ? raw : undefined;
}

/** One of `choices` (the first when the flag is absent). @throws SimdcError INVALID_ARGUMENT. */
export function choiceFlag(flags: Parsed["flags"], name: string, choices: readonly [string, ...string[]]): string {
  const value = stringFlag(flags, name) ?? choices[0];
  if (!choices.includes(value)) throw invalidArgument(`--${name} must be ${choices.join(" or ")}, got ${JSON.stringify(value)}`);
  return value;
}

/** Exactly `count` positional arguments, named in the error. */
export function positionals(parsed: Parsed, names: string[]): string[] {
  if (parsed.positionals.length !== names.length) {
    const want = names.map((n) => `<${n}>`).join(" ");
    throw invalidArgument(`expected ${want || "no arguments"}, got ${parsed.positionals.length} argument(s)`);
  }
  return parsed.positionals;
}

const durationUnits: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 };

/**
 * A duration like "500ms", "30s", "2m", "1h" (or "1.5s"), in ms.
 * @throws SimdcError INVALID_ARGUMENT for anything else or a value past `maxMs`.
 */
export function parseDuration(what: string, raw: string, maxMs = 7 * 24 * 3_600_000): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(raw.trim());
  const ms = m ? Number(m[1]) * durationUnits[m[2]!]! : NaN;
  if (!(ms >= 0) || ms > maxMs) throw invalidArgument(`${what} must be a duration like 500ms, 30s, 2m or 1h (at most ${maxMs / 1000} s), got ${JSON.stringify(raw)}`);
  return Math.round(ms);
}

/** A duration flag in ms, or `fallback` when absent. */
export function durationFlag(flags: Parsed["flags"], name: string, fallback: number, maxMs?: number): number {
  const raw = stringFlag(flags, name);
  return raw === undefined ? fallback : parseDuration(`--${name}`, raw, maxMs);
}
