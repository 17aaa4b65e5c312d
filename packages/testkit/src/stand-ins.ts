// Stand-in peers that speak the real wire protocol over a real NATS server,
// for testing one service without the others: a host that realizes whatever
// document it is given at once, and a SAN node that only records volumes.
// They are test peers, not models: the real agent and SAN node have their
// own tests, and the system tests run all three for real. Both can be made
// to misbehave the ways the controller must survive: a host paused, one
// that heartbeats but applies nothing, a SAN node that stops answering.

import {
  barrierKey,
  endpoint,
  hostAgentService,
  hostScope,
  hostService,
  sanNodeService,
  storageService,
  type Bus,
  type Following,
} from "@simdc/bus";
import { addToDigest, alreadyExists, failedPrecondition, memberDigest, notFound, unavailable, uniqueId, wallClock, wallNowMs, type Timer } from "@simdc/common";
import { simdc } from "@simdc/proto";

import v1 = simdc.v1;

export class StandInHost {
  /** What the host runs now, by VM id. */
  readonly vms = new Map<string, v1.VmStatus>();
  /** Every document chunk applied, in order. */
  readonly applied: v1.HostDocument[] = [];
  /** Every VM the host dropped (left out of its document, or replaced by a new incarnation), in order. */
  readonly removed: { vmId: string; incarnation: string }[] = [];
  /** GetHostState calls answered. */
  stateRequests = 0;
  bootId = uniqueId();
  realizedGeneration = 0;
  private timer: Timer | null = null;
  private following: Following | null = null;
  private seq = 0;
  private reportSeq = 0;
  private stateId = "";
  private epoch = 0;
  /** What the host holds as each VM's desired state, for GetHostState. */
  private readonly desired = new Map<string, v1.DesiredVm>();
  /** The newest document seen, applied as soon as the host may. */
  private newest: v1.HostDocument | null = null;
  private pausedNow = false;
  private documentsHeldNow = false;
  private stopped = false;
  /** While true, GetHostState waits (a host slow to tell its state); heartbeats and documents go on. */
  stateRepliesHeld = false;

  constructor(
    private readonly bus: Bus,
    readonly hostId: string,
    readonly capacity: { pcpus: number; memoryMib: number; nics: number } = { pcpus: 8, memoryMib: 16384, nics: 2 },
    readonly agentId = `agent-${hostId}`,
  ) {}

  /**
   * While true the host neither heartbeats nor answers nor applies documents
   * (like SIGSTOP); once false it applies the newest document it was sent.
   */
  get paused(): boolean {
    return this.pausedNow;
  }

  set paused(paused: boolean) {
    this.pausedNow = paused;
    if (!paused) this.applyNewest();
  }

  /**
   * While true the host heartbeats and answers but applies no document (a
   * live host stuck behind); once false it applies the newest one.
   */
  get documentsHeld(): boolean {
    return this.documentsHeldNow;
  }

  set documentsHeld(held: boolean) {
    this.documentsHeldNow = held;
    if (!held) this.applyNewest();
  }

  async start(heartbeatIntervalMs: number): Promise<v1.RegisterHostResponse> {
    await this.bus.serve({ role: "host", scopeId: hostScope(this.agentId, this.hostId), description: "stand-in host" }, [
      endpoint(hostAgentService.GetHostState, async () => {
        await this.gate();
        while (this.stateRepliesHeld && !this.stopped) await wallClock.sleep(20);
        this.stateRequests += 1;
        return {
          hostId: this.hostId,
          bootId: this.bootId,
          realizedGeneration: this.realizedGeneration,
          documentEpoch: this.epoch,
          stateId: this.stateId,
          vms: [...this.vms.values()].map((status) => ({ status, desired: this.desired.get(status.vmId) ?? null })),
        };
      }),
      endpoint(hostAgentService.Reregister, async () => {
        await this.gate();
        // The controller does not know this host: register again, and follow
        // the documents anew (their bucket may have been lost and re-created).
        // A failure is left to the controller, which asks again.
        void this.register()
          .then(() => this.refollow())
          .catch(() => undefined);
        return {};
      }),
    ]);
    const reply = await this.register();
    await this.followDocuments();
    this.timer = wallClock.every(heartbeatIntervalMs, () => this.beat());
    return reply;
  }

