// One self-contained HTML page for a run: the verdicts, charts drawn by a
// charting library (Apache ECharts, inlined, so the page needs no network)
// of host and VM state over time, detection and recovery latencies, API and
// create latency, what the bus rules dropped and delayed, the network, and
// the hypervisors' memory and CPU waits, each with the fault windows shaded;
// the timeline of events; and the chain of consequences of each fault.
// Everything shown is derived from the history.

import { percentile } from "./builtins.js";
import { faultWindows, type RunHistory } from "./history-model.js";
import { vmValueKey } from "./hypervisor.js";
import { consequences, type RunResult } from "./report.js";

type Point = [number, number];

/** A count over time from +1/-1 changes, as a step line starting at `initial`. */
function stepSeries(startMs: number, initial: number, changes: { timeMs: number; delta: number }[], toSeconds: (ms: number) => number): Point[] {
  let value = initial;
  const points: Point[] = [[toSeconds(startMs), value]];
  for (const c of changes) {
    value += c.delta;
    points.push([toSeconds(c.timeMs), value]);
  }
  return points;
}

/** Past this many VMs the timeline shows them as one row, or their rows would crowd out everything else. */
const vmRowsMax = 20;

/** The hosts' memory the report charts, summed over hosts: each host's latest sample counts until its next. */
const memorySeries = { free: "free", balloon: "balloon", compressed: "compressed", swapped: "swapped", sharedSaved: "shared saved" } as const;

/** The hypervisor samples as chart series: memory summed over hosts, and %RDY and %CSTP per vCPU of the first VMs by name. */
function hypervisorSeries(h: RunHistory, t: (ms: number) => number): { memory: Record<string, Point[]>; cpu: Record<string, Point[]> } {
  const samples = h.samples.filter((s) => s.probe === "hypervisor" && s.values["windowMs"] !== undefined).sort((a, b) => a.timeMs - b.timeMs);
  const latest = new Map<string, Record<string, number>>();
  const memory: Record<string, Point[]> = Object.fromEntries(Object.values(memorySeries).map((name) => [name, []]));
  const vms = [...new Set(samples.flatMap((s) => Object.keys(s.values).flatMap((k) => (k.endsWith(".vcpus") ? [k.slice(3, -6)] : []))))].sort().slice(0, vmRowsMax);
  const cpu: Record<string, Point[]> = {};
  for (const s of samples) {
    latest.set(s.label ?? "", s.values);
    for (const [key, name] of Object.entries(memorySeries)) memory[name]!.push([t(s.timeMs), [...latest.values()].reduce((sum, v) => sum + (v[key] ?? 0), 0)]);
    for (const vm of vms) {
      const vcpus = s.values[vmValueKey(vm, "vcpus")];
      if (!vcpus) continue;
      for (const counter of ["ready", "costop"] as const) (cpu[`${vm} %${counter === "ready" ? "RDY" : "CSTP"}`] ??= []).push([t(s.timeMs), (s.values[vmValueKey(vm, counter)] ?? 0) / vcpus]);
    }
  }
  return { memory, cpu };
}

