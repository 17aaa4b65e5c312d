// Starts simdc services as real child processes for tests, with the cli's
// launcher, and reads their JSON logs.

import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";
import { launchNodeProcess, type NodeProcess } from "@simdc/cli";

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");

export type ServiceName = "controller" | "host-agent" | "san-storage";

/** The built entry point of a service (run `npm run build` first). */
export function serviceScript(service: ServiceName): string {
  return join(repoRoot, "packages", service, "dist", "main.js");
}

export interface TestService extends NodeProcess {
  /** Everything the process printed so far. */
  output(): string;
}

/** Starts a service with flags; its output is captured for assertions and failures. */
export function startService(service: ServiceName, args: string[], env: NodeJS.ProcessEnv = {}): TestService {
  const proc = launchNodeProcess({ script: serviceScript(service), args, env: { LOG_LEVEL: "info", ...env } });
  let out = "";
  proc.child.stdout?.on("data", (chunk: Buffer) => (out += chunk.toString()));
  proc.child.stderr?.on("data", (chunk: Buffer) => (out += chunk.toString()));
  return { ...proc, output: () => out };
}
