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

/** A router's MAC on a segment: locally administered (0x0a), never one the controller gives a NIC (0x02). */
export function routerMac(segment: number): string {
  return `0a:00:00:${[16, 8, 0].map((s) => ((segment >> s) & 0xff).toString(16).padStart(2, "0")).join(":")}`;
}

/** A host's uplink MAC, from its address (unique as the address is). */
export function uplinkMac(uplinkIp: string): string {
  const n = ipToNumber(uplinkIp);
  return `0a:01:${[24, 16, 8, 0].map((s) => (Math.floor(n / 2 ** s) % 256).toString(16).padStart(2, "0")).join(":")}`;
}

/** An endpoint's MAC, from its address. */
function endpointMac(ip: number): string {
  return `0a:02:${[24, 16, 8, 0].map((s) => (Math.floor(ip / 2 ** s) % 256).toString(16).padStart(2, "0")).join(":")}`;
}

export interface HostUplinks {
  /** Every host's uplink address taken so far. */
  uplinkAddresses(): Iterable<string>;
}

export class ExternalEndpoints {
  private readonly ids = new SortedKeys();
  /** Addresses given by a create or registration whose record is not written yet. */
  private readonly held = new Set<number>();
  private readonly listeners: ((hostIds: Set<string>) => void)[] = [];
  /** Creates run one at a time, so two cannot take the same address or port. */
  private turn: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly store: FencedStore<v1.ExternalEndpointRecord>,
    private readonly hosts: HostUplinks,
  ) {
    for (const [id, entry] of store.all()) if (entry.value.endpoint) this.ids.add(id);
    store.onChange((id, before, after) => {
      if (after?.value.endpoint) this.ids.add(id);
      else this.ids.delete(id);
      const touched = new Set<string>();
      for (const e of [before?.value.endpoint, after?.value.endpoint]) if (e?.hostId) touched.add(e.hostId);
      for (const listener of this.listeners) listener(touched);
    });
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

  private used(): Set<number> {
    const used = new Set(this.held);
    for (const e of this.all()) used.add(ipToNumber(e.ip));
    for (const ip of this.hosts.uplinkAddresses()) if (ip) used.add(ipToNumber(ip));
    return used;
  }

  private lowestFree(from: number): number {
    const used = this.used();
    for (let ip = from; ip <= lastAddress; ip++) if (!used.has(ip)) return ip;
    for (let ip = uplinkFirst; ip < from; ip++) if (!used.has(ip)) return ip;
    throw resourceExhausted(`the external network ${externalCidr} has no free address`);
  }

  /**
   * A new host's uplink address, held until `release` (its record is written).
   * @throws SimdcError RESOURCE_EXHAUSTED.
   */
  takeUplink(): { ip: string; release: () => void } {
    const ip = this.lowestFree(uplinkFirst);
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
      if (this.used().has(ip)) throw alreadyExists(`ip ${ipText} is in use on the external network`);
    } else ip = this.lowestFree(endpointFirst);
    const ofports = new Set([...this.all()].filter((e) => e.hostId === hostId).map((e) => e.ofport));
    let ofport = endpointOfportBase;
    while (ofports.has(ofport)) ofport += 1;
    if (ofport >= endpointOfportBase + endpointsPerHostMax) throw resourceExhausted(`host ${hostId} plays ${endpointsPerHostMax} endpoints already`);
    const endpoint = v1.ExternalEndpoint.create({ id, ip: numberToIp(ip), mac: endpointMac(ip), hostId, ofport, incarnation: uniqueId(), createdAtMs: nowMs });
    await this.store.write(id, v1.ExternalEndpointRecord.create({ endpoint, requestIds }));
    return endpoint;
  }

  /** @throws SimdcError NOT_FOUND. */
  async remove(id: string): Promise<void> {
    const entry = this.store.get(id);
    if (!entry?.value.endpoint) throw notFound(`external endpoint ${id} not found`);
    await this.store.remove(id, entry.revision);
  }

  byRequest(requestId: string): v1.ExternalEndpoint | undefined {
    for (const [, entry] of this.store.all()) if (entry.value.requestIds.includes(requestId)) return (entry.value.endpoint as v1.ExternalEndpoint | undefined) ?? undefined;
    return undefined;
  }
}
