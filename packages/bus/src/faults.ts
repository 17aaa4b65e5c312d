// Decides what the fault rules do to one message: deliver it, drop it,
// delay it or deliver copies. Pure: it sees a subject, the identities of
// sender and receiver and the message's place in its sender's stream, and
// its sampling is a hash of the run's seed and those, so a rerun with the
// same seed decides the same on the same messages, whatever order they
// arrive in.

import { invalidArgument, checkName, unitHash } from "@simdc/common";
import { simdc } from "@simdc/proto";

import v1 = simdc.v1;

/** Caps that keep a rule from hurting the process that applies it. */
export const faultDelayMsMax = 60_000;
export const faultCopiesMax = 10;
export const faultRulesMax = 256;

export type FaultVerdict =
  | { kind: "deliver" }
  | { kind: "drop"; ruleId: string }
  | { kind: "delay"; delayMs: number; ruleId: string }
  | { kind: "duplicate"; copies: number; ruleId: string };

const deliver: FaultVerdict = { kind: "deliver" };

interface CompiledRule {
  rule: v1.FaultRule;
  subject: string[] | null;
  percent: number;
  /** Whether the rule has a start or an end, so the clock is read only for those. */
  timed: boolean;
}

/** True when `subject` matches the NATS pattern tokens (`*` one token, `>` the rest). */
export function subjectMatches(pattern: string[], subject: string): boolean {
  const tokens = subject.split(".");
  for (let i = 0; i < pattern.length; i++) {
    const p = pattern[i];
    if (p === ">") return tokens.length > i;
    if (i >= tokens.length) return false;
    if (p !== "*" && p !== tokens[i]) return false;
  }
  return tokens.length === pattern.length;
}

const subjectPattern = /^([^.\s*>]+|\*)(\.([^.\s*>]+|\*))*(\.>)?$|^>$/;

/**
 * A checked copy of a rule, with defaults made explicit.
 * @throws SimdcError INVALID_ARGUMENT for an unknown action, a bad subject
 * pattern or identity, or values out of range.
 */
export function checkFaultRule(rule: v1.FaultRule.$Properties): v1.FaultRule {
  const id = checkName("rule id", rule.id ?? "");
  const action = rule.action ?? 0;
  if (!(action in v1.FaultAction) || action === v1.FaultAction.FAULT_ACTION_UNSPECIFIED) {
    throw invalidArgument(`rule ${id}: action must be drop, delay, duplicate or partition`);
  }
  const subject = rule.subject ?? "";
  if (subject && !subjectPattern.test(subject)) throw invalidArgument(`rule ${id}: subject ${JSON.stringify(subject)} is not a NATS subject pattern`);
  const source = rule.source ? checkName(`rule ${id} source`, rule.source) : "";
  const destination = rule.destination ? checkName(`rule ${id} destination`, rule.destination) : "";
  if (action === v1.FaultAction.FAULT_ACTION_PARTITION && !source) throw invalidArgument(`rule ${id}: a partition needs a source`);
  const percent = rule.percent ?? 0;
  if (percent > 100) throw invalidArgument(`rule ${id}: percent must be 1-100`);
  const delayMs = rule.delayMs ?? 0;
  const jitterMs = rule.jitterMs ?? 0;
  if (delayMs + jitterMs > faultDelayMsMax) throw invalidArgument(`rule ${id}: delay plus jitter must be at most ${faultDelayMsMax} ms`);
  if (action === v1.FaultAction.FAULT_ACTION_DELAY && delayMs + jitterMs === 0) throw invalidArgument(`rule ${id}: a delay needs --delay-ms or --jitter-ms`);
  const copies = rule.copies ?? 0;
  if (copies > faultCopiesMax) throw invalidArgument(`rule ${id}: copies must be at most ${faultCopiesMax}`);
  const startsAtMs = rule.startsAtMs ?? 0;
  const endsAtMs = rule.endsAtMs ?? 0;
  if (!(startsAtMs >= 0) || !(endsAtMs >= 0)) throw invalidArgument(`rule ${id}: start and end must be times, not ${startsAtMs} and ${endsAtMs}`);
  if (endsAtMs && endsAtMs <= startsAtMs) throw invalidArgument(`rule ${id}: it must end after it starts`);
  return v1.FaultRule.create({ id, action, subject, source, destination, percent: percent || 100, delayMs, jitterMs, copies: copies || 1, startsAtMs, endsAtMs });
}

