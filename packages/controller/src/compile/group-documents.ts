// Security groups as documents of their own, one a group in the KV bucket
// <prefix>-group-docs, that every host follows and expands for its own
// guarded NICs, as ovn-controller expands port groups and ACLs from the
// southbound database. A change of a group's rules is then one write however
// many hosts have a NIC in it; compiled into each host's document, it
// rewrote every such document (a thousand writes for a group on a thousand
// hosts). A write takes the next configuration generation, as a host
// document's does, and hosts report per group the generation they installed
// (HostSync), so --wait=hosts covers a group's change too.

import { type Clock, type Logger } from "@simdc/common";
import { simdc } from "@simdc/proto";
import type { Lease } from "../lease/lease.js";
import type { SecurityGroups } from "../network/security-groups.js";
import type { FencedStore } from "../store/fenced-store.js";
import type { HostDocuments } from "./host-documents.js";
import { documentRetryMsMax, documentRetryMsMin } from "./host-documents.js";
import { groupAdmissions } from "./host-network.js";

import v1 = simdc.v1;

export class GroupDocuments {
  /** Groups changed this turn, written at its end (one write for several changes in one turn). */
  private readonly dirty = new Set<string>();
  /** Each group's last write scheduled: the next one follows it, so a group's writes never overtake each other. */
  private readonly writes = new Map<string, Promise<number>>();
  /** Groups whose stored document a deposed controller wrote: rewritten whatever it holds. */
  private readonly forced = new Set<string>();
  private readonly listeners: ((groupId: string) => void)[] = [];
  private flushQueued = false;
  private stateId = "";
  /** Bumped on deactivation: writes of an earlier term stop retrying. */
  private term = 0;

  constructor(
    readonly docs: FencedStore<v1.GroupDocument>,
    private readonly groups: SecurityGroups,
    private readonly generations: HostDocuments,
    private readonly lease: Lease,
    private readonly logger: Logger,
    private readonly clock: Clock,
  ) {
    groups.onRulesChanged((groupId) => this.touch(groupId));
    for (const [, entry] of docs.all()) generations.raiseGeneration(entry.value.generation);
    docs.onChange((groupId, _before, after) => {
      if (after) generations.raiseGeneration(after.value.generation);
      if (after && docs.isLate(after)) {
        // A deposed controller wrote this after the takeover (hosts judge it by epoch): write it again.
        this.forced.add(groupId);
        this.touch(groupId);
      }
      for (const listener of this.listeners) listener(groupId);
    });
  }

  /** Told when a group's stored document changes (a new generation, or gone). */
  onStored(listener: (groupId: string) => void): void {
    this.listeners.push(listener);
  }

  /** The generation of the group's stored document (0: none). */
  generationOf(groupId: string): number {
    return this.docs.get(groupId)?.value.generation ?? 0;
  }

  /** Becomes the writer: every group's document made current, those of groups gone removed. */
  activate(stateId: string): void {
    this.stateId = stateId;
    for (const id of this.groups.idsAfter("", Number.MAX_SAFE_INTEGER)) this.touch(id);
    for (const [id] of this.docs.all()) if (!this.groups.get(id)) this.touch(id);
  }

  /** Stops writing (the lease is lost); writes under way end with the lease's error. */
  deactivate(): void {
    this.term += 1;
    this.dirty.clear();
  }

  /** Marks the group's document for writing at the end of this turn (while active). */
  touch(groupId: string): void {
    if (!this.lease.isActive) return;
    this.dirty.add(groupId);
    if (this.flushQueued) return;
    this.flushQueued = true;
    queueMicrotask(() => this.flush());
  }

  /** Resolves with the generation of the group's document that carries every change made before the call. */
  whenCarried(groupId: string): Promise<number> {
    if (this.dirty.has(groupId)) this.flush();
    return this.writes.get(groupId) ?? Promise.resolve(this.generationOf(groupId));
  }

  private flush(): void {
    this.flushQueued = false;
    const term = this.term;
    for (const groupId of this.dirty) {
      const previous = this.writes.get(groupId) ?? Promise.resolve(0);
      const next = previous.catch(() => 0).then(() => this.writeRetrying(groupId, term));
      this.writes.set(groupId, next);
      // The last write settled: nothing to follow any more.
      void next.catch(() => undefined).finally(() => {
        if (this.writes.get(groupId) === next) this.writes.delete(groupId);
      });
    }
    this.dirty.clear();
  }

  private async writeRetrying(groupId: string, term: number): Promise<number> {
    for (let failures = 0; ; failures++) {
      this.lease.requireActive();
      if (term !== this.term) throw new Error("the controller stopped writing group documents");
      try {
        return await this.write(groupId);
      } catch (err) {
        const delayMs = Math.min(documentRetryMsMax, documentRetryMsMin * 2 ** failures);
        this.logger.warn({ groupId, err: String(err), retryInMs: delayMs }, "could not write a group document; will retry");
        await this.clock.sleep(delayMs);
      }
    }
  }

  /** Compiles the group's document and writes it when it differs (removes it when the group is gone). @returns its generation. */
  private async write(groupId: string): Promise<number> {
    const group = this.groups.get(groupId);
    const stored = this.docs.get(groupId);
    if (!group) {
      if (stored) await this.docs.remove(groupId, stored.revision);
      return 0;
    }
    const admissions = groupAdmissions(group);
    const held = stored?.value;
    if (held && !this.forced.has(groupId) && held.stateId === this.stateId && sameList(held.admissions, admissions)) return held.generation;
    const generation = this.generations.beginWrite();
    try {
      await this.docs.put(groupId, v1.GroupDocument.create({ groupId, generation, epoch: this.lease.epoch, stateId: this.stateId, admissions }));
      this.forced.delete(groupId);
      return generation;
    } finally {
      this.generations.endWrite(generation);
    }
  }
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}
