// simdc experiment list|show|run: fault-injection experiments from scenario
// files (the built-in ones by name, or any file), each run on a fresh
// datacenter, judged by its assertions and the history checkers.

import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { freemem, totalmem } from "node:os";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { freshSeed, invalidArgument, notFound, SimdcError, seedMax } from "@simdc/common";
import { aggregate, builtinParts, parseScenario, planRun, scenarioSchema, swarmScenario, type Parts, type Plan, type RunMode, type RunResult, type Scenario } from "@simdc/experiment";
import { intFlag, parse, positionals, stringFlag } from "../args.js";
import type { GlobalOptions } from "../context.js";
import { out, printJson, printTable } from "../output.js";
import { runExperiment } from "../experiment/runner.js";
import type { CommandContext } from "./resources.js";

/** The built-in scenarios ship in the repository's scenarios/ directory. */
export const scenariosDir = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "..", "scenarios");

const usage =
  "usage: simdc experiment list | show <name|file> | schema | run <name|file> [--seed N] [--short] [--repeat K] [--out DIR] [--plan] [--docker] | compare <dir> <dir> | swarm [--runs N] [--seed S] [--docker]";

/** A built-in scenario's file by name, or the file given. */
function scenarioFile(nameOrFile: string): string {
  if (existsSync(nameOrFile)) return resolve(nameOrFile);
  const builtin = join(scenariosDir, `${nameOrFile}.yaml`);
  if (existsSync(builtin)) return builtin;
  throw notFound(`no scenario ${nameOrFile}: not a file, and not one of ${builtinNames().join(", ")}`);
}

function builtinNames(): string[] {
  return existsSync(scenariosDir) ? readdirSync(scenariosDir).filter((f) => f.endsWith(".yaml")).map((f) => f.slice(0, -5)).sort() : [];
}

export async function experimentCommand(global: GlobalOptions, ctx: CommandContext, verb: string | undefined, argv: string[]): Promise<void> {
  const parts = builtinParts();
  switch (verb) {
    case "list": {
      positionals(parse(argv, {}), []);
      const rows = builtinNames().map((name) => {
        const { scenario } = parseScenario(readFileSync(join(scenariosDir, `${name}.yaml`), "utf8"), `${name}.yaml`, parts);
        return { name, description: scenario.description };
      });
      if (ctx.output === "json") return printJson(rows);
      printTable(["SCENARIO", "WHAT IT DOES"], rows.map((r) => [r.name, r.description]));
      return;
    }
    case "show": {
      const [name] = positionals(parse(argv, {}), ["name|file"]);
      const file = scenarioFile(name!);
      const text = readFileSync(file, "utf8");
      // Checked as a run would check it, so show also validates a file.
      parseScenario(text, basename(file), parts);
      out(text.endsWith("\n") ? text : `${text}\n`);
      return;
    }
    case "schema": {
      positionals(parse(argv, {}), []);
      printJson(scenarioSchema(parts));
      return;
    }
    case "run":
      return runCommand(global, ctx, argv);
    case "compare":
      return compareCommand(ctx, argv);
    case "swarm":
      return swarmCommand(global, ctx, argv);
    default:
      throw invalidArgument(usage);
  }
}

