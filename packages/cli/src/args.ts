// Command-line parsing for the CLI: each command declares its flags; unknown
// flags, missing values and malformed numbers are refused with one line.

import { parseArgs } from "node:util";
import { invalidArgument } from "@simdc/common";

export type FlagSpec = Record<string, { type: "string" | "boolean"; short?: string }>;

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

/** Exactly `count` positional arguments, named in the error. */
export function positionals(parsed: Parsed, names: string[]): string[] {
  if (parsed.positionals.length !== names.length) {
    const want = names.map((n) => `<${n}>`).join(" ");
    throw invalidArgument(`expected ${want || "no arguments"}, got ${parsed.positionals.length} argument(s)`);
  }
  return parsed.positionals;
}
