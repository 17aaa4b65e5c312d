// The logical networks the controller keeps: records in the fenced store
// <prefix>-networks, followed in memory with their ids sorted for paging, and
// what the other networks already hold (VNIs, VLANs, address space), so a new
// network is checked against all of them.

import { alreadyExists, checkName, checkRange, invalidArgument, notFound, resourceExhausted, uniqueId } from "@simdc/common";
import { simdc } from "@simdc/proto";
import type { FencedStore } from "../store/fenced-store.js";
import { Tombstones } from "../store/tombstones.js";
import { SortedKeys } from "../store/sorted-keys.js";
import { externalCidr, externalSegment } from "./external.js";
import { formatCidr, gatewayOf, numberToIp, overlaps, parseCidr, type Cidr } from "./ipam.js";

import v1 = simdc.v1;

/** VXLAN's 24-bit VNI space; 0 is not used, and the last is the external network's. */
const vniMax = externalSegment - 1;
export const subnetsPerNetworkMax = 16;

export interface NetworkSpec {
  id: string;
  mode: v1.NetworkMode;
  transport: v1.NetworkTransport;
  vlanId: number;
  subnets: string[];
  flowSetup: v1.FlowSetup;
  uplink: v1.Uplink;
  tenant: string;
}

export class Networks {
  private readonly ids = new SortedKeys();
  /** Creates run one at a time, so two cannot both take the same VLAN or address space. */
  private turn: Promise<unknown> = Promise.resolve();

  /** Deleted records kept for replays (deletedBy) until purged. */
  readonly tombstones: Tombstones<v1.NetworkRecord>;

  constructor(private readonly store: FencedStore<v1.NetworkRecord>) {
    this.tombstones = new Tombstones(store, (r) => !!r.network, (requestIds, deletedAtMs) => v1.NetworkRecord.create({ requestIds, deletedAtMs }));
    for (const [id, entry] of store.all()) if (entry.value.network) this.ids.add(id);
    store.onChange((id, _before, after) => {
      if (after?.value.network) this.ids.add(id);
      else this.ids.delete(id);
    });
  }

  get(id: string): v1.NetworkRecord | undefined {
    return this.store.get(id)?.value;
  }

  /** @throws SimdcError NOT_FOUND. */
  require(id: string): { record: v1.NetworkRecord; revision: number } {
    const entry = this.store.get(id);
    if (!entry?.value.network) throw notFound(`network ${id} not found`);
    return { record: entry.value, revision: entry.revision };
  }

  idsAfter(after: string, limit: number): string[] {
    return this.ids.after(after, limit);
  }

  *all(): IterableIterator<v1.Network> {
    for (const [, entry] of this.store.all()) if (entry.value.network) yield entry.value.network as v1.Network;
  }

