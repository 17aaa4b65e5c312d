// Compiles desired state into one document per host (its VMs, where their
// boot volumes live; later its flows, QoS and leases) and keeps each host's
// document in KV current, the way OVN's northd compiles the northbound
// database into the southbound one. Each write takes the next datacenter
// configuration generation (nb_cfg); a host whose compiled document equals
// the stored one is not written at all, which is why a restarted controller
// sends nothing a host already has. Hosts are written one at a time each,
// many at once, in the order they became dirty, so one busy host never
// starves the others.

import { encodeMessage, type Bus } from "@simdc/bus";
import { bytesDigest, type Clock, type Logger } from "@simdc/common";
import { simdc } from "@simdc/proto";
import type { CrashPoints } from "../crash-points.js";
import type { Lease } from "../lease/lease.js";
import type { MemberRegistry } from "../registry/member-registry.js";
import type { FencedStore } from "../store/fenced-store.js";
import type { VmStore, VolumeStore } from "../store/kinds.js";

import v1 = simdc.v1;

/** Host documents written at once. */
export const documentWritesInFlightMax = 64;
/**
 * Least time between two writes of one host's document, in simulated ms:
 * changes to a busy host that come closer together are written together
 * (batched), so a host's document is not rewritten for every one of many
 * changes; a host changed now and then is written at once.
 */
export const documentWriteSpacingMs = 250;
/** Real ms of compiling one turn of the event loop spends before it lets timers and I/O (the lease's renewal) run. */
export const pumpTurnBudgetMs = 10;
/** Delays before writing a host's document again after a failed write: doubling, capped. */
export const documentRetryMsMin = 100;
export const documentRetryMsMax = 5_000;
/** Bytes of VMs per document chunk; NATS's default payload limit is 1 MiB. */
export const documentChunkBytesDefault = 512 * 1024;

/** What the bucket holds for one host, rebuilt from its chunks. */
interface StoredDocument {
  agentId: string;
  generation: number;
  epoch: number;
  chunkCount: number;
  /** Chunk index -> {generation, digest of its VMs, revision, epoch}. */
  chunks: Map<number, { generation: number; digest: number; vmCount: number; revision: number; epoch: number; key: string }>;
}

/** One VM as compiled into a document: its form, its encoded size and digest, and the versions they were made from. */
interface Compiled {
  /** The revisions of the VM's record and of its boot volume's it was made from. */
  revision: number;
  volumeRevision: number;
  vm: v1.DesiredVm;
  size: number;
  digest: number;
}

/** Where a host's share of the logical networks comes from (the SDN compiler). */
export interface NetworkSections {
  sectionOf(hostId: string): v1.HostNetwork | undefined;
  /** Told which hosts' sections may have changed. */
  onHostsChanged(listener: (hostIds: Iterable<string>) => void): void;
}

interface Waiter {
  resolve(generation: number): void;
  reject(err: Error): void;
}

/** The key of chunk `index` of a host's document. */
export function documentKey(agentId: string, hostId: string, index: number): string {
  return `${agentId}.${hostId}.${index}`;
}

export class HostDocuments {
  private readonly stored = new Map<string, StoredDocument>();
  /** Hosts waiting for a write, in the order they became dirty. */
  private readonly dirty = new Set<string>();
  /** Hosts whose document is being written, with the callers waiting for that write. */
  private readonly writing = new Map<string, Waiter[]>();
  /** Callers waiting for the generation of the next write of a host. */
  private readonly waiters = new Map<string, Waiter[]>();
  /** Hosts whose stored document a deposed controller wrote: rewritten whatever it holds. */
  private readonly forced = new Set<string>();
  private readonly inFlight = new Set<number>();
  /** When each host's document was last written (simulated ms), for the spacing. */
  private readonly lastWrittenMs = new Map<string, number>();
  /** Hosts waiting out the spacing before their next write. */
  private readonly spacing = new Set<string>();
  /** Each VM's compiled form, by id (dropped when the VM goes). */
  private readonly compiled = new Map<string, Compiled>();
  /** Failed writes in a row, per host, for the retry delay. */
  private readonly failures = new Map<string, number>();
  private nbCfg = 0;
  private pumpQueued = false;
  private listeners: ((hostId: string, generation: number) => void)[] = [];
  private stateId = "";
  /**
   * Hosts that run a document of another stored state (this controller lost
   * its store): a document from here would make them drop every VM, so none
   * is written until their VMs are adopted.
   */
  private readonly held = new Set<string>();


