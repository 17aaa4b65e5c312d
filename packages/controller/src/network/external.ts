// The simulated outside world: one external network (198.18.0.0/16, the
// benchmarking range of RFC 2544, so no real address is ever simulated) with
// a router at its first address. Its endpoints, kept in the fenced store
// <prefix>-external-endpoints, are addresses each played by one host's
// vswitch (its border to the outside); every host gets an uplink address on
// it at its first registration, the address NAT networks' VMs on that host
// are seen as outside (as VMware's NAT device shares the host's identity).

import { alreadyExists, checkName, contains, invalidArgument, ipToNumber, notFound, numberToIp, parseCidr, resourceExhausted, uniqueId } from "@simdc/common";
import { simdc } from "@simdc/proto";
import type { FencedStore } from "../store/fenced-store.js";
import { Tombstones } from "../store/tombstones.js";
import { SortedKeys } from "../store/sorted-keys.js";

import v1 = simdc.v1;

export const externalCidr = "198.18.0.0/16";
const external = parseCidr(externalCidr);
export const externalGateway = numberToIp(external.base + 1);
/** The external network's segment: the last VNI, which no logical network is given. */
export const externalSegment = 0xff_ffff;
/** Host uplinks count up from .0.2, endpoints (unless given an address) from .128.1. */
const uplinkFirst = external.base + 2;
const endpointFirst = external.base + 128 * 256 + 1;
const lastAddress = external.base + 2 ** (32 - external.prefix) - 2;
/** Endpoints' ports on their host's vswitch count up from here (VM NICs count up from 1). */
export const endpointOfportBase = 0xe000;
export const endpointsPerHostMax = 0x1000;

/** A locally administered MAC (0x0a, never what the controller gives a NIC, 0x02) of `kind`, then `value`'s low bytes. */
function addressedMac(kind: number[], value: number): string {
  const bytes = [...kind, ...Array.from({ length: 6 - kind.length }, (_, i) => Math.floor(value / 2 ** (8 * (5 - kind.length - i))) % 256)];
  return bytes.map((b) => b.toString(16).padStart(2, "0")).join(":");
}

/** A router's MAC on a segment. */
export function routerMac(segment: number): string {
  return addressedMac([0x0a, 0, 0], segment);
}

/** A host's uplink MAC, from its address (unique as the address is). */
export function uplinkMac(uplinkIp: string): string {
  return addressedMac([0x0a, 0x01], ipToNumber(uplinkIp));
}

/** An endpoint's MAC, from its address. */
function endpointMac(ip: number): string {
  return addressedMac([0x0a, 0x02], ip);
}