/** The page's data, all times in seconds from the timeline's start. */
export function reportData(h: RunHistory, result: RunResult): Record<string, unknown> {
  const t = (ms: number): number => Math.round(ms - h.run.startMs) / 1000;
  const endMs = h.final?.timeMs ?? h.run.startMs + h.run.durationMs;

  // Hosts: each starts connected; its connected and disconnected events move it.
  const hostState = new Map(h.run.hosts.map((id) => [id, "connected"]));
  const hostChanges: { timeMs: number; delta: number }[] = [];
  for (const e of h.events) {
    if (e.kind !== "host-connected" && e.kind !== "host-disconnected") continue;
    const now = e.kind === "host-connected" ? "connected" : "disconnected";
    if (!hostState.has(e.objectId) || hostState.get(e.objectId) === now || e.timeMs < h.run.startMs) continue;
    hostState.set(e.objectId, now);
    hostChanges.push({ timeMs: e.timeMs, delta: now === "connected" ? 1 : -1 });
  }
  const connected = stepSeries(h.run.startMs, h.run.hosts.length, hostChanges, t);
  connected.push([t(endMs), connected.at(-1)![1]]);

  // VMs: each VM's last reported state, counted per state at every report.
  const vmState = new Map<string, string>();
  const counts = new Map<string, number>();
  const vmSeries = new Map<string, Point[]>();
  const bump = (state: string, delta: number, at: number): void => {
    counts.set(state, (counts.get(state) ?? 0) + delta);
    const series = vmSeries.get(state) ?? [[t(h.run.startMs), 0]];
    series.push([at, counts.get(state)!]);
    vmSeries.set(state, series);
  };
  for (const e of h.events) {
    if (e.kind !== "vm-state-changed" || !e.state) continue;
    const at = Math.max(t(e.timeMs), 0);
    const before = vmState.get(e.objectId);
    if (before === e.state) continue;
    if (before) bump(before, -1, at);
    if (e.state === "removed") vmState.delete(e.objectId);
    else {
      vmState.set(e.objectId, e.state);
      bump(e.state, 1, at);
    }
  }
  for (const series of vmSeries.values()) series.push([t(endMs), series.at(-1)![1]]);

  // Detection and recovery, per fault step and host.
  const latencies: { label: string; detectedMs: number | null; recoveredMs: number | null }[] = [];
  const windows = faultWindows(h);
  for (const s of h.steps.filter((x) => x.fault && x.ok)) {
    for (const host of s.hosts) {
      const lost = h.events.find((e) => e.kind === "host-disconnected" && e.objectId === host && e.timeMs >= s.timeMs);
      const back = lost ? h.events.find((e) => e.kind === "host-connected" && e.objectId === host && e.timeMs >= lost.timeMs) : undefined;
      const ended = windows.find((w) => w.id === s.id)?.toMs ?? endMs;
      latencies.push({ label: `${s.id} ${host}`, detectedMs: lost ? Math.round(lost.timeMs - s.timeMs) : null, recoveredMs: back ? Math.round(back.timeMs - ended) : null });
    }
  }

  const samples = (probe: string): { t: number; values: Record<string, number> }[] => h.samples.filter((x) => x.probe === probe).map((x) => ({ t: t(x.timeMs), values: x.values }));
  const creates = h.acks.filter((a) => a.op === "create-vm");
  return {
    title: `${h.run.scenario}: ${result.ok ? "PASSED" : "FAILED"}`,
    ok: result.ok,
    seed: h.run.seed,
    command: h.run.command,
    durationS: t(endMs),
    windows: windows.map((w) => ({ label: w.label, from: t(w.fromMs), to: t(w.toMs) })),
    judged: result.judged.map((j) => ({ ok: j.verdict.ok, kind: j.kind, name: j.name, detail: j.verdict.detail })),
    hosts: { total: h.run.hosts.length, connected },
    vms: Object.fromEntries(vmSeries),
    latencies,
    api: samples("api").map((x) => [x.t, x.values["latencyMs"] ?? null]),
    apiErrors: samples("api").filter((x) => x.values["errors"]).map((x) => x.t),
    creates: {
      acked: creates.filter((a) => a.ok).map((a) => [t(a.timeMs), Math.round(a.latencyMs)]),
      refused: creates.filter((a) => !a.ok).map((a) => [t(a.timeMs), Math.round(a.latencyMs)]),
      p50: percentile(creates.filter((a) => a.ok).map((a) => a.latencyMs), 50),
    },
    faults: samples("faults"),
    ping: samples("ping").map((x) => [x.t, x.values["received"] ? (x.values["rttMs"] ?? 0) : null]),
    pingLost: samples("ping").filter((x) => !x.values["received"]).map((x) => [x.t, 0]),
    flows: samples("flows"),
    sync: samples("sync"),
    hypervisor: hypervisorSeries(h, t),
    events: timelineEvents(h, t),
    chains: h.steps.filter((s) => s.fault && s.ok).map((s) => consequences(h, s)),
    metrics: result.metrics,
  };
}

