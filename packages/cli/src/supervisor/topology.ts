// The shape of a local datacenter as plain data, apart from the code that
// starts it (as Mininet keeps topologies): which processes run, with which
// identities and flags. Short, predictable names: san-1, agent-2, host-7.

import { invalidArgument } from "@simdc/common";

export type Role = "controller" | "san-storage" | "host-agent";

export interface ProcessPlan {
  /** The name `simdc fault` and `simdc logs` use. */
  name: string;
  role: Role;
  /** Flags specific to this process (the supervisor adds the shared ones). */
  args: string[];
  hostIds: string[];
}

export interface TopologyOptions {
  hosts: number;
  sanNodes: number;
  hostsPerAgent: number;
  /** One active controller and the rest standbys. */
  controllers: number;
  dataDir: string;
  pcpus: number;
  memoryMib: number;
  sanCapacityMib: number;
}

export const hostsMax = 10_000;
export const hostsPerAgentMax = 1_000;
export const sanNodesMax = 16;
export const controllersMax = 3;

/**
 * `controllers` controllers (controller-1.., the process named as the
 * controller's id, one name everywhere), `sanNodes` SAN nodes and
 * ceil(hosts / hostsPerAgent) agents.
 * @throws SimdcError INVALID_ARGUMENT for counts out of range.
 */
export function planTopology(options: TopologyOptions): ProcessPlan[] {
  const { hosts, sanNodes, hostsPerAgent, controllers } = options;
  if (!Number.isInteger(hosts) || hosts < 1 || hosts > hostsMax) throw invalidArgument(`--hosts must be 1-${hostsMax}`);
  if (!Number.isInteger(sanNodes) || sanNodes < 1 || sanNodes > sanNodesMax) throw invalidArgument(`--san must be 1-${sanNodesMax}`);
  if (!Number.isInteger(controllers) || controllers < 1 || controllers > controllersMax) throw invalidArgument(`--controllers must be 1-${controllersMax}`);
  const perAgentMax = Math.min(hosts, hostsPerAgentMax);
  if (!Number.isInteger(hostsPerAgent) || hostsPerAgent < 1 || hostsPerAgent > perAgentMax) {
    throw invalidArgument(`--hosts-per-agent must be 1-${perAgentMax} (at most the number of hosts, and ${hostsPerAgentMax})`);
  }
  const plans: ProcessPlan[] = [];
  for (let c = 1; c <= controllers; c++) {
    const name = `controller-${c}`;
    plans.push({ name, role: "controller", args: ["--controller-id", `controller-${c}`], hostIds: [] });
  }
  for (let i = 1; i <= sanNodes; i++) {
    const name = `san-${i}`;
    plans.push({
      name,
      role: "san-storage",
      args: ["--node-id", name, "--data-dir", `${options.dataDir}/san/${name}`, "--capacity-mib", String(options.sanCapacityMib)],
      hostIds: [],
    });
  }
  const agents = Math.ceil(hosts / hostsPerAgent);
  for (let a = 1; a <= agents; a++) {
    const hostIds: string[] = [];
    for (let h = (a - 1) * hostsPerAgent + 1; h <= Math.min(hosts, a * hostsPerAgent); h++) hostIds.push(`host-${h}`);
    const name = `agent-${a}`;
    plans.push({
      name,
      role: "host-agent",
      args: [
        "--agent-id", name,
        "--hosts", hostIds.join(","),
        "--pcpus", String(options.pcpus),
        "--memory-mib", String(options.memoryMib),
      ],
      hostIds,
    });
  }
  return plans;
}