export class ExternalEndpoints {
  private readonly ids = new SortedKeys();
  /** Addresses held: by endpoints and hosts' uplinks (followed from their stores), and by creates or registrations not written yet. */
  private readonly inUse = new Set<number>();
  private readonly held = new Set<number>();
  /** No uplink address below this is free: registrations scan on from it, not from the start. */
  private uplinkCursor = uplinkFirst;
  private readonly listeners: ((hostIds: Set<string>) => void)[] = [];
  /** Deleted records kept for replays (deletedBy) until purged. */
  readonly tombstones: Tombstones<v1.ExternalEndpointRecord>;
  /** Creates run one at a time, so two cannot take the same address or port. */
  private turn: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly store: FencedStore<v1.ExternalEndpointRecord>,
    hosts: FencedStore<v1.Host>,
  ) {
    this.tombstones = new Tombstones(store, (r) => !!r.endpoint, (requestIds, deletedAtMs) => v1.ExternalEndpointRecord.create({ requestIds, deletedAtMs }));
    for (const [id, entry] of store.all()) {
      if (!entry.value.endpoint) continue;
      this.ids.add(id);
      this.take(entry.value.endpoint.ip);
    }
    for (const [, entry] of hosts.all()) this.take(entry.value.uplinkIp);
    store.onChange((id, before, after) => {
      if (after?.value.endpoint) this.ids.add(id);
      else this.ids.delete(id);
      this.free(before?.value.endpoint?.ip);
      this.take(after?.value.endpoint?.ip);
      const touched = new Set<string>();
      for (const e of [before?.value.endpoint, after?.value.endpoint]) if (e?.hostId) touched.add(e.hostId);
      for (const listener of this.listeners) listener(touched);
    });
    hosts.onChange((_id, before, after) => {
      this.free(before?.value.uplinkIp);
      this.take(after?.value.uplinkIp);
    });
  }

  private take(ip: string | null | undefined): void {
    if (ip) this.inUse.add(ipToNumber(ip));
  }

  private free(ip: string | null | undefined): void {
    if (!ip) return;
    const n = ipToNumber(ip);
    this.inUse.delete(n);
    if (n < this.uplinkCursor) this.uplinkCursor = n;
  }

  /** Told the hosts whose endpoints came or went. */
  onChanged(listener: (hostIds: Set<string>) => void): void {
    this.listeners.push(listener);
  }

  *all(): IterableIterator<v1.ExternalEndpoint> {
    for (const [, entry] of this.store.all()) if (entry.value.endpoint) yield entry.value.endpoint as v1.ExternalEndpoint;
  }

  get(id: string): v1.ExternalEndpoint | undefined {
    return (this.store.get(id)?.value.endpoint as v1.ExternalEndpoint | undefined) ?? undefined;
  }

  idsAfter(after: string, limit: number): string[] {
    return this.ids.after(after, limit);
  }

  private used(ip: number): boolean {
    return this.inUse.has(ip) || this.held.has(ip);
  }

  private lowestFree(from: number): number {
    for (let ip = from; ip <= lastAddress; ip++) if (!this.used(ip)) return ip;
    for (let ip = uplinkFirst; ip < from; ip++) if (!this.used(ip)) return ip;
    throw resourceExhausted(`the external network ${externalCidr} has no free address`);
  }

  /**
   * A new host's uplink address, held until `release` (its record is written).
   * @throws SimdcError RESOURCE_EXHAUSTED.
   */
  takeUplink(): { ip: string; release: () => void } {
    const ip = this.lowestFree(this.uplinkCursor);
    this.uplinkCursor = ip;
    this.held.add(ip);
    return { ip: numberToIp(ip), release: () => this.held.delete(ip) };
  }

  /**
   * Checks and stores a new endpoint on `hostId`.
   * @throws SimdcError INVALID_ARGUMENT (bad name or address, an address off
   * the external network or its router's), ALREADY_EXISTS (name or address
   * taken), RESOURCE_EXHAUSTED (no address or port left).
   */
  create(name: string, ipText: string, hostId: string, nowMs: number, requestIds: string[]): Promise<v1.ExternalEndpoint> {
    const run = this.turn.then(() => this.createNow(name, ipText, hostId, nowMs, requestIds));
    this.turn = run.catch(() => undefined);
    return run;
  }

  private async createNow(name: string, ipText: string, hostId: string, nowMs: number, requestIds: string[]): Promise<v1.ExternalEndpoint> {
    const id = checkName("name", name);
    if (this.get(id)) throw alreadyExists(`external endpoint ${id} exists already`);
    let ip: number;
    if (ipText) {
      ip = ipToNumber(ipText);
      if (!contains(external, ip)) throw invalidArgument(`ip ${ipText} is not on the external network ${externalCidr}`);
      if (ip < uplinkFirst || ip > lastAddress) throw invalidArgument(`ip ${ipText} is the external network's own address, its router's or its broadcast`);
      if (this.used(ip)) throw alreadyExists(`ip ${ipText} is in use on the external network`);
    } else ip = this.lowestFree(endpointFirst);
    const ofports = new Set([...this.all()].filter((e) => e.hostId === hostId).map((e) => e.ofport));
    let ofport = endpointOfportBase;
    while (ofports.has(ofport)) ofport += 1;
    if (ofport >= endpointOfportBase + endpointsPerHostMax) throw resourceExhausted(`host ${hostId} plays ${endpointsPerHostMax} endpoints already`);
    const endpoint = v1.ExternalEndpoint.create({ id, ip: numberToIp(ip), mac: endpointMac(ip), hostId, ofport, incarnation: uniqueId(), createdAtMs: nowMs });
    await this.store.write(id, v1.ExternalEndpointRecord.create({ endpoint, requestIds }), this.tombstones.revisionFor(id));
    return endpoint;
  }

  /** Deletes the endpoint, leaving a tombstone of `requestId`. @throws SimdcError NOT_FOUND. */
  async remove(id: string, requestId: string, nowMs: number): Promise<void> {
    const entry = this.store.get(id);
    if (!entry?.value.endpoint) throw notFound(`external endpoint ${id} not found`);
    await this.tombstones.bury(id, entry.revision, entry.value, requestId, nowMs);
  }


  byRequest(requestId: string): v1.ExternalEndpoint | undefined {
    for (const [, entry] of this.store.all()) if (entry.value.requestIds.includes(requestId)) return (entry.value.endpoint as v1.ExternalEndpoint | undefined) ?? undefined;
    return undefined;
  }
}