  /** Hosts whose document waits to be written (changed, or failed and to be retried). */
  pendingCount(): number {
    let count = this.dirty.size;
    for (const hostId of this.failures.keys()) if (!this.dirty.has(hostId)) count += 1;
    return count;
  }
  constructor(
    private readonly bus: Bus,
    readonly docs: FencedStore<v1.HostDocument>,
    private readonly vms: VmStore,
    private readonly volumes: VolumeStore,
    private readonly hosts: MemberRegistry<v1.Host>,
    private readonly lease: Lease,
    private readonly logger: Logger,
    private readonly clock: Clock,
    private readonly crash: CrashPoints,
    private readonly chunkBytesMax = documentChunkBytesDefault,
    private readonly network?: NetworkSections,
  ) {
    network?.onHostsChanged((hostIds) => {
      for (const hostId of hostIds) this.touch(hostId);
    });
    for (const [key, entry] of docs.all()) this.observe(key, undefined, entry.value ? { value: entry.value, revision: entry.revision, epoch: entry.epoch } : undefined);
    docs.onChange((key, before, after) => this.observe(key, before, after));
    vms.onTargetChanged((hostId, vmId) => {
      if (!vms.get(vmId)) this.compiled.delete(vmId);
      this.touch(hostId);
    });
    // A boot volume that moves or changes state changes the documents of the hosts booting from it.
    volumes.onTargetChanged((_node, volumeId) => {
      for (const vmId of vms.referencing(volumeId)) {
        const hostId = vms.get(vmId)?.hostId;
        if (hostId) this.touch(hostId);
      }
    });
  }

  /** Told when a host's stored document reaches a new generation. */
  onStored(listener: (hostId: string, generation: number) => void): void {
    this.listeners.push(listener);
  }

  /** The newest generation assigned (nb_cfg). */
  get desiredGeneration(): number {
    return this.nbCfg;
  }

  /** Every document up to this generation is written (sb_cfg). */
  get writtenGeneration(): number {
    let low = this.nbCfg;
    for (const g of this.inFlight) if (g - 1 < low) low = g - 1;
    return low;
  }

  /** The generation of the host's complete stored document (0: none). */
  generationOf(hostId: string): number {
    const doc = this.stored.get(hostId);
    return doc && this.isComplete(doc) ? doc.generation : 0;
  }

  /** The lease epoch of the host's stored document. */
  epochOf(hostId: string): number {
    return this.stored.get(hostId)?.epoch ?? 0;
  }

  /** Hosts that have a stored document. */
  storedHosts(): IterableIterator<string> {
    return this.stored.keys();
  }

  /**
   * Generations must grow for every host, across controllers and lost
   * stores: nothing is assigned at or below `generation` from now on.
   */
  raiseGeneration(generation: number): void {
    if (generation > this.nbCfg) this.nbCfg = generation;
  }

  /** Takes the next generation for a write under way: writtenGeneration stays below it until endWrite. */
  beginWrite(): number {
    const generation = ++this.nbCfg;
    this.inFlight.add(generation);
    return generation;
  }

  endWrite(generation: number): void {
    this.inFlight.delete(generation);
  }

  /** Becomes the writer: continues the generation sequence and rewrites what needs it. */
  activate(stateId: string): void {
    this.stateId = stateId;
    for (const doc of this.stored.values()) this.raiseGeneration(doc.generation);
    const hosts = new Set<string>([...this.stored.keys()]);
    for (const host of this.hosts.all()) if (this.vms.onTarget(host.id).size > 0) hosts.add(host.id);
    for (const hostId of hosts) this.dirty.add(hostId);
    this.pump();
  }

  /**
   * Marks the host's document for compiling (while active; a standby
   * compiles everything when it takes over). Compiling waits for the end of
   * this turn: one stored change tells several listeners (the VM's host, the
   * hosts sharing its networks), and the document must see them all, not be
   * written without the last and again a spacing later.
   */
  touch(hostId: string): void {
    if (!this.lease.isActive) return;
    this.dirty.add(hostId);
    if (this.pumpQueued) return;
    this.pumpQueued = true;
    queueMicrotask(() => {
      this.pumpQueued = false;
      this.pump();
    });
  }

  /**
   * Compiles the host's document (written when it changed) and resolves with
   * the generation that carries every change made before the call: the
   * stored one when nothing changed.
   */
  whenCarried(hostId: string): Promise<number> {
    const stored = this.stored.get(hostId);
    const pending = this.dirty.has(hostId) || this.failures.has(hostId) || this.waiters.has(hostId) || this.forced.has(hostId);
    // A change touches its host when it is made: with no write pending, it is
    // in the write under way (compiled when it started) or already stored.
    const underWay = this.writing.get(hostId);
    if (!pending && underWay) return new Promise((resolve, reject) => underWay.push({ resolve, reject }));
    if (!pending && stored && this.isComplete(stored)) return Promise.resolve(stored.generation);
    const promise = new Promise<number>((resolve, reject) => {
      let list = this.waiters.get(hostId);
      if (!list) this.waiters.set(hostId, (list = []));
      list.push({ resolve, reject });
    });
    this.dirty.add(hostId);
    this.pump();
    return promise;
  }

