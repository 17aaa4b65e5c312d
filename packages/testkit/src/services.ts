// Starts simdc services as real child processes for tests, with the cli's
// launcher, and keeps what they print for assertions and failure messages.
// Settings come only from the test: inherited SIMDC_* and NATS_URL variables
// are dropped, so a developer's shell cannot change what a test runs.

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
  stdout(): string;
  stderr(): string;
  /** Both streams, interleaved as they arrived. */
  output(): string;
}

/** Starts a service with flags and extra environment; LOG_LEVEL defaults to info. */
export function startService(service: ServiceName, args: string[], env: NodeJS.ProcessEnv = {}): TestService {
  const inherited = Object.fromEntries(
    Object.entries(process.env).filter(([key]) => !key.startsWith("SIMDC_") && key !== "NATS_URL"),
  );
  const proc = launchNodeProcess({
    script: serviceScript(service),
    args,
    env: { ...inherited, LOG_LEVEL: process.env["LOG_LEVEL"] ?? "info", ...env },
  });
  let stdout = "";
  let stderr = "";
  let both = "";
  proc.child.stdout?.on("data", (chunk: Buffer) => {
    stdout += chunk.toString();
    both += chunk.toString();
  });
  proc.child.stderr?.on("data", (chunk: Buffer) => {
    stderr += chunk.toString();
    both += chunk.toString();
  });
  return { ...proc, stdout: () => stdout, stderr: () => stderr, output: () => both };
}
