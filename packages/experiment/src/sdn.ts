// The SDN's experiment parts: faults on the underlay (a link between two
// hosts, a host's NIC), a traffic load, a ping probe between two VMs
// (through their vswitches and the underlay, never the controller), a probe
// of the flows the hosts hold and of the configuration generations they
// realized, assertions on ping loss and NIC drops, and checkers that once
// the faults have healed every host's installed flows equal what its
// document says (the data plane converged on the control plane's intent)
// and the reachability matrix equals the policy.

import type { RunHistory } from "./history-model.js";
import type { Parts, Verdict } from "./parts.js";
import { percentile } from "./builtins.js";
import { duration, durationMs, name } from "./scenario.js";

export function sdnParts(parts: Parts): void {
  parts.step({
    kind: "traffic",
    summary: "a constant-rate UDP flow from VM from to VM to's first address, ratePps packets/s of sizeBytes (default 1000), for a while (a load, shaded as a fault: it may saturate a NIC)",
    fault: true,
    properties: { from: name, to: name, ratePps: { type: "integer", minimum: 1, maximum: 100_000 }, sizeBytes: { type: "integer", minimum: 64, maximum: 1_450 }, for: duration },
    required: ["from", "to", "ratePps", "for"],
    refs: { from: "vm", to: "vm" },
  });
  parts.step({
    kind: "link",
    summary: "the underlay between hosts a and b goes down (both ways), lossy (percent of its packets dropped each way) or slow (delayMs each way), for a while; heartbeats and the API are untouched",
    fault: true,
    properties: {
      a: name,
      b: name,
      state: { enum: ["down", "lossy", "slow"] },
      percent: { type: "integer", minimum: 1, maximum: 100 },
      delayMs: { type: "integer", minimum: 1, maximum: 60_000 },
      for: duration,
    },
    required: ["a", "b", "state"],
    refs: { a: "host", b: "host" },
  });
  parts.step({
    kind: "nic",
    summary: "one of host's physical NICs (nic0 converged, nic1 dedicated) gets a slower line (mbps) or a shorter queue (queueKib), for a while, then is as configured again: what overflows it is dropped (nic-drops events)",
    fault: true,
    properties: {
      host: name,
      nic: { enum: ["nic0", "nic1"] },
      mbps: { type: "integer", minimum: 1, maximum: 400_000 },
      queueKib: { type: "integer", minimum: 2, maximum: 1_048_576 },
      for: duration,
    },
    required: ["host", "for"],
    refs: { host: "host" },
  });
  parts.probe({
    kind: "ping",
    summary: "one ICMP echo from guest `from` to guest `to`'s first address each time (received 0 or 1, rttMs), through their hosts' vswitches only; a guest is a VM or an external endpoint",
    properties: { from: name, to: name },
  });
  parts.probe({ kind: "flows", summary: "flows the hosts' vswitches hold (total), hosts whose controller is lost or that failed open, and packet-ins sent to the controller so far" });
  parts.probe({ kind: "sync", summary: "the configuration generations, as OVN's nb_cfg/sb_cfg/hv_cfg: the newest assigned (desired), written to every document (written), realized by every live host (realized), and how many live hosts lag behind their document (lagging)" });
  parts.assertion({
    kind: "ping-loss",
    summary: "of the ping probes' echoes (only those VM from sends, with from), at most max percent were lost (a probe with no answer at all counts as lost)",
    properties: { max: { type: "number", minimum: 0, maximum: 100 }, from: name },
    required: ["max"],
    evaluate: pingLoss,
  });
  parts.assertion({
    kind: "nic-drops",
    summary: "the hosts' physical NICs (host's only, with host; only from after into the run, with after) reported full-queue drops (nic-drops events, at most one a second a NIC) at least min and at most max times",
    properties: { min: { type: "integer", minimum: 0 }, max: { type: "integer", minimum: 0 }, host: name, after: duration },
    evaluate: nicDrops,
  });
  parts.checker({ name: "flows-match-intent", summary: "every host's installed flows equal its document's once the faults have healed", check: flowsMatchIntent });
  parts.checker({ name: "reachability-matches-policy", summary: "at the end, every running VM and external endpoint reaches exactly what the network policy allows (simdc net reachability)", check: reachabilityMatchesPolicy });
}

