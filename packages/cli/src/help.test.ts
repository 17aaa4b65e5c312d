// Proves --help works on every command and names every flag the commands
// that take the most flags accept, so help and parser cannot drift apart.

import { execFileSync } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { help } from "./help.js";
import { upFlags } from "./commands/up.js";
import { mutationFlags, vmCreateFlags } from "./commands/resources.js";

const cli = join(dirname(fileURLToPath(import.meta.url)), "..", "dist", "main.js");

describe("help", () => {
  it("help: every flag of up, vm create and the changing commands is in their help", () => {
    for (const flag of Object.keys(upFlags)) expect(help["up"], flag).toContain(`--${flag}`);
    for (const flag of Object.keys({ ...vmCreateFlags, ...mutationFlags })) expect(help["vm"], flag).toContain(`--${flag}`);
    for (const flag of Object.keys(mutationFlags)) expect(help["volume"], flag).toContain(`--${flag}`);
  });

  it("help: --help on every command and subcommand prints its help and exits 0, with no server needed", () => {
    for (const command of Object.keys(help)) {
      for (const args of [[command, "--help"], [command, "list", "-h"], [command, "create", "x", "--help"]]) {
        const printed = execFileSync(process.execPath, [cli, ...args], { encoding: "utf8", env: { ...process.env, NATS_URL: "nats://127.0.0.1:1" } });
        expect(printed.startsWith(`simdc ${command}`), `${args.join(" ")}: ${printed.slice(0, 80)}`).toBe(true);
        expect(printed).toContain("Global flags");
      }
    }
    expect(execFileSync(process.execPath, [cli, "--version"], { encoding: "utf8" })).toMatch(/^simdc \d+\.\d+\.\d+\n$/);
  });
});
