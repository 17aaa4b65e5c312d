// hv_cfg with security groups' documents (pure logic, fakes for the stores):
// a host is behind while its document or a group its NICs use has a newer
// generation stored than it reported installed; what it realized is the
// oldest it is behind on; a wait for a group's generation ends when every
// live host with a NIC in it has installed that generation, not before;
// a group generation never assigned is refused as a report from the future.

import { describe, expect, it } from "vitest";
import { ManualClock } from "@simdc/common";
import type { GroupDocuments } from "../compile/group-documents.js";
import type { HostDocuments } from "../compile/host-documents.js";
import type { MemberRegistry } from "../registry/member-registry.js";
import { HostSync } from "./host-sync.js";
import { simdc } from "@simdc/proto";

import v1 = simdc.v1;

function stage() {
  const docGen = new Map<string, number>([
    ["h1", 3],
    ["h2", 4],
  ]);
  const groupGen = new Map<string, number>([["web", 5]]);
  const onHost = new Map<string, string[]>([
    ["h1", ["web"]],
    ["h2", ["web"]],
    ["h3", []],
  ]);
  const groupListeners: ((g: string) => void)[] = [];
  const newest = { value: 6 };
  const documents = {
    get desiredGeneration() {
      return newest.value;
    },
    get writtenGeneration() {
      return newest.value;
    },
    generationOf: (h: string) => docGen.get(h) ?? 0,
    onStored: () => undefined,
  } as unknown as HostDocuments;
  const groups = { generationOf: (g: string) => groupGen.get(g) ?? 0, onStored: (l: (g: string) => void) => groupListeners.push(l) } as unknown as GroupDocuments;
  const hosts = { isConnected: () => true, all: () => [...onHost.keys()].map((id) => ({ id })) } as unknown as MemberRegistry<v1.Host>;
  const members = { groupsOnHost: (h: string) => onHost.get(h) ?? [], hostsInGroup: (g: string) => [...onHost].filter(([, gs]) => gs.includes(g)).map(([h]) => h) };
  const sync = new HostSync(documents, groups, members, hosts, new ManualClock());
  const storeGroup = (g: string, generation: number) => {
    groupGen.set(g, generation);
    newest.value = Math.max(newest.value, generation);
    for (const l of groupListeners) l(g);
  };
  return { sync, storeGroup };
}

describe("host sync", () => {
  it("host sync: a host behind on a group's document counts as realizing what it installed of it; a wait for the group's generation ends when every host with a NIC in it installed it", async () => {
    const { sync, storeGroup } = stage();
    sync.report("h1", 3, true, [{ groupId: "web", generation: 5 }]);
    sync.report("h2", 4, true, [{ groupId: "web", generation: 5 }]);
    expect(sync.status().laggingCount).toBe(0);
    expect([sync.desiredOf("h1"), sync.realizedOf("h1")]).toEqual([5, 5]);
    // The group changes: one write, generation 7; both hosts are behind on it, each at what it installed.
    storeGroup("web", 7);
    expect(sync.status().lagging.map((h) => [h.hostId, h.desiredGeneration, h.realizedGeneration])).toEqual([
      ["h1", 7, 5],
      ["h2", 7, 5],
    ]);
    let done = false;
    const wait = sync.waitRealized(7, 10_000).then(() => (done = true));
    // A heartbeat that says nothing of groups keeps what was reported.
    sync.report("h1", 3, true);
    sync.report("h1", 3, true, [{ groupId: "web", generation: 7 }]);
    await Promise.resolve();
    await Promise.resolve();
    expect(done).toBe(false);
    expect(sync.realizedGeneration).toBe(5);
    sync.report("h2", 4, true, [{ groupId: "web", generation: 7 }]);
    await wait;
    expect(done).toBe(true);
    expect(sync.status().laggingCount).toBe(0);
    // Caught up, a host has realized the newest it reported.
    expect(sync.realizedOf("h2")).toBe(7);
  });

  it("host sync: a host behind on its document and on a group counts as realizing the older; a group generation never assigned is refused", () => {
    const { sync } = stage();
    sync.report("h1", 2, true, [{ groupId: "web", generation: 4 }]);
    expect(sync.realizedOf("h1")).toBe(2);
    sync.report("h1", 3, true, [{ groupId: "web", generation: 4 }]);
    expect(sync.realizedOf("h1")).toBe(4);
    expect(sync.report("h1", 3, true, [{ groupId: "web", generation: 99 }])).toBe(false);
    expect(sync.realizedOf("h1")).toBe(4);
    // A standby may hear of a generation before it sees it stored.
    expect(sync.report("h1", 3, false, [{ groupId: "web", generation: 99 }])).toBe(true);
    // A host with no guarded NIC is judged by its document alone.
    sync.report("h3", 0, true, [{ groupId: "web", generation: 1 }]);
    expect([sync.desiredOf("h3"), sync.realizedOf("h3")]).toEqual([0, 0]);
    expect(sync.status().laggingCount).toBe(0);
  });
});
