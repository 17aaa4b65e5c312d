// Reads a process's settings from command-line flags, then environment
// variables, then defaults, and checks each one, so a bad flag ends the
// process with one clear line before anything starts.

import { parseArgs } from "node:util";
import { invalidArgument } from "./errors.js";

export type SettingKind = "string" | "int" | "number" | "bool";

export interface Setting<K extends SettingKind = SettingKind> {
  kind: K;
  /** Environment variable consulted when the flag is absent. */
  env?: string;
  default?: K extends "int" | "number" ? number : K extends "bool" ? boolean : string;
  /** Inclusive bounds for ints. */
  min?: number;
  max?: number;
  help: string;
}

export type SettingsSpec = Record<string, Setting>;

type ValueOf<S extends Setting> = S["kind"] extends "int" | "number"
  ? number
  : S["kind"] extends "bool"
    ? boolean
    : string;

export type Settings<T extends SettingsSpec> = { [K in keyof T]: ValueOf<T[K]> };

/**
 * Parses `argv` against `spec` (flag names are the spec's keys, in kebab-case).
 * @throws SimdcError INVALID_ARGUMENT for unknown flags, missing required
 * settings and values that are not of their kind or out of range.
 */
export function readSettings<T extends SettingsSpec>(
  spec: T,
  argv: string[],
  env: NodeJS.ProcessEnv = process.env,
): Settings<T> {
  const options: Record<string, { type: "string" | "boolean" }> = {};
  for (const [flag, setting] of Object.entries(spec)) {
    options[flag] = { type: setting.kind === "bool" ? "boolean" : "string" };
  }
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({ args: argv, options, strict: true, allowPositionals: false }) as {
      values: Record<string, string | boolean | undefined>;
    });
  } catch (err) {
    throw invalidArgument((err as Error).message);
  }
  const out: Record<string, unknown> = {};
  for (const [flag, setting] of Object.entries(spec)) {
    const raw = values[flag] ?? (setting.env !== undefined ? env[setting.env] : undefined);
    if (raw === undefined || raw === "") {
      if (setting.default === undefined) {
        throw invalidArgument(`--${flag} is required (${setting.help})`);
      }
      out[flag] = setting.default;
      continue;
    }
    out[flag] = convert(flag, setting, raw);
  }
  return out as Settings<T>;
}

function convert(flag: string, setting: Setting, raw: string | boolean): unknown {
  if (setting.kind === "bool") {
    if (typeof raw === "boolean") return raw;
    if (raw === "true" || raw === "1") return true;
    if (raw === "false" || raw === "0") return false;
    throw invalidArgument(`--${flag} must be true or false, got ${JSON.stringify(raw)}`);
  }
  const text = String(raw);
  if (setting.kind === "string") return text;
  const value = Number(text);
  const min = setting.min ?? Number.MIN_SAFE_INTEGER;
  const max = setting.max ?? Number.MAX_SAFE_INTEGER;
  const shape = setting.kind === "int" ? /^-?\d+$/ : /^-?\d+(\.\d+)?$/;
  if (!shape.test(text) || value < min || value > max) {
    const what = setting.kind === "int" ? "an integer" : "a number";
    throw invalidArgument(`--${flag} must be ${what} from ${min} to ${max}, got ${JSON.stringify(text)}`);
  }
  return value;
}

/** One line a setting, for --help. */
export function describeSettings(spec: SettingsSpec): string {
  return Object.entries(spec)
    .map(([flag, s]) => {
      const env = s.env ? ` [env ${s.env}]` : "";
      const def = s.default !== undefined ? ` (default ${JSON.stringify(s.default)})` : "";
      return `  --${flag}  ${s.help}${env}${def}`;
    })
    .join("\n");
}
