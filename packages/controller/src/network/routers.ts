// Logical routers: each joins two or more networks of one tenant, kept in the
// fenced store <prefix>-routers. The compiler gives every host with a VM on a
// router's network a share of the router (its gateways answer ARP, and what
// the VM sends them goes straight to the destination's network), as OVN
// distributes a logical router over the chassis.

import { alreadyExists, checkName, failedPrecondition, invalidArgument, notFound, uniqueId } from "@simdc/common";
import { simdc } from "@simdc/proto";
import type { FencedStore } from "../store/fenced-store.js";
import { Tombstones } from "../store/tombstones.js";
import { SortedKeys } from "../store/sorted-keys.js";
import type { Networks } from "./networks.js";

import v1 = simdc.v1;

export const networksPerRouterMax = 16;

export class Routers {
  private readonly ids = new SortedKeys();
  /** The router each network is on. */
  private readonly byNetwork = new Map<string, v1.Router>();
  private readonly listeners: ((networkIds: Set<string>) => void)[] = [];
  /** Creates run one at a time, so two cannot take the same network. */
  private turn: Promise<unknown> = Promise.resolve();

  /** Deleted records kept for replays (deletedBy) until purged. */
  readonly tombstones: Tombstones<v1.RouterRecord>;

  constructor(private readonly store: FencedStore<v1.RouterRecord>) {
    this.tombstones = new Tombstones(store, (r) => !!r.router, (requestIds, deletedAtMs) => v1.RouterRecord.create({ requestIds, deletedAtMs }));
    for (const [id, entry] of store.all()) this.index(id, undefined, entry.value.router as v1.Router | undefined);
    store.onChange((id, before, after) => {
      this.index(id, before?.value.router as v1.Router | undefined, after?.value.router as v1.Router | undefined);
      const touched = new Set([...(before?.value.router?.networks ?? []), ...(after?.value.router?.networks ?? [])]);
      for (const listener of this.listeners) listener(touched);
    });
  }

  private index(id: string, before: v1.Router | undefined, after: v1.Router | undefined): void {
    for (const n of before?.networks ?? []) if (this.byNetwork.get(n)?.id === id) this.byNetwork.delete(n);
    if (after) {
      this.ids.add(id);
      for (const n of after.networks) this.byNetwork.set(n, after);
    } else this.ids.delete(id);
  }

  /** Told the networks whose router came or went. */
  onChanged(listener: (networkIds: Set<string>) => void): void {
    this.listeners.push(listener);
  }

  /** The router a network is on. */
  of(networkId: string): v1.Router | undefined {
    return this.byNetwork.get(networkId);
  }

  get(id: string): v1.Router | undefined {
    return (this.store.get(id)?.value.router as v1.Router | undefined) ?? undefined;
  }

  idsAfter(after: string, limit: number): string[] {
    return this.ids.after(after, limit);
  }

  /**
   * @throws SimdcError INVALID_ARGUMENT (a bad name, fewer than two networks,
   * one named twice, networks of different tenants), NOT_FOUND (a network
   * that does not exist), ALREADY_EXISTS (a taken name), FAILED_PRECONDITION
   * (a network on another router).
   */
  create(name: string, networkIds: readonly string[], networks: Networks, nowMs: number, requestIds: string[]): Promise<v1.Router> {
    const run = this.turn.then(async () => {
      const id = checkName("name", name);
      if (this.get(id)) throw alreadyExists(`router ${id} exists already`);
      if (networkIds.length < 2) throw invalidArgument("a router joins at least two networks");
      if (networkIds.length > networksPerRouterMax) throw invalidArgument(`a router joins at most ${networksPerRouterMax} networks`);
      const joined: v1.INetwork[] = [];
      for (const [i, raw] of networkIds.entries()) {
        const networkId = checkName(`networks[${i}]`, raw);
        if (joined.some((n) => n.id === networkId)) throw invalidArgument(`network ${networkId} is named twice`);
        const network = networks.get(networkId)?.network;
        if (!network) throw notFound(`network ${networkId} does not exist`);
        const holder = this.of(networkId);
        if (holder) throw failedPrecondition(`network ${networkId} is on router ${holder.id} already`);
        joined.push(network);
      }
      const tenant = joined[0]!.tenant || "default";
      const stranger = joined.find((n) => (n.tenant || "default") !== tenant);
      if (stranger) throw invalidArgument(`network ${stranger.id} is tenant ${stranger.tenant || "default"}'s, not ${tenant}'s: a router joins one tenant's networks`);
      const router = v1.Router.create({ id, tenant, networks: joined.map((n) => n.id ?? ""), incarnation: uniqueId(), createdAtMs: nowMs });
      await this.store.write(id, v1.RouterRecord.create({ router, requestIds }), this.tombstones.revisionFor(id));
      return router;
    });
    this.turn = run.catch(() => undefined);
    return run;
  }

  /** Deletes the router, leaving a tombstone of `requestId`. @throws SimdcError NOT_FOUND. */
  async remove(id: string, requestId: string, nowMs: number): Promise<v1.Router> {
    const entry = this.store.get(id);
    if (!entry?.value.router) throw notFound(`router ${id} not found`);
    await this.tombstones.bury(id, entry.revision, entry.value, requestId, nowMs);
    return entry.value.router as v1.Router;
  }


  byRequest(requestId: string): v1.Router | undefined {
    for (const [, entry] of this.store.all()) if (entry.value.requestIds.includes(requestId)) return (entry.value.router as v1.Router | undefined) ?? undefined;
    return undefined;
  }
}
