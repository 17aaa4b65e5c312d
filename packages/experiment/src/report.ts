// Judging a recorded run (its assertions and checkers) and saying what
// happened in words: a Markdown summary of one run, with the chain of
// consequences each fault caused, and figures aggregated over repeated runs.

import { faultWindows, type HistoryEntry, type RunHistory, type StepEntry } from "./history-model.js";
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
  const seen = new Map<string, number>();
  for (const a of scenario.assertions) {
    const part = parts.assertions.get(a.assert)!;
    let verdict: Verdict;
    try {
      verdict = part.evaluate(history, a);
    } catch (err) {
      verdict = { ok: false, detail: `could not be evaluated: ${(err as Error).message}` };
    }
    // An assertion about one VM, group or host is told apart from others of its kind by what it names, and a repeat by its number, so each keeps its own metrics.
    const label = ["from", "vm", "host"].map((f) => a[f]).find((v) => typeof v === "string") ?? (typeof a["a"] === "string" ? `${a["a"]}/${a["b"] as string}` : undefined);
    const base = label === undefined ? a.assert : `${a.assert}(${label as string})`;
    const n = (seen.get(base) ?? 0) + 1;
    seen.set(base, n);
    const name = n === 1 ? base : `${base}#${n}`;
    judged.push({ name, kind: "assertion", verdict });
    for (const [k, v] of Object.entries(verdict.metrics ?? {})) metrics[`${name}.${k}`] = v;
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
  if (step.hosts.length === 0) return [...chain, ...aftermath(history, step)];
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
    // A restarted agent runs its hosts' VMs from their documents before it registers, so the reports may come first.
    const from = healer?.timeMs ?? lost.timeMs;
    const rerun = history.events.filter((e) => e.kind === "vm-state-changed" && e.hostId === host && e.state === "running" && e.timeMs >= from && e.timeMs <= back.timeMs + 5_000);
    if (rerun.length > 0) chain.push(`  -> its VMs reported running again: ${[...new Set(rerun.map((e) => e.objectId))].join(", ")}`);
  }
  return chain;
}

/** What followed a fault that cut off no host (the controller, a SAN node, the API): the first event of each kind, and the changes refused, until a while after it ended. */
function aftermath(history: RunHistory, step: StepEntry): string[] {
  const window = faultWindows(history).find((w) => w.id === step.id);
  const untilMs = (window?.toMs ?? step.timeMs) + 5_000;
  const lines: string[] = [];
  const seen = new Set<string>();
  for (const e of history.events) {
    if (e.timeMs < step.timeMs || e.timeMs > untilMs || seen.has(e.kind) || e.kind === "vm-state-changed" || e.kind === "vm-created") continue;
    seen.add(e.kind);
    lines.push(`  -> ${history.at(e.timeMs)} ${e.kind} ${e.objectId}: ${e.message}`);
  }
  // A refusal counts when it came (its call's start plus its wall latency at the run's time scale).
  const answeredAt = (a: { timeMs: number; latencyMs: number }): number => a.timeMs + a.latencyMs * history.run.timeScale;
  const refused = history.acks.filter((a) => !a.ok && answeredAt(a) >= step.timeMs && answeredAt(a) <= untilMs);
  if (refused.length > 0) lines.push(`  -> ${refused.length} changes refused meanwhile (first: ${refused[0]!.op} ${refused[0]!.id}: ${refused[0]!.error ?? ""})`);
  const failed = history.events.filter((e) => e.kind === "vm-state-changed" && e.state === "failed" && e.timeMs >= step.timeMs && e.timeMs <= untilMs);
  if (failed.length > 0) lines.push(`  -> ${failed.length} VMs failed meanwhile (first: ${failed[0]!.message})`);
  if (lines.length === 0) lines.push("  -> no event followed it");
  return lines;
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
  const faults = history.steps.filter((s) => s.fault && s.ok);
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