function pingLoss(h: RunHistory, params: Record<string, unknown>): Verdict {
  // With from: only the ping probes that VM sends.
  const from = params["from"] as string | undefined;
  const samples = h.samples.filter((s) => s.probe === "ping" && (!from || s.label?.startsWith(`${from}>`)));
  if (samples.length === 0) return { ok: false, detail: "no ping samples: add a ping probe" };
  const lost = samples.filter((s) => !s.values["received"]);
  const rtts = samples.flatMap((s) => (s.values["received"] ? [s.values["rttMs"] ?? 0] : []));
  const lossPercent = (100 * lost.length) / samples.length;
  const max = params["max"] as number;
  const metrics = { sent: samples.length, lost: lost.length, lossPercent, rttP50: percentile(rtts, 50), rttP99: percentile(rtts, 99) };
  if (lossPercent > max) {
    const first = lost[0]!;
    return { ok: false, detail: `${lost.length} of ${samples.length} echoes lost (${lossPercent.toFixed(1)}%, allowed ${max}%); the first at ${h.at(first.timeMs)}`, metrics };
  }
  return { ok: true, detail: `${lost.length} of ${samples.length} echoes lost (${lossPercent.toFixed(1)}%, allowed ${max}%), rtt p50 ${metrics.rttP50.toFixed(1)} ms`, metrics };
}

function nicDrops(h: RunHistory, params: Record<string, unknown>): Verdict {
  const host = params["host"] as string | undefined;
  const min = (params["min"] as number | undefined) ?? 0;
  const max = (params["max"] as number | undefined) ?? Infinity;
  const fromMs = h.run.startMs + (typeof params["after"] === "string" ? durationMs(params["after"]) : 0);
  const reports = h.events.filter((e) => e.kind === "nic-drops" && e.timeMs >= fromMs && (!host || e.objectId === host));
  const metrics = { reports: reports.length };
  const where = [...new Set(reports.map((e) => e.objectId))].sort().join(", ");
  const range = `${min}-${max === Infinity ? "any" : max}`;
  if (reports.length < min || reports.length > max) {
    return { ok: false, detail: `${reports.length} nic-drops reports${where ? ` (${where})` : ""}, allowed ${range}${reports[0] ? `; the first at ${h.at(reports[0].timeMs)}: ${reports[0].message}` : ""}`, metrics };
  }
  return { ok: true, detail: `${reports.length} nic-drops reports${where ? ` (${where})` : ""}, allowed ${range}`, metrics };
}

function reachabilityMatchesPolicy(h: RunHistory): Verdict {
  if (!h.final || h.final.error) return { ok: false, detail: `the final state could not be read: ${h.final?.error ?? "no final entry"}` };
  const cells = h.final.reachability ?? [];
  if (cells.length === 0) return { ok: true, detail: "no two guests with an address to try" };
  const wrong = cells.filter((c) => c.reached !== c.allowed);
  if (wrong.length) {
    const first = wrong[0]!;
    return { ok: false, detail: `${wrong.length} of ${cells.length} pairs differ from the policy; ${first.from} ${first.reached ? "reached" : "did not reach"} ${first.to} (${first.ip}), which it ${first.allowed ? "allows" : "denies"}${first.why ? ` (${first.why})` : ""}` };
  }
  const allowed = cells.filter((c) => c.allowed).length;
  return { ok: true, detail: `${cells.length} pairs as the policy says (${allowed} reach, ${cells.length - allowed} kept apart)` };
}

function flowsMatchIntent(h: RunHistory): Verdict {
  if (!h.final || h.final.error) return { ok: false, detail: `the final state could not be read: ${h.final?.error ?? "no final entry"}` };
  const hosts = h.final.flows ?? [];
  let flows = 0;
  for (const host of hosts) {
    if (host.error) return { ok: false, detail: `${host.hostId}'s flows could not be read: ${host.error}` };
    const installed = new Set(host.installed);
    const intended = new Set(host.intended);
    const missing = host.intended.filter((f) => !installed.has(f));
    const extra = host.installed.filter((f) => !intended.has(f));
    if (missing.length || extra.length) {
      const example = missing.length ? `missing ${missing[0]}` : `not intended ${extra[0]}`;
      return { ok: false, detail: `${host.hostId} holds ${host.installed.length} flows in the controller's tables against ${host.intended.length} in its document (${missing.length} missing, ${extra.length} not intended; ${example})` };
    }
    flows += host.intended.length;
  }
  return { ok: true, detail: `${hosts.length} hosts hold exactly their documents' ${flows} flows` };
}
