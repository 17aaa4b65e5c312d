// Checks the network section of a host's document at the edge: every flow
// parses, every port, tunnel and neighbor is well formed, no ofport is used
// twice. A bad section refuses the whole document, so the vswitch goes on
// with the flows it has.

import { checkName, invalidArgument } from "@simdc/common";
import { simdc } from "@simdc/proto";
import { parseFlow, parseIp, parseMac, type FlowSpec } from "@simdc/vswitch";

import v1 = simdc.v1;

/** VM ports are numbered below this; tunnels from it. */
export const tunnelOfportMin = 0xf000;
const ofportMax = 0xfeff;

export interface NicPort {
  ofport: number;
  vmId: string;
  nicIndex: number;
  networkId: string;
  segment: bigint;
  mac: bigint;
  ip: bigint;
  prefixLength: number;
  gateway: bigint;
  leaseS: number;
  /** An external endpoint: addressed as given, up while plugged. */
  external: boolean;
  /** The security groups whose admissions the host expands for this port. */
  securityGroups: readonly string[];
}

export interface Tunnel {
  ofport: number;
  hostId: string;
  agentId: string;
}

/** A host's share of the logical networks, checked. */
export interface NetworkSection {
  ports: NicPort[];
  tunnels: Tunnel[];
  flows: FlowSpec[];
  /** The flows as the document wrote them, one a flow, in the same order: a flow whose text is installed already needs nothing done. */
  flowTexts: string[];
  /** segment -> ip -> mac, for the ARP responder. */
  neighbors: Map<bigint, Map<bigint, bigint>>;
  controllerTables: number;
  /** Segments whose tunnels leave by the dedicated NIC. */
  dedicatedSegments: Set<bigint>;
}

/**
 * Flows parsed before, by their text: a host's next document repeats almost
 * every flow of its last, and an agent's hosts share many, so each text is
 * parsed once (FlowSpecs are never changed after parsing). Bounded in two
 * generations: a text looked up lives in the young one; when that fills, the
 * old one is dropped and the young one becomes old, so what is in use stays.
 * (One map emptied whole at 200,000 texts made an agent of 500 hosts x 900
 * flows parse nearly every flow of every document again.)
 */
let youngParsed = new Map<string, FlowSpec>();
let oldParsed = new Map<string, FlowSpec>();
const parsedGenerationMax = 500_000;

export function parsedFlow(line: string): FlowSpec {
  let flow = youngParsed.get(line);
  if (flow) return flow;
  flow = oldParsed.get(line) ?? parseFlow(line);
  if (youngParsed.size >= parsedGenerationMax) {
    oldParsed = youngParsed;
    youngParsed = new Map();
  }
  youngParsed.set(line, flow);
  return flow;
}

/** The empty section: a host with no port on any network. */
export const noNetwork: NetworkSection = { ports: [], tunnels: [], flows: [], flowTexts: [], neighbors: new Map(), controllerTables: 0, dedicatedSegments: new Set() };

/** @throws SimdcError INVALID_ARGUMENT naming the first bad item. */
export function checkNetworkSection(raw: v1.IHostNetwork | null | undefined): NetworkSection {
  if (!raw) return noNetwork;
  const used = new Set<number>();
  const take = (what: string, ofport: number, min: number, max: number): number => {
    if (!Number.isInteger(ofport) || ofport < min || ofport > max) throw invalidArgument(`${what}: ofport ${ofport} is not in ${min}-${max}`);
    if (used.has(ofport)) throw invalidArgument(`${what}: ofport ${ofport} is used twice`);
    used.add(ofport);
    return ofport;
  };
  const ports = (raw.ports ?? []).map((p, i): NicPort => {
    const what = `network ports[${i}]`;
    const prefixLength = p.prefixLength ?? 0;
    if (prefixLength < 1 || prefixLength > 32) throw invalidArgument(`${what}: prefix_length ${prefixLength} is not 1-32`);
    return {
      ofport: take(what, p.ofport ?? 0, 1, tunnelOfportMin - 1),
      vmId: checkName(`${what}.vm_id`, p.vmId ?? ""),
      nicIndex: p.nicIndex ?? 0,
      networkId: checkName(`${what}.network_id`, p.networkId ?? ""),
      segment: BigInt(p.segmentId ?? 0),
      mac: parseMac(p.mac ?? ""),
      ip: parseIp(p.ip ?? ""),
      prefixLength,
      gateway: p.gateway ? parseIp(p.gateway) : 0n,
      leaseS: Math.max(60, p.leaseS ?? 0),
      external: p.external ?? false,
      securityGroups: (p.securityGroups ?? []).map((g, j) => checkName(`${what}.security_groups[${j}]`, g)),
    };
  });
  const tunnels = (raw.tunnels ?? []).map((t, i): Tunnel => {
    const what = `network tunnels[${i}]`;
    return { ofport: take(what, t.ofport ?? 0, tunnelOfportMin, ofportMax), hostId: checkName(`${what}.host_id`, t.hostId ?? ""), agentId: checkName(`${what}.agent_id`, t.agentId ?? "") };
  });
  const flowTexts = raw.flows ?? [];
  const flows = flowTexts.map((line, i) => {
    try {
      return parsedFlow(line);
    } catch (err) {
      throw invalidArgument(`network flows[${i}]: ${(err as Error).message}`);
    }
  });
  const neighbors = new Map<bigint, Map<bigint, bigint>>();
  for (const [i, n] of (raw.neighbors ?? []).entries()) {
    let bySegment = neighbors.get(BigInt(n.segmentId ?? 0));
    if (!bySegment) neighbors.set(BigInt(n.segmentId ?? 0), (bySegment = new Map()));
    try {
      bySegment.set(parseIp(n.ip ?? ""), parseMac(n.mac ?? ""));
    } catch (err) {
      throw invalidArgument(`network neighbors[${i}]: ${(err as Error).message}`);
    }
  }
  return { ports, tunnels, flows, flowTexts, neighbors, controllerTables: raw.controllerTables ?? 0, dedicatedSegments: new Set((raw.dedicatedSegments ?? []).map((s) => BigInt(s))) };
}
