// A real nats-server for each test file, started with the cli's launcher on a
// free port with its own JetStream directory. A missing binary fails the test
// loudly (it never skips), since a test that did not run proves nothing.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { findNatsServer, startNatsServer, type NatsServerHandle } from "@simdc/cli";

export interface TestNats extends NatsServerHandle {
  storeDir: string;
  /** Stops the server and removes its store. */
  dispose(): Promise<void>;
}

export async function startTestNats(): Promise<TestNats> {
  const binary = findNatsServer();
  if (!binary) {
    throw new Error("nats-server is not installed: run `bash scripts/setup.sh` (tests need a real server)");
  }
  const storeDir = mkdtempSync(join(tmpdir(), "simdc-nats-"));
  const server = await startNatsServer(binary, { storeDir });
  return {
    ...server,
    storeDir,
    async dispose() {
      await server.stop();
      rmSync(storeDir, { recursive: true, force: true });
    },
  };
}

/** A fresh temporary directory, removed by the returned function. */
export function tempDir(prefix: string): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), `simdc-${prefix}-`));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}