  /**
   * Checks a new network against the rules and every other network, and
   * gives it its VNI (overlay) and its subnets' gateways.
   * @throws SimdcError INVALID_ARGUMENT for a bad spec, ALREADY_EXISTS for a
   * taken name or VLAN or overlapping address space, RESOURCE_EXHAUSTED when
   * no VNI is left.
   */
  plan(spec: NetworkSpec, nowMs: number): v1.Network {
    const id = checkName("name", spec.id);
    const tenant = spec.tenant ? checkName("tenant", spec.tenant) : "default";
    if (this.store.get(id)?.value.network) throw alreadyExists(`network ${id} exists already`);
    if (!(spec.mode in v1.NetworkMode) || spec.mode === v1.NetworkMode.NETWORK_MODE_UNSPECIFIED) throw invalidArgument("mode must be bridge, host-only or nat");
    const transport = spec.transport || v1.NetworkTransport.NETWORK_TRANSPORT_OVERLAY;
    if (!(transport in v1.NetworkTransport)) throw invalidArgument("transport must be overlay or vlan");
    const flowSetup = spec.flowSetup || v1.FlowSetup.FLOW_SETUP_PROACTIVE;
    if (!(flowSetup in v1.FlowSetup)) throw invalidArgument("flow_setup must be proactive or reactive");
    const uplink = spec.uplink || v1.Uplink.UPLINK_CONVERGED;
    if (!(uplink in v1.Uplink)) throw invalidArgument("uplink must be converged or dedicated");
    if (spec.subnets.length === 0) throw invalidArgument("a network needs at least one subnet (a CIDR like 10.0.0.0/24)");
    if (spec.subnets.length > subnetsPerNetworkMax) throw invalidArgument(`at most ${subnetsPerNetworkMax} subnets a network`);
    const cidrs: Cidr[] = spec.subnets.map(parseCidr);
    for (const [i, a] of cidrs.entries()) {
      for (const b of cidrs.slice(i + 1)) if (overlaps(a, b)) throw invalidArgument(`subnets ${formatCidr(a)} and ${formatCidr(b)} overlap`);
    }
    const outside = parseCidr(externalCidr);
    for (const c of cidrs) if (overlaps(c, outside)) throw alreadyExists(`subnet ${formatCidr(c)} overlaps the external network ${externalCidr}`);
    const others = [...this.all()];
    for (const other of others) {
      for (const subnet of other.subnets) {
        const taken = parseCidr(subnet.cidr ?? "");
        for (const c of cidrs) if (overlaps(c, taken)) throw alreadyExists(`subnet ${formatCidr(c)} overlaps ${subnet.cidr} of network ${other.id}`);
      }
    }
    let segmentId: number;
    if (transport === v1.NetworkTransport.NETWORK_TRANSPORT_VLAN) {
      segmentId = checkRange("vlan_id", spec.vlanId, 1, 4094);
      const holder = others.find((n) => n.transport === transport && n.segmentId === segmentId);
      if (holder) throw alreadyExists(`VLAN ${segmentId} is network ${holder.id}'s`);
    } else {
      if (spec.vlanId) throw invalidArgument("vlan_id is for vlan transport; an overlay network gets a VNI");
      const used = new Set(others.filter((n) => n.transport !== v1.NetworkTransport.NETWORK_TRANSPORT_VLAN).map((n) => n.segmentId));
      segmentId = 0;
      for (let vni = 1; vni <= vniMax && !segmentId; vni++) if (!used.has(vni)) segmentId = vni;
      if (!segmentId) throw resourceExhausted("no VNI is free");
    }
    return v1.Network.create({
      id,
      mode: spec.mode,
      transport,
      segmentId,
      subnets: cidrs.map((c) => ({ cidr: formatCidr(c), gateway: numberToIp(gatewayOf(c)) })),
      incarnation: uniqueId(),
      createdAtMs: nowMs,
      flowSetup,
      uplink,
      tenant,
    });
  }

  /** Plans and stores a network, one create at a time. */
  create(spec: NetworkSpec, nowMs: number, requestIds: string[]): Promise<v1.Network> {
    const run = this.turn.then(async () => {
      const network = this.plan(spec, nowMs);
      await this.store.write(network.id, v1.NetworkRecord.create({ network, requestIds }), this.tombstones.revisionFor(network.id));
      return network;
    });
    this.turn = run.catch(() => undefined);
    return run;
  }

  /** Deletes the network held at `revision`, leaving a tombstone of `requestId`. */
  async remove(id: string, revision: number, requestId: string, nowMs: number): Promise<void> {
    await this.tombstones.bury(id, revision, this.store.get(id)!.value, requestId, nowMs);
  }


  /** The network of a segment (an overlay's VNI or a VLAN id), for a packet-in that names only its segment. */
  bySegment(segmentId: number): v1.Network | undefined {
    for (const network of this.all()) if (network.segmentId === segmentId) return network;
    return undefined;
  }

  /** The record that a request made (for a replay when its answer was not stored). */
  byRequest(requestId: string): v1.Network | undefined {
    for (const [, entry] of this.store.all()) if (entry.value.requestIds.includes(requestId)) return (entry.value.network as v1.Network | undefined) ?? undefined;
    return undefined;
  }
}