  register(): Promise<v1.RegisterHostResponse> {
    return this.bus.call(
      hostService.RegisterHost,
      { hostId: this.hostId, agentId: this.agentId, capacity: this.capacity, bootId: this.bootId },
      { scopeId: this.hostId, source: this.hostId },
    );
  }

  /** Forgets every VM and takes a new boot id, like a restarted agent, then re-reads its document. */
  async reboot(): Promise<void> {
    this.vms.clear();
    this.desired.clear();
    this.realizedGeneration = 0;
    this.stateId = "";
    this.epoch = 0;
    this.newest = null;
    this.bootId = uniqueId();
    await this.register();
    await this.refollow();
  }

  private async refollow(): Promise<void> {
    this.following?.stop();
    this.following = null;
    await this.followDocuments();
  }

  beat(): void {
    if (this.paused) return;
    this.seq += 1;
    let digest = 0;
    for (const s of this.vms.values()) digest = addToDigest(digest, memberDigest(s.vmId, s.incarnation, s.state, s.observedGeneration));
    this.bus.publish(
      this.bus.subjects.event("host", this.hostId, "heartbeat"),
      v1.HostHeartbeat,
      {
        hostId: this.hostId,
        agentId: this.agentId,
        bootId: this.bootId,
        seq: this.seq,
        sentAtMs: wallNowMs(),
        realizedGeneration: this.realizedGeneration,
        vmCount: this.vms.size,
        vmDigest: digest,
        documentEpoch: this.epoch,
        stateId: this.stateId,
      },
      this.hostId,
    );
  }

  /** Stops beating, following and answering (a stopped host answers nothing, paused or not). */
  stop(): void {
    this.stopped = true;
    this.timer?.cancel();
    this.timer = null;
    this.following?.stop();
  }

  private async followDocuments(): Promise<void> {
    const bucket = await this.bus.bucket("docs", v1.HostDocument, { fenced: { epochOf: () => 0 }, bindOnly: true });
    // The controller creates the bucket once it is active; until then there is nothing to follow.
    for (let attempt = 0; ; attempt++) {
      try {
        this.following = await bucket.follow({
          key: `${this.agentId}.${this.hostId}.>`,
          onChange: (change) => {
            if (change.key !== barrierKey && change.value) this.receive(change.value);
          },
          onCorrupt: () => undefined,
        });
        return;
      } catch (err) {
        if (attempt > 100) throw err;
        await wallClock.sleep(100);
      }
    }
  }

  private receive(doc: v1.HostDocument): void {
    this.newest = doc;
    this.applyNewest();
  }

  /**
   * Realizes the newest one-chunk document at once, judged as the real agent
   * judges it: of the state it runs, an older epoch (a deposed controller) or
   * a generation it realized already is ignored; a document of another
   * stored state is applied whatever its generation.
   */
  private applyNewest(): void {
    const doc = this.newest;
    if (!doc || this.paused || this.documentsHeld) return;
    const sameState = doc.stateId === this.stateId;
    if (sameState && (doc.epoch < this.epoch || doc.generation <= this.realizedGeneration)) return;
    this.applied.push(doc);
    const wanted = new Set<string>();
    for (const vm of doc.vms) {
      const vmId = vm.vmId ?? "";
      wanted.add(vmId);
      const held = this.vms.get(vmId);
      // A new incarnation of the name replaces the VM: the old one is removed first.
      if (held && held.incarnation !== vm.incarnation) this.remove(held);
      this.desired.set(vmId, v1.DesiredVm.create(vm));
      const on = vm.powerState === v1.PowerState.POWER_STATE_ON;
      this.report(
        v1.VmStatus.create({
          vmId,
          hostId: this.hostId,
          state: on ? v1.VmState.VM_STATE_RUNNING : v1.VmState.VM_STATE_STOPPED,
          observedGeneration: vm.generation ?? 0,
          incarnation: vm.incarnation ?? "",
        }),
      );
    }
    for (const status of [...this.vms.values()]) if (!wanted.has(status.vmId)) this.remove(status);
    this.realizedGeneration = doc.generation;
    this.stateId = doc.stateId;
    this.epoch = doc.epoch;
    this.beat();
  }

