// Swarm mode (after TigerBeetle's VOPR): a random scenario from a seed. A
// safety phase injects a random mix of the faults that exist (process kills,
// hangs and restarts, partitions, lossy and slow links, controller and SAN
// crashes) at random times, then everything is healed, and a liveness phase
// gives the datacenter time to become whole; the checkers judge every run.
// The scenario is written as YAML, so a failing seed is a file to rerun.

import { Rng } from "@simdc/common";
import { stringify } from "yaml";
import { topologyNames } from "./plan.js";
import type { Step, Topology } from "./scenario.js";

export interface SwarmOptions {
  /** Seconds of faults, and of healing afterwards. */
  safetyS: number;
  livenessS: number;
  faultsMax: number;
}

export const swarmDefaults: SwarmOptions = { safetyS: 12, livenessS: 10, faultsMax: 4 };

const seconds = (s: number): string => `${Math.round(s * 1000)}ms`;

/** The scenario (as YAML text) that `seed` stands for. */
export function swarmScenario(seed: number, options: SwarmOptions = swarmDefaults): string {
  const rng = new Rng(seed, "swarm");
  const pick = <T>(items: readonly T[]): T => items[rng.below(items.length)]!;
  const topology: Topology = {
    hosts: 4 + rng.below(5),
    hostsPerAgent: pick([1, 2, 4]),
    san: 1 + rng.below(2),
    controllers: pick([1, 1, 2]),
    heartbeatIntervalMs: 500,
    heartbeatMissesMax: 3,
    timeScale: 1,
    pcpus: 64,
    memoryMib: 65_536,
    failMode: "secure",
    inactivityProbeMs: 5_000,
    nicMbps: 10_000,
    nicQueueKib: 1_024,
    coscheduling: "relaxed",
    shareSalting: "per-vm",
    threadsPerCore: 1,
    coreMhz: 2_000,
  };
  const names = topologyNames(topology);
  const agents = Object.keys(names.agents);
  const controllers = names.processes.filter((p) => p.startsWith("controller"));
  const sans = names.processes.filter((p) => p.startsWith("san-"));
  const timeline: Step[] = [{ id: "load", at: "500ms", do: "create-vms", name: "load", count: 20 + rng.below(60), concurrency: 4 }];
  // Each process is faulted at most once, so its life stays a simple story (and a valid timeline).
  const used = new Set<string>();
  const faults = 1 + rng.below(options.faultsMax);
  for (let i = 1; i <= faults; i++) {
    const start = 1 + rng.next() * (options.safetyS - 3);
    const end = Math.min(options.safetyS, start + 1 + rng.next() * 5);
    const kind = pick(["kill-agent", "pause-agent", "partition", "lossy", "slow-api", "kill-controller", "kill-san"] as const);
    const process = kind.endsWith("agent") ? pick(agents) : kind === "kill-controller" ? pick(controllers) : kind === "kill-san" ? pick(sans) : "";
    if (process && used.has(process)) continue;
    if (process) used.add(process);
    const id = `f${i}`;
    switch (kind) {
      case "kill-agent":
      case "kill-controller":
      case "kill-san":
        timeline.push({ id, at: seconds(start), do: "kill", process }, { id: `${id}-back`, at: seconds(end), do: "restart", process });
        break;
      case "pause-agent":
        timeline.push({ id, at: seconds(start), do: "pause", process }, { id: `${id}-back`, at: seconds(end), do: "resume", process });
        break;
      case "partition":
        timeline.push({ id, at: seconds(start), do: "bus", action: "partition", from: pick(names.hosts), for: seconds(end - start) });
        break;
      case "lossy":
        timeline.push({ id, at: seconds(start), do: "bus", action: "drop", subject: "simdc.evt.host.*.heartbeat", to: "controller", percent: 10 + rng.below(40), for: seconds(end - start) });
        break;
      case "slow-api":
        timeline.push({ id, at: seconds(start), do: "bus", action: "delay", subject: "simdc.api.>", delayMs: 50 + rng.below(400), jitterMs: rng.below(100), for: seconds(end - start) });
        break;
    }
  }
  // Healing: every rule goes, whatever is still down comes back (a no-op for what already did).
  timeline.push({ id: "heal", at: seconds(options.safetyS), do: "clear-bus" });
  return stringify({
    name: `swarm-${seed}`,
    description: `swarm run ${seed}: ${faults} random faults for ${options.safetyS} s, then ${options.livenessS} s to heal`,
    seed,
    topology,
    timeline,
    duration: seconds(options.safetyS + options.livenessS),
    liveness: seconds(options.livenessS - 1),
    probes: [
      { probe: "hosts", every: "500ms" },
      { probe: "faults", every: "1s" },
    ],
  });
}
