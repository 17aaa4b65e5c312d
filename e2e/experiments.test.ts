// Runs every built-in scenario in its short form through the real CLI, each
// on a fresh datacenter of real processes, and requires its assertions and
// checkers to pass; runs a scenario that breaks an invariant on purpose and
// requires the checker to catch and name it; proves the same seed gives the
// same schedule; and that Ctrl-C tears everything down and keeps the history.

import { execFile, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";
import { eventually } from "@simdc/testkit";
import { checkPage } from "./browser.js";
import { experimentCli } from "./experiment-cli.js";
import { cli } from "./up-env.js";

const run = promisify(execFile);
const here = dirname(fileURLToPath(import.meta.url));
const scenarios = readdirSync(join(here, "..", "scenarios")).filter((f) => f.endsWith(".yaml")).map((f) => f.slice(0, -5)).sort();
const dataDir = mkdtempSync(join(tmpdir(), "simdc-experiments-"));

const experiment = experimentCli(dataDir);

afterAll(() => {
  rmSync(dataDir, { recursive: true, force: true });
});

describe("experiments", () => {
  it("experiments: the built-in scenarios are listed, and each is a valid file", async () => {
    expect(scenarios).toEqual([
      "agent-crash",
      "controller-crash",
      "cpu-contention-relaxed",
      "cpu-contention-strict",
      "host-hang",
      "host-partition",
      "lossy-heartbeats",
      "memory-overcommit-vdi-salted",
      "memory-overcommit-vdi-shared",
      "san-crash-during-boot",
      "sdn-churn-proactive",
      "sdn-churn-reactive",
      "sdn-converged-nic",
      "sdn-link-down",
      "sdn-nic-queue",
      "sdn-outage-secure",
      "sdn-outage-standalone",
      "sdn-outside-outage",
      "shares-vs-reservations",
      "slow-controller",
    ]);
    const listed = (await experiment("list")).stdout;
    for (const name of scenarios) expect(listed).toMatch(new RegExp(`^${name}\\s+\\S`, "m"));
    expect((await experiment("show", "agent-crash")).stdout).toContain("name: agent-crash");
  });

  for (const name of scenarios) {
    it(`experiments: ${name} (short form) passes its assertions and checkers`, async () => {
      const out = join(dataDir, `out-${name}`);
      const result = await experiment("run", name, "--short", "--seed", "17", "--out", out);
      if (result.code !== 0) throw new Error(`${name} failed (exit ${result.code}):\n${result.stderr}\n${result.stdout}`);
      expect(result.stdout).toMatch(new RegExp(`^${name}: 1 of 1 runs passed`));
      expect(result.stderr).toContain(`seed 17; again: simdc experiment run ${name} --seed 17 --short`);
      const summary = readFileSync(join(out, "summary.md"), "utf8");
      expect(summary).toMatch(new RegExp(`^# Experiment ${name}: PASSED`));
      for (const checker of ["vm-on-one-host", "acknowledged-kept", "vms-running", "hosts-connected", "flows-match-intent"]) expect(summary).toMatch(new RegExp(`\\| ok \\| checker \\| ${checker} \\|`));
      const history = readFileSync(join(out, "history.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l) as { type: string });
      expect(history.filter((e) => e.type === "run")).toHaveLength(1);
      expect(history.filter((e) => e.type === "step").length).toBeGreaterThan(0);
      expect(history.filter((e) => e.type === "final")).toHaveLength(1);
      expect(readdirSync(join(out, "logs"))).toContain("controller-1.log");
      // The report opens in a real browser with no errors, and the charting library drew every chart.
      const page = await checkPage(join(out, "report.html"));
      expect(page.errors).toEqual([]);
      expect(page.title).toBe(`simdc experiment ${name}: PASSED`);
      expect(page.charts.map((c) => c.id)).toEqual(["chart-hosts", "chart-vms", "chart-latency", "chart-api", "chart-faults", "chart-ping", "chart-flows", "chart-hv-memory", "chart-hv-cpu", "chart-timeline"]);
      // An empty chart still draws its axes (a few thousand pixels); nothing drawn is zero.
      for (const c of page.charts) expect(c.paintedPixels, c.id).toBeGreaterThan(1_000);
    }, 180_000);
  }

  it("experiments: --repeat runs several seeds and aggregates each metric; compare sets two results side by side", async () => {
    const out = join(dataDir, "out-repeat");
    const result = await experiment("run", "host-partition", "--short", "--seed", "30", "--repeat", "2", "--out", out);
    if (result.code !== 0) throw new Error(`repeat failed (exit ${result.code}):\n${result.stderr}`);
    expect(result.stdout).toMatch(/^host-partition: 2 of 2 runs passed/);
    expect(result.stdout).toMatch(/^detected-within\.max\s+2\s+\d+/m);
    expect(readFileSync(join(out, "aggregate.md"), "utf8")).toMatch(/^# host-partition: 2 runs, 0 failed\n[\s\S]*\| detected-within\.max \| 2 \| /);
    expect(readdirSync(out).sort()).toEqual(["aggregate.md", "seed-30", "seed-31"]);
    const compared = (await experiment("compare", join(dataDir, "out-agent-crash"), out)).stdout;
    expect(compared).toMatch(/^METRIC\s+A: MEDIAN \(SPREAD\)\s+B: MEDIAN \(SPREAD\)\s+B - A\s+B \/ A/);
    expect(compared).toMatch(/^detected-within\.max\s+\d+ \(\d+-\d+, 1 runs\)\s+\d+ \(\d+-\d+, 2 runs\)\s+-?\d+\s+[\d.]+x/m);
    expect((await experiment("compare", out, join(dataDir, "nothing-here"))).code).toBe(1);
  }, 240_000);

  it("experiments: swarm runs a random fault schedule from a seed, heals, and judges it with the checkers", async () => {
    const out = join(dataDir, "out-swarm");
    const result = await experiment("swarm", "--runs", "1", "--seed", "101", "--out", out);
    if (result.code !== 0) throw new Error(`swarm failed (exit ${result.code}):\n${result.stderr}`);
    expect(result.stdout).toBe("swarm: 1 of 1 runs passed\n");
    expect(readFileSync(join(out, "seed-101", "scenario.yaml"), "utf8")).toMatch(/^name: swarm-101\n/);
    // The kept scenario runs again as a file, with the same schedule.
    const plan = (await experiment("run", join(out, "seed-101", "scenario.yaml"), "--plan")).stdout;
    expect(plan).toMatch(/^seed 101\s+at\s+0\.500 s\s+load \(create-vms\)/);
    expect(plan).toMatch(/heal \(clear-bus\)\n$/);
  }, 120_000);

  it("experiments: a VM started on a second host by a test-only fault is caught by the checker, which names both hosts", async () => {
    const result = await experiment("run", join(here, "scenarios", "vm-runs-twice.yaml"), "--seed", "3", "--out", join(dataDir, "out-twice"));
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/FAILED checker vm-on-one-host: vm solo is (starting|running) on host-2 at \+[\d.]+ s while host-1 still runs it/);
    expect(result.stderr).toMatch(/simdc: FAILED_PRECONDITION: 1 of 1 runs broke an assertion or a checker \(seeds 3\)/);
    expect(readFileSync(join(dataDir, "out-twice", "summary.md"), "utf8")).toMatch(/^# Experiment vm-runs-twice: FAILED/);
  }, 120_000);

  it("experiments: the same seed gives the same schedule, other seeds others", async () => {
    const plan = async (seed: number): Promise<string> => (await experiment("run", "agent-crash", "--seed", String(seed), "--plan")).stdout;
    expect(await plan(42)).toBe(await plan(42));
    const schedules = new Set(await Promise.all([1, 2, 3, 4].map(plan)));
    expect(schedules.size).toBe(4);
  });

  it("experiments: a container fault without --docker is refused before anything starts", async () => {
    const result = await experiment("run", join(here, "scenarios", "network-cut.yaml"), "--seed", "5");
    expect(result.code).toBe(2);
    expect(result.stderr.trim()).toBe("simdc: INVALID_ARGUMENT: network-cut.yaml:17: disconnect works only with --docker");
  });

  it("experiments: a bad scenario is refused naming its line, before anything starts", async () => {
    const bad = join(dataDir, "bad.yaml");
    await run("bash", ["-c", `printf 'name: bad\\ntimeline:\\n  - at: 1s\\n    do: kill\\n    process: agent-9\\nduration: 5s\\n' > ${bad}`]);
    const result = await experiment("run", bad);
    expect(result.code).toBe(2);
    expect(result.stderr.trim()).toBe("simdc: INVALID_ARGUMENT: bad.yaml:5: no process agent-9; this topology has nats, controller-1, san-1, agent-1, agent-2");
    expect(existsSync(join(dataDir, "experiments"))).toBe(false);
  });

  it("experiments: Ctrl-C tears the datacenter down and still writes the history so far", async () => {
    const out = join(dataDir, "out-interrupted");
    const child = spawn(process.execPath, [cli, "--data-dir", dataDir, "experiment", "run", "agent-crash", "--short", "--seed", "5", "--out", out], { stdio: ["ignore", "pipe", "pipe"] });
    let stderr = "";
    child.stderr!.on("data", (c: Buffer) => (stderr += c.toString()));
    await eventually("the timeline started", () => (stderr.includes("timeline:") ? true : undefined), 60_000);
    child.kill("SIGINT");
    const code = await new Promise<number | null>((resolve) => child.once("exit", resolve));
    expect(code).toBe(130);
    expect(stderr).toContain("interrupted: the datacenter is down and the history so far is written");
    const history = readFileSync(join(out, "history.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l) as { type: string });
    expect(history.some((e) => e.type === "run")).toBe(true);
    expect(history.some((e) => e.type === "final")).toBe(true);
    // Nothing of that datacenter runs on: no process names its data directory.
    const { stdout } = await run("ps", ["-eo", "args"]);
    expect(stdout.split("\n").filter((l) => l.includes("simdc-experiment-agent-crash-"))).toEqual([]);
  }, 120_000);
});

