// Open vSwitch is the oracle: random flow tables (three tables, masks and
// prefixes, resubmit, goto_table, header and VLAN rewrites, in_port and
// output to the in_port, and connection tracking: ct(table=N,zone=Z) forking
// a copy to a later table, ct(commit,zone=Z), ct_clear, and later tables
// matching ct_state and ct_zone) and random packets, generated from a seed
// that is printed, go through OVS's ofproto/trace and through simdc's
// vswitch, which must agree on every packet: the output ports in order (the
// packet's, then each recirculated copy's) and the final headers, ct_state
// and ct_zone included (the last copy's when there is one). ofproto/trace
// does not run a tracker: it resumes every copy as --ct-next says, here
// trk,new, which is what simdc's dry-run trace sees for a packet of no known
// connection; so this proves the pipeline around ct, not the tracker (its
// unit tests do). SIMDC_ORACLE_SEED repeats a run.

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freshSeed, Rng } from "@simdc/common";
import { packetFields, parsePacket, recirculationsMax, Vswitch } from "@simdc/vswitch";
import { Ovs, ovsInstalled } from "./ovs.js";

const inCi = ["true", "1"].includes(process.env["CI"] ?? "");
const seed = Number(process.env["SIMDC_ORACLE_SEED"] ?? freshSeed());
const rounds = 12;
const packetsPerRound = 40;
const ports = [1, 2, 3, 4];

const macs = ["02:00:00:00:00:01", "02:00:00:00:00:02", "02:00:00:00:01:01", "0a:00:00:00:00:03"];
const ips = ["10.0.0.1", "10.0.0.2", "10.0.1.7", "10.1.2.3", "192.168.1.10"];
const tpPorts = [22, 80, 443, 8080];
const ctZones = 4;
const ctStates = ["+trk+new", "+trk+est", "-trk", "+trk"];
/**
 * The ct_state OVS resumes each recirculated copy with: a packet of no known
 * connection, as simdc's trace sees it. One per copy, for as many copies as
 * simdc makes of one packet.
 */
const ctNext = Array.from({ length: recirculationsMax }, () => "trk,new");

/**
 * Flows and packets from `rng`; the conntrack matches and actions come from
 * a stream of their own, so a seed gives the same tables as before ct was
 * added, with ct woven in.
 */