async function runCommand(global: GlobalOptions, ctx: CommandContext, argv: string[]): Promise<void> {
  const parsed = parse(argv, { seed: { type: "string" }, short: { type: "boolean" }, repeat: { type: "string" }, out: { type: "string" }, plan: { type: "boolean" }, docker: { type: "boolean" } });
  const mode = parsed.flags["docker"] ? "docker" : "local";
  const [name] = positionals(parsed, ["name|file"]);
  const file = scenarioFile(name!);
  const parts = builtinParts();
  const short = parsed.flags["short"] === true;
  const { scenario, source } = parseScenario(readFileSync(file, "utf8"), basename(file), parts, { short });
  const repeat = intFlag(parsed.flags, "repeat", 1, 1, 1000);
  const firstSeed = intFlag(parsed.flags, "seed", scenario.seed ?? freshSeed(), 0, seedMax);
  // Every seed's plan is checked before the first run starts.
  const machineMib = totalmem() / 1024 / 1024;
  const seeds = Array.from({ length: repeat }, (_, i) => (firstSeed + i) % (seedMax + 1));
  const plans = seeds.map((seed) => planRun(scenario, source, parts, seed, machineMib, mode));
  if (parsed.flags["plan"]) {
    // The schedule each seed gives, and nothing started.
    if (ctx.output === "json") return printJson(plans.map((p) => ({ seed: p.seed, steps: p.steps.map((s) => ({ id: s.id, do: s.do, atMs: s.atMs, fault: s.fault })) })));
    for (const p of plans) for (const s of p.steps) out(`seed ${p.seed}  at ${(s.atMs / 1000).toFixed(3).padStart(8)} s  ${s.id} (${s.do}${s.fault ? ", fault" : ""})\n`);
    return;
  }
  const base = resolve(stringFlag(parsed.flags, "out") ?? join(global.dataDir, "experiments", `${scenario.name}-${new Date().toISOString().replaceAll(":", "").slice(0, 15)}`));
  const results = await runAll(
    plans.map((plan, i) => ({
      scenario,
      plan,
      outDir: repeat === 1 ? base : join(base, `seed-${plan.seed}`),
      again: `simdc experiment run ${name} --seed ${plan.seed}${short ? " --short" : ""}${mode === "docker" ? " --docker" : ""}`,
      label: repeat > 1 ? ` (run ${i + 1} of ${repeat})` : "",
    })),
    parts,
    mode,
  );
  const rows = aggregate(results);
  if (repeat > 1) {
    const table = ["| metric | runs | median | p95 | min | max |", "|---|---|---|---|---|---|", ...rows.map((r) => `| ${r.metric} | ${r.runs} | ${fmt(r.median)} | ${fmt(r.p95)} | ${fmt(r.min)} | ${fmt(r.max)} |`)];
    const failed = results.filter((r) => !r.ok).map((r) => r.seed);
    mkdirSync(base, { recursive: true });
    writeFileSync(join(base, "aggregate.md"), `# ${scenario.name}: ${results.length} runs, ${failed.length} failed${failed.length ? ` (seeds ${failed.join(", ")})` : ""}\n\n${table.join("\n")}\n`);
  }
  const failed = results.filter((r) => !r.ok);
  if (ctx.output === "json") printJson({ scenario: scenario.name, results, aggregate: rows });
  else {
    out(`${scenario.name}: ${results.length - failed.length} of ${results.length} runs passed${failed.length ? `; failing seeds: ${failed.map((r) => r.seed).join(", ")}` : ""}\n`);
    if (rows.length > 0) printTable(["METRIC", "RUNS", "MEDIAN", "P95", "MIN", "MAX"], rows.map((r) => [r.metric, String(r.runs), fmt(r.median), fmt(r.p95), fmt(r.min), fmt(r.max)]));
  }
  if (failed.length > 0 && process.exitCode === undefined) throw new SimdcError("FAILED_PRECONDITION", `${failed.length} of ${results.length} runs broke an assertion or a checker (seeds ${failed.map((r) => r.seed).join(", ")})`);
}

function fmt(v: number): string {
  return Number.isFinite(v) ? String(Math.round(v * 10) / 10) : "-";
}

/** The results under a run's output directory: its own result.json, or those of its repeated runs (seed-*). */
function resultsIn(dir: string): RunResult[] {
  const own = join(dir, "result.json");
  if (existsSync(own)) return [JSON.parse(readFileSync(own, "utf8")) as RunResult];
  const runs = existsSync(dir) ? readdirSync(dir).filter((d) => existsSync(join(dir, d, "result.json"))) : [];
  if (runs.length === 0) throw notFound(`no experiment results in ${dir} (a directory 'experiment run' wrote, with result.json)`);
  return runs.map((d) => JSON.parse(readFileSync(join(dir, d, "result.json"), "utf8")) as RunResult);
}

/** Two runs (or two sets of repeated runs) side by side: each metric's median and spread, and the difference. */
async function compareCommand(ctx: CommandContext, argv: string[]): Promise<void> {
  const [a, b] = positionals(parse(argv, {}), ["dir A", "dir B"]);
  const left = aggregate(resultsIn(resolve(a!)));
  const right = aggregate(resultsIn(resolve(b!)));
  const metrics = [...new Set([...left, ...right].map((r) => r.metric))].sort();
  const rows = metrics.map((metric) => {
    const l = left.find((r) => r.metric === metric);
    const r = right.find((x) => x.metric === metric);
    const diff = l && r ? r.median - l.median : NaN;
    return { metric, a: l ?? null, b: r ?? null, difference: diff, ratio: l && r && l.median !== 0 ? r.median / l.median : NaN };
  });
  if (ctx.output === "json") return printJson(rows);
  const cell = (x: { median: number; min: number; max: number; runs: number } | null): string => (x ? `${fmt(x.median)} (${fmt(x.min)}-${fmt(x.max)}, ${x.runs} runs)` : "-");
  printTable(
    ["METRIC", "A: MEDIAN (SPREAD)", "B: MEDIAN (SPREAD)", "B - A", "B / A"],
    rows.map((r) => [r.metric, cell(r.a), cell(r.b), fmt(r.difference), Number.isFinite(r.ratio) ? `${r.ratio.toFixed(2)}x` : "-"]),
  );
}

