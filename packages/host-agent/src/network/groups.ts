// The security groups' documents as this agent holds them, and their
// expansion into a host's inbound admission flows, as ovn-controller expands
// port groups and ACLs for its own ports: the controller compiles a group's
// rules once into matches; every host with a NIC in the group turns each
// match into a flow for that NIC (admissionFlow). A group's change is then
// one document for all the agents, not one for each host.

import { checkName, invalidArgument } from "@simdc/common";
import { simdc } from "@simdc/proto";
import { admissionFlow, admissionFlows, type FlowSpec } from "@simdc/vswitch";
import { parsedFlow, type NetworkSection } from "./section.js";

import v1 = simdc.v1;

/** What a group document's match may name: what the controller compiles rules into, nothing that could change a flow's meaning. */
const matchProtocols = new Set(["ip", "icmp", "tcp", "udp"]);
const matchFields = new Set(["nw_src", "tp_dst"]);
/** Distinct (port number, groups) expansions kept at most. */
const expansionsMax = 10_000;
/** Admissions a group document may carry: 64 rules of at most 30 masked port matches. */
export const admissionsPerGroupMax = 64 * 32;

interface HeldGroup {
  generation: number;
  epoch: number;
  stateId: string;
  admissions: readonly string[];
}

/**
 * Checks one admission match at the edge: comma-separated protocol words
 * and field=value items of the fields the controller uses, so a document
 * cannot smuggle actions or another table into a host's flows.
 * @throws SimdcError INVALID_ARGUMENT.
 */
export function checkAdmission(match: string, at: string): string {
  const items = match.split(",");
  for (const item of items) {
    const [field, value, extra] = item.split("=");
    const ok = value === undefined ? matchProtocols.has(item) : extra === undefined && matchFields.has(field!) && /^[0-9a-fx./]+$/.test(value);
    if (!ok) throw invalidArgument(`${at}: "${item}" is not a protocol or an nw_src/tp_dst match`);
  }
  try {
    parsedFlow(admissionFlow(1, match));
  } catch (err) {
    throw invalidArgument(`${at}: ${(err as Error).message}`);
  }
  return match;
}

/** One port's admission flows, as expanded for its port number and groups at their generations. */
interface Expansion {
  generations: number[];
  texts: string[];
  flows: FlowSpec[];
}

/** The groups' documents this agent follows, for all its hosts. */
export class SecurityGroupBook {
  private readonly groups = new Map<string, HeldGroup>();
  /**
   * Expansions by port number and groups: an agent's hosts mostly number
   * their NICs alike, so hundreds of hosts share each one, and share its
   * strings and parsed flows (made once, compared by identity after).
   */
  private readonly expansions = new Map<string, Expansion>();

  /**
   * Takes a group's document, checked.
   * @returns false when it is not newer than the one held, or comes from a
   * deposed controller (an older epoch of the same stored state).
   * @throws SimdcError INVALID_ARGUMENT for a malformed document (nothing is taken).
   */
  take(key: string, doc: v1.GroupDocument): boolean {
    const groupId = checkName("group_id", doc.groupId);
    if (groupId !== key) throw invalidArgument(`the document under ${key} names group ${groupId}`);
    if (doc.admissions.length > admissionsPerGroupMax) throw invalidArgument(`${doc.admissions.length} admissions, more than ${admissionsPerGroupMax}`);
    const admissions = doc.admissions.map((m, i) => checkAdmission(m, `admissions[${i}]`));
    const held = this.groups.get(groupId);
    if (held && held.stateId === doc.stateId && (doc.epoch < held.epoch || doc.generation <= held.generation)) return false;
    this.groups.set(groupId, { generation: doc.generation, epoch: doc.epoch, stateId: doc.stateId, admissions });
    return true;
  }

  /** The group is gone: a NIC that still names it is admitted nothing (fails closed). */
  remove(groupId: string): void {
    this.groups.delete(groupId);
  }

  /**
   * The section with its guarded ports' admission flows added (each port's
   * groups' matches, each once), and the generation of each group it used
   * (0: no document yet, so the port admits nothing new until it comes).
   */
  expand(base: NetworkSection): { section: NetworkSection; groups: Map<string, number> } {
    const groups = new Map<string, number>();
    let flows: FlowSpec[] | null = null;
    let flowTexts: string[] | null = null;
    for (const port of base.ports) {
      if (port.securityGroups.length === 0) continue;
      flows ??= [...base.flows];
      flowTexts ??= [...base.flowTexts];
      const expansion = this.expansionOf(port.ofport, port.securityGroups);
      port.securityGroups.forEach((groupId, i) => groups.set(groupId, expansion.generations[i]!));
      for (const text of expansion.texts) flowTexts.push(text);
      for (const flow of expansion.flows) flows.push(flow);
    }
    return { section: flows && flowTexts ? { ...base, flows, flowTexts } : base, groups };
  }

  private expansionOf(ofport: number, groupIds: readonly string[]): Expansion {
    const key = `${ofport}|${groupIds.join("+")}`;
    const generations = groupIds.map((groupId) => this.groups.get(groupId)?.generation ?? 0);
    const known = this.expansions.get(key);
    if (known && known.generations.every((g, i) => g === generations[i])) return known;
    const texts = admissionFlows(ofport, groupIds, (groupId) => this.groups.get(groupId)?.admissions);
    const expansion = { generations, texts, flows: texts.map(parsedFlow) };
    // Bounded like the parsed flows: emptied when it outgrows what an agent's hosts could need.
    if (this.expansions.size >= expansionsMax) this.expansions.clear();
    this.expansions.set(key, expansion);
    return expansion;
  }

  /** Whether the section has a port in the group. */
  static uses(section: NetworkSection, groupId: string): boolean {
    return section.ports.some((p) => p.securityGroups.includes(groupId));
  }
}
