// Security groups: named sets of allow rules for a NIC's inbound traffic,
// kept in the fenced store <prefix>-security-groups. The compiler turns a
// NIC's groups into conntrack flows on its host (default deny inbound,
// replies and admitted connections pass); a change of a group's rules
// recompiles every host with a NIC in it.

import { alreadyExists, checkName, checkRange, formatCidr, invalidArgument, notFound, parseCidr, uniqueId } from "@simdc/common";
import { simdc } from "@simdc/proto";
import type { FencedStore } from "../store/fenced-store.js";
import { Tombstones } from "../store/tombstones.js";
import { SortedKeys } from "../store/sorted-keys.js";

import v1 = simdc.v1;

export const rulesPerGroupMax = 64;
export const groupsPerNicMax = 8;

/**
 * A rule as stored: the protocol given, ports only for TCP and UDP (0-0
 * meaning all), the remote CIDR normalized.
 * @throws SimdcError INVALID_ARGUMENT naming the rule.
 */
export function checkRule(rule: v1.ISecurityRule, at: string): v1.SecurityRule {
  const protocol = rule.protocol ?? 0;
  if (!(protocol in v1.SecurityProtocol) || protocol === v1.SecurityProtocol.SECURITY_PROTOCOL_UNSPECIFIED) throw invalidArgument(`${at}.protocol must be any, icmp, tcp or udp`);
  const ported = protocol === v1.SecurityProtocol.SECURITY_PROTOCOL_TCP || protocol === v1.SecurityProtocol.SECURITY_PROTOCOL_UDP;
  let portMin = rule.portMin ?? 0;
  let portMax = rule.portMax ?? 0;
  if (!ported && (portMin || portMax)) throw invalidArgument(`${at}: ports are for tcp and udp rules`);
  if (portMin || portMax) {
    checkRange(`${at}.port_min`, portMin, 1, 65_535);
    checkRange(`${at}.port_max`, portMax, 1, 65_535);
    if (portMax < portMin) throw invalidArgument(`${at}: port_max ${portMax} is below port_min ${portMin}`);
  } else portMin = portMax = 0;
  const remoteCidr = rule.remoteCidr ? formatCidr(parseCidr(rule.remoteCidr)) : "";
  return v1.SecurityRule.create({ protocol, portMin, portMax, remoteCidr });
}

function checkRules(rules: v1.ISecurityRule[]): v1.SecurityRule[] {
  if (rules.length > rulesPerGroupMax) throw invalidArgument(`a security group has at most ${rulesPerGroupMax} rules`);
  return rules.map((r, i) => checkRule(r, `rules[${i}]`));
}

export class SecurityGroups {
  private readonly ids = new SortedKeys();
  private readonly listeners: ((groupId: string) => void)[] = [];

  /** Deleted records kept for replays (deletedBy) until purged. */
  readonly tombstones: Tombstones<v1.SecurityGroupRecord>;

  constructor(private readonly store: FencedStore<v1.SecurityGroupRecord>) {
    this.tombstones = new Tombstones(store, (r) => !!r.securityGroup, (requestIds, deletedAtMs) => v1.SecurityGroupRecord.create({ requestIds, deletedAtMs }));
    for (const [id, entry] of store.all()) if (entry.value.securityGroup) this.ids.add(id);
    store.onChange((id, before, after) => {
      if (after?.value.securityGroup) this.ids.add(id);
      else this.ids.delete(id);
      const rulesBefore = JSON.stringify(before?.value.securityGroup?.rules ?? null);
      if (rulesBefore !== JSON.stringify(after?.value.securityGroup?.rules ?? null)) for (const listener of this.listeners) listener(id);
    });
  }

  /** Told the group whose rules changed (appeared, were replaced or went). */
  onRulesChanged(listener: (groupId: string) => void): void {
    this.listeners.push(listener);
  }

  get(id: string): v1.SecurityGroup | undefined {
    return (this.store.get(id)?.value.securityGroup as v1.SecurityGroup | undefined) ?? undefined;
  }

  /** @throws SimdcError NOT_FOUND. */
  require(id: string): { record: v1.SecurityGroupRecord; revision: number } {
    const entry = this.store.get(id);
    if (!entry?.value.securityGroup) throw notFound(`security group ${id} not found`);
    return { record: entry.value, revision: entry.revision };
  }

  idsAfter(after: string, limit: number): string[] {
    return this.ids.after(after, limit);
  }

  /** @throws SimdcError INVALID_ARGUMENT for a bad name or rule, ALREADY_EXISTS for a taken name. */
  async create(name: string, rules: v1.ISecurityRule[], nowMs: number, requestIds: string[]): Promise<v1.SecurityGroup> {
    const id = checkName("name", name);
    if (this.store.get(id)?.value.securityGroup) throw alreadyExists(`security group ${id} exists already`);
    const securityGroup = v1.SecurityGroup.create({ id, rules: checkRules(rules), incarnation: uniqueId(), createdAtMs: nowMs, revision: 1 });
    await this.store.write(id, v1.SecurityGroupRecord.create({ securityGroup, requestIds }), this.tombstones.revisionFor(id));
    return securityGroup;
  }

  /** Replaces the rules (at the revision read, so two updates cannot both land on the same one). */
  async update(id: string, rules: v1.ISecurityRule[], requestIds: (held: string[]) => string[]): Promise<v1.SecurityGroup> {
    const { record, revision } = this.require(id);
    const before = record.securityGroup as v1.SecurityGroup;
    const securityGroup = v1.SecurityGroup.create({ ...before, rules: checkRules(rules), revision: before.revision + 1 });
    await this.store.write(id, v1.SecurityGroupRecord.create({ securityGroup, requestIds: requestIds(record.requestIds) }), revision);
    return securityGroup;
  }

  /** Deletes the group held at `revision`, leaving a tombstone of `requestId`. */
  async remove(id: string, revision: number, requestId: string, nowMs: number): Promise<void> {
    await this.tombstones.bury(id, revision, this.store.get(id)!.value, requestId, nowMs);
  }


  /** The group a request made or changed (for a replay when its answer was not stored). */
  byRequest(requestId: string): v1.SecurityGroup | undefined {
    for (const [, entry] of this.store.all()) if (entry.value.requestIds.includes(requestId)) return (entry.value.securityGroup as v1.SecurityGroup | undefined) ?? undefined;
    return undefined;
  }

  /**
   * A NIC's groups, checked: each must exist, none twice.
   * @throws SimdcError INVALID_ARGUMENT, NOT_FOUND naming the NIC.
   */
  checkNicGroups(groups: readonly string[], at: string): string[] {
    if (groups.length > groupsPerNicMax) throw invalidArgument(`${at}: a NIC is in at most ${groupsPerNicMax} security groups`);
    const out: string[] = [];
    for (const g of groups) {
      const id = checkName(`${at}.security_groups`, g);
      if (out.includes(id)) throw invalidArgument(`${at}: security group ${id} is named twice`);
      if (!this.get(id)) throw notFound(`${at}: security group ${id} does not exist`);
      out.push(id);
    }
    return out;
  }
}