interface Planned {
  scenario: Scenario;
  plan: Plan;
  outDir: string;
  again: string;
  label: string;
}

/** A line of progress (clearing the status line a terminal shows under it). */
const say = (line: string): void => void process.stderr.write(`${process.stderr.isTTY ? "\r\x1b[K" : ""}experiment: ${line}\n`);

/** Runs each planned experiment in turn, saying how each went; Ctrl-C ends the current one (written) and the rest. */
async function runAll(runs: Planned[], parts: Parts, mode: RunMode): Promise<RunResult[]> {
  const stop = new AbortController();
  process.once("SIGINT", () => stop.abort());
  process.once("SIGTERM", () => stop.abort());
  if (freemem() / 1024 / 1024 < 512) say(`warning: only ${Math.round(freemem() / 1024 / 1024)} MiB of memory free`);
  const results: RunResult[] = [];
  for (const { scenario, plan, outDir, again, label } of runs) {
    say(`${scenario.name}${label}: seed ${plan.seed}; again: ${again}`);
    for (const s of plan.steps) say(`  at ${(s.atMs / 1000).toFixed(2).padStart(7)} s  ${s.id} (${s.do}${s.fault ? ", fault" : ""})`);
    const testFaults = scenario.timeline.some((s) => s.do === "duplicate-vm");
    const run = await runExperiment({ scenario, plan, parts, outDir, command: again, say, signal: stop.signal, testFaults, mode });
    results.push(run.result);
    for (const j of run.result.judged) say(`  ${j.verdict.ok ? "ok    " : "FAILED"} ${j.kind} ${j.name}: ${j.verdict.detail}`);
    say(`${run.result.ok ? "passed" : "FAILED"}: seed ${plan.seed}; report ${run.files.report}, summary ${run.files.summary}, history ${run.files.history}`);
    if (run.interrupted) {
      say("interrupted: the datacenter is down and the history so far is written");
      process.exitCode = 130;
      break;
    }
  }
  return results;
}

/** Random fault schedules from consecutive seeds, each judged by the checkers; the failing seeds are printed. */
async function swarmCommand(global: GlobalOptions, ctx: CommandContext, argv: string[]): Promise<void> {
  const parsed = parse(argv, { runs: { type: "string" }, seed: { type: "string" }, out: { type: "string" }, docker: { type: "boolean" } });
  positionals(parsed, []);
  const mode = parsed.flags["docker"] ? "docker" : "local";
  const count = intFlag(parsed.flags, "runs", 10, 1, 100_000);
  const first = intFlag(parsed.flags, "seed", freshSeed(), 0, seedMax);
  const base = resolve(stringFlag(parsed.flags, "out") ?? join(global.dataDir, "experiments", `swarm-${first}`));
  const parts = builtinParts();
  const machineMib = totalmem() / 1024 / 1024;
  const runs: Planned[] = [];
  for (let i = 0; i < count; i++) {
    const seed = (first + i) % (seedMax + 1);
    const outDir = join(base, `seed-${seed}`);
    const text = swarmScenario(seed);
    mkdirSync(outDir, { recursive: true });
    // The scenario is kept: a failing seed is a file anyone can run again.
    writeFileSync(join(outDir, "scenario.yaml"), text);
    const { scenario, source } = parseScenario(text, join(outDir, "scenario.yaml"), parts);
    runs.push({ scenario, plan: planRun(scenario, source, parts, seed, machineMib, mode), outDir, again: `simdc experiment swarm --runs 1 --seed ${seed}${mode === "docker" ? " --docker" : ""}`, label: ` (swarm run ${i + 1} of ${count})` });
  }
  const results = await runAll(runs, parts, mode);
  const failed = results.filter((r) => !r.ok);
  if (ctx.output === "json") printJson({ runs: results.length, failed: failed.map((r) => r.seed) });
  else out(`swarm: ${results.length - failed.length} of ${results.length} runs passed${failed.length ? `; failing seeds: ${failed.map((r) => r.seed).join(", ")} (rerun one: simdc experiment swarm --runs 1 --seed ${failed[0]!.seed})` : ""}\n`);
  if (failed.length > 0 && process.exitCode === undefined) throw new SimdcError("FAILED_PRECONDITION", `${failed.length} of ${results.length} swarm runs broke a checker (seeds ${failed.map((r) => r.seed).join(", ")})`);
}
