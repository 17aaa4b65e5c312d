// The security groups' documents as an agent holds them: a guarded port
// gets one admission flow per match of its groups (each once, a group with
// no document admitting nothing), an unguarded section is left as it is; a
// document older than the one held, or from a deposed controller, is not
// taken; a malformed one, or one whose matches would smuggle actions or
// another table into a host's flows, is refused and changes nothing.

import { describe, expect, it } from "vitest";
import { simdc } from "@simdc/proto";
import { SecurityGroupBook } from "./groups.js";
import { checkNetworkSection } from "./section.js";

import v1 = simdc.v1;

const doc = (groupId: string, generation: number, admissions: string[], epoch = 1, stateId = "s1") => v1.GroupDocument.create({ groupId, generation, epoch, stateId, admissions });

const section = (groups: string[][]) =>
  checkNetworkSection({
    ports: groups.map((securityGroups, i) => ({ ofport: i + 1, vmId: `vm${i}`, networkId: "blue", segmentId: 1, mac: `02:00:00:00:00:0${i + 1}`, ip: `10.1.0.${i + 2}`, prefixLength: 24, securityGroups })),
    flows: ["table=0,priority=0 actions=drop"],
  });

describe("security group documents", () => {
  it("groups: a guarded port gets each match of its groups once, for its own ofport; a group with no document admits nothing; the generations used are reported", () => {
    const book = new SecurityGroupBook();
    expect(book.take("web", doc("web", 5, ["tcp,tp_dst=80", "icmp,nw_src=10.1.0.0/24"]))).toBe(true);
    expect(book.take("ops", doc("ops", 7, ["icmp,nw_src=10.1.0.0/24", "udp,tp_dst=0x34/0xfffe"]))).toBe(true);
    const { section: expanded, groups } = book.expand(section([["web", "ops", "gone"], []]));
    expect(expanded.flowTexts).toEqual([
      "table=0,priority=0 actions=drop",
      "table=35,priority=100,reg6=1,ct_state=+trk+new,tcp,tp_dst=80 actions=ct(commit,zone=1),output:1",
      "table=35,priority=100,reg6=1,ct_state=+trk+new,icmp,nw_src=10.1.0.0/24 actions=ct(commit,zone=1),output:1",
      "table=35,priority=100,reg6=1,ct_state=+trk+new,udp,tp_dst=0x34/0xfffe actions=ct(commit,zone=1),output:1",
    ]);
    expect(expanded.flows).toHaveLength(expanded.flowTexts.length);
    expect([...groups]).toEqual([
      ["web", 5],
      ["ops", 7],
      ["gone", 0],
    ]);
    // No guarded port: the very section, nothing reported.
    const plain = section([[]]);
    expect(book.expand(plain)).toEqual({ section: plain, groups: new Map() });
    expect(SecurityGroupBook.uses(expanded, "ops")).toBe(true);
    expect(SecurityGroupBook.uses(expanded, "other")).toBe(false);
    // A group that went admits nothing any more.
    book.remove("web");
    expect(book.expand(section([["web"]])).section.flowTexts).toEqual(["table=0,priority=0 actions=drop"]);
  });

  it("groups: an older or equal generation, or an older epoch of the same state, is not taken; a new stored state's document is", () => {
    const book = new SecurityGroupBook();
    const admitted = () => book.expand(section([["web"]])).section.flowTexts.slice(1);
    expect(book.take("web", doc("web", 5, ["tcp,tp_dst=80"], 2))).toBe(true);
    expect(book.take("web", doc("web", 4, ["udp"], 2))).toBe(false);
    expect(book.take("web", doc("web", 5, ["udp"], 2))).toBe(false);
    // A deposed controller (epoch 1) writing after the takeover.
    expect(book.take("web", doc("web", 9, ["udp"], 1))).toBe(false);
    expect(admitted()).toEqual(["table=35,priority=100,reg6=1,ct_state=+trk+new,tcp,tp_dst=80 actions=ct(commit,zone=1),output:1"]);
    // The store was lost and started afresh: its generations begin again.
    expect(book.take("web", doc("web", 1, ["udp"], 1, "s2"))).toBe(true);
    expect(admitted()).toEqual(["table=35,priority=100,reg6=1,ct_state=+trk+new,udp actions=ct(commit,zone=1),output:1"]);
  });

  it("groups: a malformed document, or a match that would smuggle actions, a table or a register into the host's flows, is refused and nothing is taken", () => {
    const book = new SecurityGroupBook();
    book.take("web", doc("web", 1, ["icmp"]));
    for (const [key, bad, reason] of [
      ["web", doc("web", 2, ["icmp actions=output:9"]), /is not a protocol or an nw_src\/tp_dst match/],
      ["web", doc("web", 2, ["tcp,tp_dst=80 actions=drop"]), /is not a protocol or an nw_src\/tp_dst match/],
      ["web", doc("web", 2, ["ip,reg6=2"]), /"reg6=2" is not a protocol/],
      ["web", doc("web", 2, ["in_port=3"]), /"in_port=3" is not a protocol/],
      ["web", doc("web", 2, ["tcp,tp_dst=99999"]), /admissions\[0\]/],
      ["web", doc("web", 2, ["tcp,nw_src=10.0.0.300/8"]), /admissions\[0\]/],
      ["web", doc("web", 2, [""]), /"" is not a protocol/],
      ["web", doc("other", 2, ["icmp"]), /the document under web names group other/],
      ["web", doc("Bad Name", 2, ["icmp"]), /group_id/],
      ["web", doc("web", 2, Array.from({ length: 3000 }, () => "icmp")), /more than 2048/],
    ] as const) {
      expect(() => book.take(key, bad), JSON.stringify(bad.admissions.slice(0, 1))).toThrow(reason);
    }
    expect(book.expand(section([["web"]])).section.flowTexts.slice(1)).toEqual(["table=35,priority=100,reg6=1,ct_state=+trk+new,icmp actions=ct(commit,zone=1),output:1"]);
  });
});