/** Where a rule stands at `nowMs`: not started yet, in force, or over. */
export function faultRulePhase(rule: v1.FaultRule.$Properties, nowMs: number): "pending" | "active" | "ended" {
  if (rule.startsAtMs && nowMs < rule.startsAtMs) return "pending";
  if (rule.endsAtMs && nowMs >= rule.endsAtMs) return "ended";
  return "active";
}

/** Which message is judged: who sent it first-hand, and its number among that sender's messages on its subject. */
export interface MessageKey {
  sender: string;
  seq: number;
}

export class FaultRules {
  private readonly rules: CompiledRule[];

  /**
   * @param seed the run's seed; with the message key it decides percent
   * sampling and jitter.
   * @param now simulated time, for rules with a start or an end.
   */
  constructor(
    readonly generation: number,
    rules: v1.FaultRule.$Properties[],
    private readonly seed = 0,
    private readonly now: () => number = () => 0,
  ) {
    this.rules = rules.map((r) => {
      const rule = checkFaultRule(r);
      return { rule, subject: rule.subject ? rule.subject.split(".") : null, percent: rule.percent, timed: rule.startsAtMs > 0 || rule.endsAtMs > 0 };
    });
  }

  /** The ids of the rules, in the order they are tried. */
  get ruleIds(): string[] {
    return this.rules.map((r) => r.rule.id);
  }

  get empty(): boolean {
    return this.rules.length === 0;
  }

  /**
   * The first matching rule decides. `sources` and `destinations` are the
   * identities of sender and receiver (ids, process id, role); `key` names
   * the message for sampling (a reply is keyed by its request, with
   * `leg` "reply", so its fate is independent of the request's).
   */
  decide(
    subject: string,
    sources: readonly string[],
    destinations: readonly string[],
    key: MessageKey = { sender: "", seq: 0 },
    leg = "",
  ): FaultVerdict {
    for (const { rule, subject: pattern, percent, timed } of this.rules) {
      if (pattern && !subjectMatches(pattern, subject)) continue;
      if (timed && faultRulePhase(rule, this.now()) !== "active") continue;
      if (!this.matchesEnds(rule, sources, destinations)) continue;
      if (percent < 100 && unitHash(this.seed, rule.id, key.sender, subject, key.seq, leg) * 100 >= percent) continue;
      switch (rule.action) {
        case v1.FaultAction.FAULT_ACTION_DROP:
        case v1.FaultAction.FAULT_ACTION_PARTITION:
          return { kind: "drop", ruleId: rule.id };
        case v1.FaultAction.FAULT_ACTION_DELAY: {
          const jitter = Math.floor(unitHash(this.seed, rule.id, key.sender, subject, key.seq, leg, "jitter") * (rule.jitterMs + 1));
          return { kind: "delay", delayMs: rule.delayMs + jitter, ruleId: rule.id };
        }
        case v1.FaultAction.FAULT_ACTION_DUPLICATE:
          return { kind: "duplicate", copies: rule.copies, ruleId: rule.id };
      }
    }
    return deliver;
  }

  private matchesEnds(rule: v1.FaultRule, sources: readonly string[], destinations: readonly string[]): boolean {
    const from = (id: string): boolean => !id || sources.includes(id);
    const to = (id: string): boolean => !id || destinations.includes(id);
    if (rule.action !== v1.FaultAction.FAULT_ACTION_PARTITION) return from(rule.source) && to(rule.destination);
    // Symmetric: source -> destination and destination -> source.
    if (!rule.destination) return sources.includes(rule.source) || destinations.includes(rule.source);
    return (
      (sources.includes(rule.source) && destinations.includes(rule.destination)) ||
      (sources.includes(rule.destination) && destinations.includes(rule.source))
    );
  }
}
