// Proves the CLI never loses output: a list of thousands of VMs piped into
// another program arrives whole (the old CLI exited while writes to the pipe
// were pending and printed 4,452 of 20,001 lines), and a reader that stops
// early (`| head`) ends the command quietly with exit status 0, not EPIPE.

import { spawnSync } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsConnection } from "nats";
import { simdc as proto } from "@simdc/proto";
import { cli, startUp, type UpDatacenter } from "./up-env.js";

import v1 = proto.v1;

const vmCount = 5_000;
let dc: UpDatacenter;
let nc: NatsConnection;

beforeAll(async () => {
  dc = await startUp(["--hosts", "5", "--hosts-per-agent", "5", "--san", "1", "--pcpus", "1024", "--memory-mib", "1048576"]);
  nc = await dc.nats();
  await nc.request("simdc.api.v1.StorageService.CreateVolume", v1.CreateVolumeRequest.encode({ name: "boot", sizeMib: 16 }).finish(), { timeout: 15_000 });
  let next = 0;
  await Promise.all(
    Array.from({ length: 64 }, async () => {
      for (let i = next++; i < vmCount; i = next++) {
        const reply = await nc.request(
          "simdc.api.v1.ComputeService.CreateVm",
          v1.CreateVmRequest.encode({ name: `vm-${String(i).padStart(5, "0")}`, spec: { vcpus: 1, memoryMib: 16, bootVolume: "boot" } }).finish(),
          { timeout: 15_000 },
        );
        if (reply.headers?.get("Nats-Service-Error")) throw new Error(reply.headers.get("Nats-Service-Error"));
      }
    }),
  );
}, 180_000);

afterAll(async () => {
  await nc?.close();
  await dc?.stop();
});

/** Runs a shell pipeline with the CLI as `simdc`; returns its exit status, stdout and stderr. */
function pipeline(command: string): { status: number | null; stdout: string; stderr: string } {
  const simdc = `${JSON.stringify(process.execPath)} ${JSON.stringify(cli)} --data-dir ${JSON.stringify(dc.dataDir)}`;
  const result = spawnSync("bash", ["-o", "pipefail", "-c", command.replaceAll("simdc", simdc)], { encoding: "utf8", timeout: 120_000, maxBuffer: 256 * 1024 * 1024 });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

describe("cli output", () => {
  it("cli output: a list piped into another program arrives whole", () => {
    const listed = pipeline("simdc vm list | wc -l");
    expect(listed.stderr).toBe("");
    expect(listed.status).toBe(0);
    expect(Number(listed.stdout.trim())).toBe(vmCount + 1);
    const asJson = pipeline("simdc -o json vm list | cat");
    expect((JSON.parse(asJson.stdout) as unknown[]).length).toBe(vmCount);
  });

  it("cli output: a reader that stops early ends the command quietly, with exit status 0", () => {
    for (const command of ["simdc vm list | head -1", "simdc status | head -1", "simdc -o json vm list | head -c 10"]) {
      const result = pipeline(command);
      expect(result.stderr, command).toBe("");
      expect(result.status, command).toBe(0);
      expect(result.stdout.length, command).toBeGreaterThan(0);
    }
  });
});