  private remove(status: v1.VmStatus): void {
    this.removed.push({ vmId: status.vmId, incarnation: status.incarnation });
    this.desired.delete(status.vmId);
    this.report(v1.VmStatus.create({ ...status, state: v1.VmState.VM_STATE_REMOVED }));
  }

  private report(status: v1.VmStatus): void {
    this.reportSeq += 1;
    status.reportSeq = this.reportSeq;
    if (status.state === v1.VmState.VM_STATE_REMOVED) this.vms.delete(status.vmId);
    else this.vms.set(status.vmId, status);
    this.bus.publish(this.bus.subjects.event("host", this.hostId, "vm"), v1.VmStatus, status, this.hostId);
  }

  private async gate(): Promise<void> {
    while (this.paused && !this.stopped) await wallClock.sleep(20);
    if (this.stopped) throw unavailable(`stand-in host ${this.hostId} is stopped`);
  }
}

export class StandInSanNode {
  /** Volumes held: id -> size and incarnation. */
  readonly volumes = new Map<string, { sizeMib: number; incarnation: string; stateId: string }>();
  readonly bootId = uniqueId();
  /** While false, every volume call fails UNAVAILABLE (a node that cannot work); heartbeats go on. */
  answering = true;
  private timer: Timer | null = null;

  constructor(
    private readonly bus: Bus,
    readonly nodeId: string,
    readonly capacityMib = 10_240,
  ) {}

  async start(heartbeatIntervalMs: number): Promise<void> {
    const working = (): void => {
      if (!this.answering) throw unavailable(`stand-in SAN node ${this.nodeId} is not answering`);
    };
    await this.bus.serve({ role: "san-node", scopeId: this.nodeId, description: "stand-in SAN node" }, [
      endpoint(sanNodeService.CreateBackingVolume, (req) => {
        working();
        const held = this.volumes.get(req.volumeId);
        if (held && held.incarnation !== req.incarnation) throw alreadyExists(`holds another incarnation`);
        this.volumes.set(req.volumeId, { sizeMib: req.sizeMib, incarnation: req.incarnation, stateId: req.stateId });
        return { volume: { volumeId: req.volumeId, sizeMib: req.sizeMib, incarnation: req.incarnation, blockSizeBytes: 4096 } };
      }),
      endpoint(sanNodeService.DeleteBackingVolume, (req) => {
        working();
        const held = this.volumes.get(req.volumeId);
        if (!held) throw notFound(`volume ${req.volumeId} not found`);
        if (req.incarnation && held.incarnation !== req.incarnation) throw failedPrecondition("holds another incarnation");
        this.volumes.delete(req.volumeId);
        return {};
      }),
      endpoint(sanNodeService.ListBackingVolumes, () => {
        working();
        return {
          volumes: [...this.volumes].map(([volumeId, v]) => ({ volumeId, sizeMib: v.sizeMib, incarnation: v.incarnation, stateId: v.stateId, blockSizeBytes: 4096 })),
        };
      }),
      endpoint(sanNodeService.Reregister, () => {
        // A failure is left to the controller, which asks again.
        void this.register().catch(() => undefined);
        return {};
      }),
    ]);
    await this.register();
    this.timer = wallClock.every(heartbeatIntervalMs, () => {
      this.bus.publish(this.bus.subjects.event("san", this.nodeId, "heartbeat"), v1.SanNodeHeartbeat, {
        nodeId: this.nodeId,
        bootId: this.bootId,
        sentAtMs: wallNowMs(),
        capacityMib: this.capacityMib,
        writable: true,
      });
    });
  }

  register(): Promise<v1.RegisterSanNodeResponse> {
    return this.bus.call(
      storageService.RegisterSanNode,
      { nodeId: this.nodeId, capacityMib: this.capacityMib, blockSizeBytes: 4096, bootId: this.bootId },
      { scopeId: this.nodeId },
    );
  }

  stop(): void {
    this.timer?.cancel();
  }
}