function generator(rng: Rng) {
  const pick = <T>(items: readonly T[]): T => items[rng.below(items.length)]!;
  const chance = (p: number): boolean => rng.next() < p;
  const ctRng = rng.derive("ct");
  const ctPick = <T>(items: readonly T[]): T => items[ctRng.below(items.length)]!;
  const ctChance = (p: number): boolean => ctRng.next() < p;
  /** Inserts ct actions among `actions` (before a final goto_table); OVS refuses ct in a flow that does not match ip. */
  const addCt = (table: number, isIp: boolean, actions: string[]): void => {
    const insert = (action: string): void => {
      const end = actions.length > 0 && actions[actions.length - 1]!.startsWith("goto_table") ? actions.length - 1 : actions.length;
      actions.splice(ctRng.below(end + 1), 0, action);
    };
    if (isIp && table < 2 && ctChance(0.6)) insert(`ct(table=${table + 1 + ctRng.below(2 - table)},zone=${ctRng.below(ctZones)})`);
    if (isIp && ctChance(0.2)) insert(`ct(commit,zone=${ctRng.below(ctZones)})`);
    if (ctChance(0.1)) insert("ct_clear");
  };
  const flow = (table: number, priority: number): string => {
    const match: string[] = [`table=${table}`, `priority=${priority}`];
    const proto = pick(["", "", "ip", "tcp", "udp", "arp"]);
    if (proto) match.push(proto);
    if (chance(0.3)) match.push(`in_port=${pick(ports)}`);
    if (chance(0.25)) match.push(`dl_src=${pick(macs)}${chance(0.3) ? "/ff:ff:ff:00:00:00" : ""}`);
    if (chance(0.25)) match.push(`dl_dst=${pick(macs)}`);
    if (chance(0.2)) match.push(`dl_vlan=${pick(["0xffff", "10", "20"])}`);
    const isIp = proto === "ip" || proto === "tcp" || proto === "udp";
    const hasNw = isIp || proto === "arp";
    if (hasNw && chance(0.4)) match.push(`nw_dst=${pick(ips)}/${pick([8, 16, 24, 32])}`);
    if (hasNw && chance(0.3)) match.push(`nw_src=${pick(ips)}${chance(0.5) ? "/24" : ""}`);
    const hasTp = proto === "tcp" || proto === "udp";
    if (hasTp && chance(0.4)) match.push(`tp_dst=${pick(tpPorts)}`);
    if (table > 0 && chance(0.3)) match.push(`reg0=${rng.below(3)}`);
    if (table > 0 && chance(0.2)) match.push(`metadata=${rng.below(3)}`);
    if (table > 0 && ctChance(0.35)) match.push(`ct_state=${ctPick(ctStates)}`);
    if (table > 0 && ctChance(0.2)) match.push(`ct_zone=${ctRng.below(ctZones)}`);
    const actions: string[] = [];
    const count = rng.below(4);
    for (let i = 0; i < count; i++) {
      const options = ["output", "output", "in_port", "set_reg", "set_meta", "mod_dl", "vlan", "strip"];
      if (isIp) options.push("mod_nw");
      if (hasTp) options.push("mod_tp");
      if (table < 2) options.push("resubmit");
      switch (pick(options)) {
        case "output":
          actions.push(`output:${pick(ports)}`);
          break;
        case "in_port":
          actions.push("in_port");
          break;
        case "set_reg":
          actions.push(`set_field:${rng.below(3)}->reg0`);
          break;
        case "set_meta":
          actions.push(`set_field:${rng.below(3)}->metadata`);
          break;
        case "mod_dl":
          actions.push(`mod_dl_${pick(["src", "dst"])}:${pick(macs)}`);
          break;
        case "vlan":
          actions.push(`mod_vlan_vid:${pick([10, 20, 30])}`);
          break;
        case "strip":
          actions.push("strip_vlan");
          break;
        case "mod_nw":
          actions.push(`mod_nw_${pick(["src", "dst"])}:${pick(ips)}`);
          break;
        case "mod_tp":
          actions.push(`mod_tp_${pick(["src", "dst"])}:${pick(tpPorts)}`);
          break;
        case "resubmit":
          actions.push(`resubmit(,${table + 1 + rng.below(2 - table)})`);
          break;
      }
    }
    if (table < 2 && chance(0.3)) actions.push(`goto_table:${table + 1}`);
    addCt(table, isIp, actions);
    return `${match.join(",")},actions=${actions.length ? actions.join(",") : "drop"}`;
  };
  const table = (): string[] => {
    const flows: string[] = [];
    for (let t = 0; t < 3; t++) {
      // Distinct priorities: OpenFlow leaves ties between overlapping flows undefined.
      const priorities = new Set<number>();
      while (priorities.size < 5 + rng.below(8)) priorities.add(1 + rng.below(1000));
      for (const p of priorities) flows.push(flow(t, p));
    }
    return flows;
  };
  const packet = (): string => {
    const parts = [`in_port=${pick(ports)}`];
    const proto = pick(["ip", "tcp", "udp", "arp", ""]);
    if (proto) parts.push(proto);
    parts.push(`dl_src=${pick(macs)}`, `dl_dst=${pick(macs)}`);
    if (chance(0.3)) parts.push(`dl_vlan=${pick([10, 20])}`);
    if (proto === "arp") parts.push(`arp_spa=${pick(ips)}`, `arp_tpa=${pick(ips)}`);
    else if (proto) parts.push(`nw_src=${pick(ips)}`, `nw_dst=${pick(ips)}`);
    // In packets OVS takes the protocol's own names (udp_src, not tp_src).
    if (proto === "tcp" || proto === "udp") parts.push(`${proto}_src=${pick(tpPorts)}`, `${proto}_dst=${pick(tpPorts)}`);
    return parts.join(",");
  };
  return { table, packet };
}