function timelineEvents(h: RunHistory, t: (ms: number) => number): { t: number; kind: string; object: string; row: string; message: string; cause: string }[] {
  const shown = h.events.filter((e) => e.timeMs >= h.run.startMs - 1_000);
  const vms = new Set(shown.filter((e) => e.objectKind === "vm").map((e) => e.objectId));
  const vmRow = vms.size > vmRowsMax ? `vm/(${vms.size} VMs)` : null;
  return shown.map((e) => {
    const object = `${e.objectKind}/${e.objectId}`;
    return { t: t(e.timeMs), kind: e.kind, object, row: e.objectKind === "vm" && vmRow ? vmRow : object, message: `${object}: ${e.message}`, cause: e.cause ?? "" };
  });
}

/** Keeps the JSON from ending the script element it sits in. */
function scriptSafe(json: string): string {
  return json.replaceAll("<", "\\u003c").replaceAll("\u2028", "\\u2028").replaceAll("\u2029", "\\u2029");
}

function escapeHtml(text: string): string {
  return text.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;").replaceAll('"', "&quot;");
}

/**
 * The page. `chartLibrary` is the text of echarts.min.js (the caller reads
 * it from the installed package), inlined so the page works offline.
 */
export function reportHtml(h: RunHistory, result: RunResult, chartLibrary: string): string {
  const data = reportData(h, result);
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>simdc experiment ${escapeHtml(String(data["title"]))}</title>
<style>
  body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1200px; color: #1d2430; padding: 0 16px; }
  h1 { font-size: 22px; } h2 { font-size: 17px; margin-top: 28px; }
  .ok { color: #137333; } .bad { color: #b3261e; font-weight: 600; }
  table { border-collapse: collapse; width: 100%; } td, th { border-bottom: 1px solid #e3e6ea; padding: 4px 8px; text-align: left; vertical-align: top; }
  .chart { width: 100%; height: 300px; } .tall { height: 420px; }
  pre { background: #f5f6f8; padding: 10px; overflow-x: auto; } code { background: #f5f6f8; padding: 1px 4px; }
  .muted { color: #5f6b7a; }
</style>
</head>
<body>
<h1 id="title"></h1>
<p class="muted">seed <span id="seed"></span> · repeat with <code id="command"></code> · fault windows are shaded in every chart</p>
<h2>Verdicts</h2>
<table id="verdicts"><thead><tr><th></th><th>kind</th><th>name</th><th>detail</th></tr></thead><tbody></tbody></table>
<h2>Hosts connected</h2><div class="chart" id="chart-hosts"></div>
<h2>VMs by state</h2><div class="chart" id="chart-vms"></div>
<h2>Detection and recovery, per fault and host (ms)</h2><div class="chart" id="chart-latency"></div>
<h2>API and create latency (ms)</h2><div class="chart" id="chart-api"></div>
<h2>Messages the bus rules dropped, delayed and duplicated</h2><div class="chart" id="chart-faults"></div>
<h2>Network: ping round trip (ms) and lost echoes; flows the vswitches hold, and hosts behind their document</h2><div class="chart" id="chart-ping"></div><div class="chart" id="chart-flows"></div>
<h2>Hypervisors: memory over all hosts (MiB); %RDY and %CSTP per vCPU of each VM (the first ${vmRowsMax} by name)</h2><div class="chart" id="chart-hv-memory"></div><div class="chart" id="chart-hv-cpu"></div>
<h2>Timeline of events</h2><div class="chart tall" id="chart-timeline"></div>
<h2>What each fault caused</h2><div id="chains"></div>
<h2>Events</h2>
<details><summary>all <span id="event-count"></span> events</summary><table id="events"><thead><tr><th>t (s)</th><th>kind</th><th>object</th><th>message</th><th>cause</th></tr></thead><tbody></tbody></table></details>
<script>${chartLibrary.replaceAll("</script", "<\\/script")}</script>
<script type="application/json" id="data">${scriptSafe(JSON.stringify(data))}</script>
<script>
"use strict";
const data = JSON.parse(document.getElementById("data").textContent);
const text = (id, value) => { document.getElementById(id).textContent = value; };
text("title", "Experiment " + data.title);
document.getElementById("title").className = data.ok ? "ok" : "bad";
text("seed", String(data.seed));
text("command", data.command);
const row = (table, cells) => {
  const tr = document.createElement("tr");
  for (const c of cells) { const td = document.createElement("td"); if (c instanceof Node) td.appendChild(c); else td.textContent = c; tr.appendChild(td); }
  document.querySelector(table + " tbody").appendChild(tr);
};
for (const j of data.judged) {
  const mark = document.createElement("span"); mark.textContent = j.ok ? "ok" : "FAILED"; mark.className = j.ok ? "ok" : "bad";
  row("#verdicts", [mark, j.kind, j.name, j.detail]);
}
const shade = { silent: true, itemStyle: { color: "rgba(179, 38, 30, 0.10)" }, label: { color: "#b3261e", fontSize: 10 },
  data: data.windows.map((w) => [{ name: w.label.split(":")[0], xAxis: w.from }, { xAxis: w.to }]) };
const timeAxis = { type: "value", name: "s", min: 0, max: Math.ceil(data.durationS) };
const charts = [];
const chart = (id, option) => { const c = echarts.init(document.getElementById(id), null, { renderer: "canvas" }); c.setOption(option); charts.push(c); return c; };
const withShade = (series) => series.map((s, i) => (i === 0 ? { ...s, markArea: shade } : s));
chart("chart-hosts", { tooltip: { trigger: "axis" }, xAxis: timeAxis, yAxis: { type: "value", min: 0, max: data.hosts.total, name: "hosts" },
  series: withShade([{ name: "connected", type: "line", step: "end", data: data.hosts.connected, symbol: "none", areaStyle: { opacity: 0.15 } }]) });
const vmStates = Object.keys(data.vms);
chart("chart-vms", { tooltip: { trigger: "axis" }, legend: { data: vmStates }, xAxis: timeAxis, yAxis: { type: "value", name: "VMs" },
  series: withShade((vmStates.length ? vmStates : ["none"]).map((s) => ({ name: s, type: "line", step: "end", symbol: "none", data: data.vms[s] || [] }))) });
chart("chart-latency", { tooltip: { trigger: "axis" }, legend: { data: ["detected after", "recovered after"] },
  xAxis: { type: "category", data: data.latencies.map((l) => l.label), axisLabel: { rotate: 20 } }, yAxis: { type: "value", name: "ms" },
  series: [{ name: "detected after", type: "bar", data: data.latencies.map((l) => l.detectedMs) }, { name: "recovered after", type: "bar", data: data.latencies.map((l) => l.recoveredMs) }] });
chart("chart-api", { tooltip: { trigger: "item" }, legend: { data: ["GetControllerStatus", "create acknowledged", "create refused"] }, xAxis: timeAxis, yAxis: { type: "value", name: "ms" },
  series: withShade([{ name: "GetControllerStatus", type: "line", symbol: "none", connectNulls: false, data: data.api },
    { name: "create acknowledged", type: "scatter", symbolSize: 4, data: data.creates.acked },
    { name: "create refused", type: "scatter", symbolSize: 6, data: data.creates.refused }]) });
const faultKeys = [...new Set(data.faults.flatMap((s) => Object.keys(s.values)))].sort();
chart("chart-faults", { tooltip: { trigger: "axis" }, legend: { data: faultKeys, type: "scroll" }, xAxis: timeAxis, yAxis: { type: "value", name: "messages" },
  series: withShade((faultKeys.length ? faultKeys : ["none"]).map((k) => ({ name: k, type: "line", symbol: "none", data: data.faults.map((s) => [s.t, s.values[k] ?? 0]) }))) });
chart("chart-ping", { tooltip: { trigger: "axis" }, legend: { data: ["rtt", "lost"] }, xAxis: timeAxis, yAxis: { type: "value", name: "ms" },
  series: withShade([{ name: "rtt", type: "line", symbol: "none", connectNulls: false, data: data.ping }, { name: "lost", type: "scatter", symbolSize: 7, data: data.pingLost }]) });
chart("chart-flows", { tooltip: { trigger: "axis" }, legend: { data: ["flows", "hosts that lost the controller", "hosts failed open", "hosts behind their document"] }, xAxis: timeAxis,
  yAxis: [{ type: "value", name: "flows" }, { type: "value", name: "hosts", minInterval: 1 }],
  series: withShade([{ name: "flows", type: "line", step: "end", symbol: "none", data: data.flows.map((s) => [s.t, s.values.total ?? null]) },
    { name: "hosts that lost the controller", type: "line", step: "end", symbol: "none", yAxisIndex: 1, data: data.flows.map((s) => [s.t, s.values.lost ?? null]) },
    { name: "hosts failed open", type: "line", step: "end", symbol: "none", yAxisIndex: 1, data: data.flows.map((s) => [s.t, s.values.failedOpen ?? null]) },
    { name: "hosts behind their document", type: "line", step: "end", symbol: "none", yAxisIndex: 1, data: data.sync.map((s) => [s.t, s.values.lagging ?? null]) }]) });
// rightAxis: the series drawn against a second axis (free memory, which would flatten what is reclaimed).
const lines = (series, rightAxis) => { const names = Object.keys(series); return withShade((names.length ? names : ["none"]).map((n) => ({ name: n, type: "line", step: "end", symbol: "none", yAxisIndex: n === rightAxis ? 1 : 0, data: series[n] || [] }))); };
chart("chart-hv-memory", { tooltip: { trigger: "axis" }, legend: { data: Object.keys(data.hypervisor.memory) }, xAxis: timeAxis,
  yAxis: [{ type: "value", name: "MiB reclaimed, saved" }, { type: "value", name: "MiB free" }], series: lines(data.hypervisor.memory, "free") });
chart("chart-hv-cpu", { tooltip: { trigger: "axis" }, legend: { data: Object.keys(data.hypervisor.cpu), type: "scroll" }, xAxis: timeAxis, yAxis: { type: "value", name: "% per vCPU" }, series: lines(data.hypervisor.cpu) });
const objects = [...new Set(data.events.map((e) => e.row))].sort();
const kinds = [...new Set(data.events.map((e) => e.kind))].sort();
chart("chart-timeline", { tooltip: { trigger: "item", formatter: (p) => p.data[3] + "<br>" + p.data[2] + " at " + p.data[0] + " s" },
  legend: { data: kinds, type: "scroll" }, grid: { left: 160 }, xAxis: timeAxis, yAxis: { type: "category", data: objects },
  series: withShade((kinds.length ? kinds : ["none"]).map((k) => ({ name: k, type: "scatter", symbolSize: 8,
    data: data.events.filter((e) => e.kind === k).map((e) => [e.t, e.row, e.kind, e.message]) }))) });
for (const chain of data.chains) { const pre = document.createElement("pre"); pre.textContent = chain.join("\\n"); document.getElementById("chains").appendChild(pre); }
if (data.chains.length === 0) text("chains", "No fault was injected in this run.");
text("event-count", String(data.events.length));
for (const e of data.events) row("#events", [e.t.toFixed(3), e.kind, e.object, e.message, e.cause]);
window.addEventListener("resize", () => charts.forEach((c) => c.resize()));
window.simdcCharts = charts.length;
</script>
</body>
</html>
`;
}
