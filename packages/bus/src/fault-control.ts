// Edits the datacenter's fault rule set in KV with compare-and-set, so two
// operators adding rules at once both land, and every edit bumps the
// generation that processes report once they apply it.

import { alreadyExists, invalidArgument, notFound, resourceExhausted, SimdcError } from "@simdc/common";
import { simdc } from "@simdc/proto";
import type { Bus } from "./bus.js";
import { faultRulesKey } from "./bus.js";
import { checkFaultRule, faultRulesMax } from "./faults.js";

import v1 = simdc.v1;

const editAttemptsMax = 10;

/** The current rule set (generation 0 and no rules when none was ever written). */
export async function readFaultRules(bus: Bus): Promise<v1.FaultRuleSet> {
  const stored = await (await bus.faultRuleBucket()).get(faultRulesKey);
  return stored?.value ?? v1.FaultRuleSet.create({ generation: 0, rules: [] });
}

async function editFaultRules(bus: Bus, edit: (rules: v1.FaultRule[]) => v1.FaultRule[]): Promise<v1.FaultRuleSet> {
  const bucket = await bus.faultRuleBucket();
  for (let attempt = 0; attempt < editAttemptsMax; attempt++) {
    const stored = await bucket.get(faultRulesKey);
    const current = (stored?.value.rules ?? []).map((r) => v1.FaultRule.create(r));
    const next = v1.FaultRuleSet.create({ generation: (stored?.value.generation ?? 0) + 1, rules: edit(current) });
    try {
      if (stored) await bucket.update(faultRulesKey, next, stored.revision);
      else await bucket.create(faultRulesKey, next);
      return next;
    } catch (err) {
      // Someone else edited the set since we read it: read again and redo the edit.
      if (err instanceof SimdcError && (err.code === "CONFLICT" || err.code === "ALREADY_EXISTS")) continue;
      throw err;
    }
  }
  throw new SimdcError("CONFLICT", `fault rules changed under ${editAttemptsMax} attempts in a row; try again`);
}

/**
 * Adds a rule (checked first).
 * @throws SimdcError INVALID_ARGUMENT for a bad rule, ALREADY_EXISTS for a
 * taken id, RESOURCE_EXHAUSTED past faultRulesMax rules.
 */
export async function addFaultRule(bus: Bus, rule: v1.FaultRule.$Properties): Promise<v1.FaultRuleSet> {
  const checked = checkFaultRule(rule);
  return editFaultRules(bus, (rules) => {
    if (rules.some((r) => r.id === checked.id)) throw alreadyExists(`fault rule ${checked.id} exists already`);
    if (rules.length >= faultRulesMax) throw resourceExhausted(`at most ${faultRulesMax} fault rules`);
    return [...rules, checked];
  });
}

/**
 * Removes one rule, or every rule when `id` is absent.
 * @throws SimdcError NOT_FOUND for an unknown id.
 */
export async function clearFaultRules(bus: Bus, id?: string): Promise<v1.FaultRuleSet> {
  if (id !== undefined && id === "") throw invalidArgument("rule id must not be empty");
  return editFaultRules(bus, (rules) => {
    if (id === undefined) return [];
    if (!rules.some((r) => r.id === id)) throw notFound(`no fault rule ${id}`);
    return rules.filter((r) => r.id !== id);
  });
}