  /** Writes nothing for the host until release(): it runs a document of another stored state. */
  hold(hostId: string): void {
    this.held.add(hostId);
  }

  /** Writes the host's documents again (its VMs were adopted, or it runs this stored state). */
  release(hostId: string): void {
    if (this.held.delete(hostId)) this.touch(hostId);
  }

  /** Forgets every waiter (the controller lost the lease or stops). */
  deactivate(reason: Error): void {
    for (const list of this.waiters.values()) for (const w of list) w.reject(reason);
    this.waiters.clear();
    this.dirty.clear();
  }

  private pump(): void {
    if (!this.lease.isActive) return;
    const now = this.clock.nowMs();
    const turnStartedMs = performance.now();
    for (const hostId of this.dirty) {
      if (this.writing.size >= documentWritesInFlightMax) return;
      if (performance.now() - turnStartedMs >= pumpTurnBudgetMs) {
        this.pumpNextTurn();
        return;
      }
      if (this.writing.has(hostId) || this.spacing.has(hostId)) continue;
      const dueMs = (this.lastWrittenMs.get(hostId) ?? -Infinity) + documentWriteSpacingMs;
      if (dueMs > now) {
        // Written a moment ago: the changes made meanwhile go out together once the spacing is over.
        this.spacing.add(hostId);
        this.clock.after(dueMs - now, () => {
          this.spacing.delete(hostId);
          this.pump();
        });
        continue;
      }
      this.dirty.delete(hostId);
      const waiters = this.waiters.get(hostId) ?? [];
      this.waiters.delete(hostId);
      this.writing.set(hostId, waiters);
      void this.write(hostId).then(
        (generation) => {
          this.failures.delete(hostId);
          for (const w of waiters) w.resolve(generation);
        },
        (err: unknown) => {
          const failures = (this.failures.get(hostId) ?? 0) + 1;
          this.failures.set(hostId, failures);
          const delayMs = Math.min(documentRetryMsMax, documentRetryMsMin * 2 ** (failures - 1));
          this.logger.warn({ hostId, err: String(err), retryInMs: delayMs }, "could not write a host document; will retry");
          // The change stays to be written: its waiters wait for the next write, which comes after a delay.
          const again = this.waiters.get(hostId) ?? [];
          this.waiters.set(hostId, [...waiters, ...again]);
          this.clock.after(delayMs, () => this.touch(hostId));
        },
      ).finally(() => {
        this.writing.delete(hostId);
        this.pump();
      });
    }
  }

  /**
   * Goes on once the event loop has had its turn: a write compiles and
   * encodes its document before its first await, and 64 of them at once
   * blocked the loop long enough for the lease's renewal to time out.
   */
  private pumpNextTurn(): void {
    if (this.pumpQueued) return;
    this.pumpQueued = true;
    // Yielding to I/O, not waiting on simulated time.
    // eslint-disable-next-line no-restricted-globals
    setImmediate(() => {
      this.pumpQueued = false;
      this.pump();
    });
  }

  /** Compiles the host's document and writes it when it differs. @returns the generation that carries it. */
  private async write(hostId: string): Promise<number> {
    const host = this.hosts.get(hostId);
    const stored = this.stored.get(hostId);
    // A host that never registered has no agent to key its document by; nothing is placed on it either.
    if (!host || this.held.has(hostId)) return stored?.generation ?? 0;
    const vms = this.compileVms(hostId);
    const network = this.network?.sectionOf(hostId);
    // The network section rides in chunk 0, so its digest counts there.
    const stateDigest = (bytesDigest(new TextEncoder().encode(this.stateId)) + (network ? bytesDigest(encodeMessage(v1.HostNetwork, network)) : 0)) >>> 0;
    let digest = stateDigest;
    for (const vm of vms) digest = (digest + vm.digest) >>> 0;
    if (stored && !this.forced.has(hostId) && stored.agentId === host.agentId && this.isComplete(stored) && this.digestOf(stored) === digest) {
      return stored.generation;
    }
    const chunks = this.chunk(vms);
    const generation = this.beginWrite();
    try {
      for (let i = 0; i < chunks.length; i++) {
        let contentDigest = i === 0 ? stateDigest : 0;
        for (const vm of chunks[i]!) contentDigest = (contentDigest + vm.digest) >>> 0;
        this.lastWrittenMs.set(hostId, this.clock.nowMs());
        const doc = v1.HostDocument.create({
          hostId,
          generation,
          epoch: this.lease.epoch,
          stateId: this.stateId,
          chunkIndex: i,
          chunkCount: chunks.length,
          vms: chunks[i]!.map((c) => c.vm),
          contentDigest,
          network: i === 0 ? network : undefined,
        });
        await this.docs.put(documentKey(host.agentId, hostId, i), doc);
        if (i === 0) this.crash.reach("document-written");
      }
      // Chunks past the new count, or under another agent, are stale now.
      for (const [index, chunk] of stored?.chunks ?? []) {
        const key = chunk.key;
        if (index < chunks.length && key === documentKey(host.agentId, hostId, index)) continue;
        const current = this.docs.get(key);
        if (current) await this.docs.remove(key, current.revision);
      }
      this.forced.delete(hostId);
      return generation;
    } finally {
      this.endWrite(generation);
    }
  }

