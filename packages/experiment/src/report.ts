// Judging a recorded run (its assertions and checkers) and saying what
// happened in words: a Markdown summary of one run, with the chain of
// consequences each fault caused, and figures aggregated over repeated runs.

import type { HistoryEntry, RunHistory, StepEntry } from "./history-model.js";
import type { Parts, Verdict } from "./parts.js";
import { percentile } from "./builtins.js";
import type { Scenario } from "./scenario.js";

export interface Judged {
  name: string;
  kind: "assertion" | "checker";
  verdict: Verdict;
}

export interface RunResult {
  seed: number;
  ok: boolean;
  judged: Judged[];
  /** "<assertion>.<metric>" -> value, for aggregation over repeats. */
  metrics: Record<string, number>;
}

export function judge(history: RunHistory, scenario: Scenario, parts: Parts): RunResult {
  const judged: Judged[] = [];
  const metrics: Record<string, number> = {};
  for (const a of scenario.assertions) {
    const part = parts.assertions.get(a.assert)!;
    let verdict: Verdict;
    try {
      verdict = part.evaluate(history, a);
    } catch (err) {
      verdict = { ok: false, detail: `could not be evaluated: ${(err as Error).message}` };
    }
    judged.push({ name: a.assert, kind: "assertion", verdict });
    for (const [k, v] of Object.entries(verdict.metrics ?? {})) metrics[`${a.assert}.${k}`] = v;
  }
  for (const c of scenario.checkers) {
    const verdict = parts.checkers.get(c)!.check(history);
    judged.push({ name: c, kind: "checker", verdict });
  }
  return { seed: history.run.seed, ok: judged.every((j) => j.verdict.ok), judged, metrics };
}

/** What each fault step led to, from the recorded events: the hosts it touched going and coming back, their VMs unknown and running again. */
export function consequences(history: RunHistory, step: StepEntry): string[] {
  const chain: string[] = [`${history.at(step.timeMs)} ${step.id} (${step.do}): ${step.detail}`];
  for (const host of step.hosts) {
    const lost = history.events.find((e) => e.kind === "host-disconnected" && e.objectId === host && e.timeMs >= step.timeMs);
    if (!lost) {
      chain.push(`  ${host}: never declared disconnected`);
      continue;
    }
    chain.push(`  -> ${history.at(lost.timeMs)} ${host} disconnected (${Math.round(lost.timeMs - step.timeMs)} ms after the fault): its heartbeats stopped reaching the controller`);
    const held = vmsOn(history, host, step.timeMs);
    if (held.length > 0) chain.push(`  -> its VMs unknown to the controller: ${held.join(", ")}`);
    const back = history.events.find((e) => e.kind === "host-connected" && e.objectId === host && e.timeMs >= lost.timeMs);
    if (!back) {
      chain.push(`  -> ${host} never came back`);
      continue;
    }
    const healer = [...history.steps].reverse().find((s) => s.timeMs <= back.timeMs && s.hosts.includes(host) && s !== step);
    const cause = healer ? ` after ${healer.id} (${healer.do} at ${history.at(healer.timeMs)})` : step.endsAtMs ? ` after the rule ended at ${history.at(step.endsAtMs)}` : "";
    chain.push(`  -> ${history.at(back.timeMs)} ${host} connected again${cause}`);
    const rerun = history.events.filter((e) => e.kind === "vm-state-changed" && e.hostId === host && e.state === "running" && e.timeMs >= back.timeMs - 1 && e.timeMs <= back.timeMs + 5_000);
    if (rerun.length > 0) chain.push(`  -> its VMs reported running again: ${[...new Set(rerun.map((e) => e.objectId))].join(", ")}`);
  }
  return chain;
}

/** The VMs a host last reported running before `beforeMs`. */
function vmsOn(history: RunHistory, host: string, beforeMs: number): string[] {
  const last = new Map<string, string>();
  for (const e of history.events) {
    if (e.timeMs > beforeMs) break;
    if (e.kind === "vm-state-changed" && e.state) {
      if (e.hostId === host) last.set(e.objectId, e.state);
      else last.delete(e.objectId);
    }
  }
  return [...last].filter(([, state]) => state === "running").map(([vm]) => vm);
}

export function summaryMarkdown(history: RunHistory, result: RunResult, files: { history: string }): string {
  const r = history.run;
  const lines = [
    `# Experiment ${r.scenario}: ${result.ok ? "PASSED" : "FAILED"}`,
    "",
    `- seed ${r.seed}, time scale ${r.timeScale}x, ${(r.durationMs / 1000).toFixed(1)} s of timeline, liveness window ${(r.livenessMs / 1000).toFixed(1)} s`,
    `- repeat it: \`${r.command}\``,
    `- history: \`${files.history}\` (${history.entries.length} entries, ${history.events.length} events)`,
    "",
    "## Verdicts",
    "",
    "| | kind | name | detail |",
    "|---|---|---|---|",
    ...result.judged.map((j) => `| ${j.verdict.ok ? "ok" : "**FAILED**"} | ${j.kind} | ${j.name} | ${j.verdict.detail.replaceAll("|", "\\|")} |`),
    "",
    "## Timeline",
    "",
    ...history.steps.map((s) => `- ${history.at(s.timeMs)} **${s.id}** (${s.do}${s.fault ? ", fault" : ""}): ${s.ok ? "" : "FAILED: "}${s.detail}`),
  ];
  const faults = history.steps.filter((s) => s.fault && s.ok && s.hosts.length > 0);
  if (faults.length > 0) {
    lines.push("", "## What each fault caused", "");
    for (const f of faults) lines.push("```", ...consequences(history, f), "```");
  }
  if (Object.keys(result.metrics).length > 0) {
    lines.push("", "## Figures", "", "| metric | value |", "|---|---|", ...Object.entries(result.metrics).map(([k, v]) => `| ${k} | ${Number.isFinite(v) ? Math.round(v * 10) / 10 : "-"} |`));
  }
  return `${lines.join("\n")}\n`;
}

export interface Aggregate {
  metric: string;
  runs: number;
  median: number;
  p95: number;
  min: number;
  max: number;
}

/** Each metric over repeated runs: median, p95 and spread. */
export function aggregate(results: RunResult[]): Aggregate[] {
  const names = [...new Set(results.flatMap((r) => Object.keys(r.metrics)))].sort();
  return names.map((metric) => {
    const values = results.map((r) => r.metrics[metric]).filter((v): v is number => v !== undefined && Number.isFinite(v));
    return { metric, runs: values.length, median: percentile(values, 50), p95: percentile(values, 95), min: Math.min(...values), max: Math.max(...values) };
  });
}

export function historyLines(entries: HistoryEntry[]): string {
  return entries.map((e) => JSON.stringify(e)).join("\n") + "\n";
}