/** The fields both sides report, normalized: OVS prints vlan_tci or dl_vlan, and omits zero registers and ct fields. */
function ovsFinal(final: Record<string, string>): Record<string, string> {
  const tci = final["vlan_tci"] !== undefined ? BigInt(final["vlan_tci"]) : undefined;
  const vlan = final["dl_vlan"] ?? (tci !== undefined && (tci & 0x1000n) !== 0n ? String(tci & 0xfffn) : "0xffff");
  const num = (v: string | undefined): string => (v === undefined ? "0" : BigInt(v).toString());
  return {
    dl_src: final["dl_src"] ?? "",
    dl_dst: final["dl_dst"] ?? "",
    dl_vlan: vlan,
    nw_src: final["nw_src"] ?? final["arp_spa"] ?? "0.0.0.0",
    nw_dst: final["nw_dst"] ?? final["arp_tpa"] ?? "0.0.0.0",
    tp_src: num(final["tp_src"]),
    tp_dst: num(final["tp_dst"]),
    reg0: num(final["reg0"]),
    metadata: num(final["metadata"]),
    ct_state: final["ct_state"] ?? "0",
    ct_zone: num(final["ct_zone"]),
  };
}

function ours(fieldsOut: Record<string, string>): Record<string, string> {
  return {
    dl_src: fieldsOut["dl_src"]!,
    dl_dst: fieldsOut["dl_dst"]!,
    dl_vlan: fieldsOut["dl_vlan"]!,
    nw_src: fieldsOut["nw_src"]!,
    nw_dst: fieldsOut["nw_dst"]!,
    tp_src: BigInt(fieldsOut["tp_src"]!).toString(),
    tp_dst: BigInt(fieldsOut["tp_dst"]!).toString(),
    reg0: BigInt(fieldsOut["reg0"]!).toString(),
    metadata: BigInt(fieldsOut["metadata"]!).toString(),
    ct_state: fieldsOut["ct_state"]!,
    ct_zone: BigInt(fieldsOut["ct_zone"]!).toString(),
  };
}

describe.skipIf(!ovsInstalled && !inCi)("ovs oracle", () => {
  let ovs: Ovs;

  beforeAll(() => {
    if (!ovsInstalled) throw new Error("no Open vSwitch under CI: scripts/setup.sh --docker installs openvswitch-switch");
    ovs = Ovs.start(ports.length);
  });

  afterAll(() => {
    ovs?.stop();
  });

  it(`ovs oracle: the vswitch agrees with Open vSwitch on ${rounds} random tables of ${packetsPerRound} random packets (seed ${seed})`, () => {
    console.info(`ovs oracle: seed ${seed} (SIMDC_ORACLE_SEED=${seed} repeats it)`);
    const gen = generator(new Rng(seed, "ovs-oracle"));
    let compared = 0;
    // Packets a ct(table=N) forked, and the copies it made: the oracle must reach the pipeline after ct.
    let forked = 0;
    let copies = 0;
    for (let round = 0; round < rounds; round++) {
      const flows = gen.table();
      ovs.loadFlows(flows);
      const vs = new Vswitch({ ports, now: () => 0 });
      for (const f of flows) vs.addFlow(f);
      for (let i = 0; i < packetsPerRound; i++) {
        const packet = gen.packet();
        const expected = ovs.trace(packet, ctNext);
        const got = vs.trace(parsePacket(packet));
        const context = `seed ${seed}, round ${round}, packet ${packet}\nflows:\n${flows.join("\n")}\nOVS:\n${expected.raw}`;
        expect(got.outputs, context).toEqual(expected.outputs);
        expect(ours(packetFields(got.packet)), context).toEqual(ovsFinal(expected.final));
        compared += 1;
        if (expected.recirculations > 0) forked += 1;
        copies += expected.recirculations;
      }
    }
    console.info(`ovs oracle: ${forked} of ${compared} packets forked through ct(table=N), ${copies} copies`);
    expect(compared).toBe(rounds * packetsPerRound);
    expect(forked).toBeGreaterThan(0);
  }, 300_000);
});