  /**
   * The host's VMs as it must realize them, in id order, each with its size
   * and digest. A VM's compiled form is kept until its record or its boot
   * volume's changes, so a host's document is not encoded again VM by VM on
   * every change of one of them.
   */
  private compileVms(hostId: string): Compiled[] {
    const ids = [...this.vms.onTarget(hostId)].sort();
    const out: Compiled[] = [];
    for (const id of ids) {
      const entry = this.vms.entry(id);
      const vm = this.vms.get(id);
      if (!entry || !vm) continue;
      const bootVolume = vm.spec?.bootVolume ?? "";
      const volumeRevision = this.volumes.entry(bootVolume)?.revision ?? 0;
      const cached = this.compiled.get(id);
      if (cached?.revision === entry.revision && cached.volumeRevision === volumeRevision) {
        out.push(cached);
        continue;
      }
      const boot = this.volumes.get(bootVolume);
      const desired = v1.DesiredVm.create({
        vmId: vm.id,
        incarnation: vm.incarnation,
        spec: vm.spec,
        powerState: vm.powerState,
        generation: vm.generation,
        bootVolume: boot ? { volumeId: boot.id, sanNodeId: boot.sanNodeId, incarnation: boot.incarnation } : { volumeId: bootVolume },
      });
      const bytes = encodeMessage(v1.DesiredVm, desired);
      const compiled = { revision: entry.revision, volumeRevision, vm: desired, size: bytes.length, digest: bytesDigest(bytes) };
      this.compiled.set(id, compiled);
      out.push(compiled);
    }
    return out;
  }

  /** Splits the VMs into chunks of at most chunkBytesMax encoded bytes (at least one chunk, one VM each). */
  private chunk(vms: Compiled[]): Compiled[][] {
    const chunks: Compiled[][] = [[]];
    let bytes = 0;
    for (const vm of vms) {
      const size = vm.size + 4;
      if (bytes + size > this.chunkBytesMax && chunks[chunks.length - 1]!.length > 0) {
        chunks.push([]);
        bytes = 0;
      }
      chunks[chunks.length - 1]!.push(vm);
      bytes += size;
    }
    return chunks;
  }

  private isComplete(doc: StoredDocument): boolean {
    if (doc.chunkCount === 0) return false;
    for (let i = 0; i < doc.chunkCount; i++) if (doc.chunks.get(i)?.generation !== doc.generation) return false;
    return true;
  }

  private digestOf(doc: StoredDocument): number {
    let digest = 0;
    for (let i = 0; i < doc.chunkCount; i++) digest = (digest + (doc.chunks.get(i)?.digest ?? 0)) >>> 0;
    return digest;
  }

  private observe(key: string, _before: unknown, after: { value: v1.HostDocument; revision: number; epoch: number } | undefined): void {
    const [agentId, hostId, indexText] = key.split(".");
    if (!agentId || !hostId || indexText === undefined) return;
    const index = Number(indexText);
    let doc = this.stored.get(hostId);
    if (!after) {
      if (doc && doc.chunks.get(index)?.key === key) doc.chunks.delete(index);
      return;
    }
    const value = after.value;
    if (!doc || value.generation > doc.generation || doc.agentId !== agentId) {
      const previous = doc;
      doc = { agentId, generation: value.generation, epoch: after.epoch, chunkCount: value.chunkCount, chunks: new Map() };
      // Chunks of the same agent already in are kept: they may belong to this generation.
      if (previous && previous.agentId === agentId) for (const [i, c] of previous.chunks) doc.chunks.set(i, c);
      this.stored.set(hostId, doc);
    }
    // The writer's digest of the chunk's content: an unchanged document is told without encoding it again.
    doc.chunks.set(index, { generation: value.generation, digest: value.contentDigest, vmCount: value.vms.length, revision: after.revision, epoch: after.epoch, key });
    if (value.generation === doc.generation) {
      doc.chunkCount = value.chunkCount;
      doc.epoch = after.epoch;
    }
    this.raiseGeneration(value.generation);
    if (this.docs.isLate(after)) {
      // A deposed controller wrote this after the takeover (the store lets
      // it through, as hosts judge documents by epoch): rewrite it.
      this.forced.add(hostId);
      this.touch(hostId);
    }
    if (this.isComplete(doc)) for (const listener of this.listeners) listener(hostId, doc.generation);
  }
}
