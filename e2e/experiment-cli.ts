// Runs `simdc experiment ...` as a user would, against a data directory of
// the test's own, and returns its exit code and output whatever they are.

import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { cli } from "./up-env.js";

const run = promisify(execFile);

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export function experimentCli(dataDir: string): (...args: string[]) => Promise<CliResult> {
  return async (...args) => {
    try {
      const { stdout, stderr } = await run(process.execPath, [cli, "--data-dir", dataDir, "experiment", ...args], { timeout: 300_000, maxBuffer: 64 * 1024 * 1024 });
      return { code: 0, stdout, stderr };
    } catch (err) {
      const e = err as CliResult;
      return { code: e.code, stdout: e.stdout, stderr: e.stderr };
    }
  };
}
