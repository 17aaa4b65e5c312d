// Stand-in peers that speak the real wire protocol over a real NATS server,
// for testing one service without the others: a host that realizes whatever
// document it is given at once, and a SAN node that only records volumes.
// They are test peers, not models: the real agent and SAN node have their
// own tests, and the system tests run all three for real.

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
import { addToDigest, failedPrecondition, memberDigest, notFound, uniqueId, wallClock, wallNowMs, type Timer } from "@simdc/common";
import { simdc } from "@simdc/proto";

import v1 = simdc.v1;

export class StandInHost {
  /** What the host runs now, by VM id. */
  readonly vms = new Map<string, v1.VmStatus>();
  /** Every document chunk applied, in order. */
  readonly applied: v1.HostDocument[] = [];
  bootId = uniqueId();
  realizedGeneration = 0;
  private timer: Timer | null = null;
  private following: Following | null = null;
  private seq = 0;
  private reportSeq = 0;
  private stateId = "";
  private epoch = 0;
  /** While true the host neither heartbeats nor answers nor applies documents (like SIGSTOP). */
  paused = false;

  constructor(
    private readonly bus: Bus,
    readonly hostId: string,
    readonly capacity: { pcpus: number; memoryMib: number; nics: number } = { pcpus: 8, memoryMib: 16384, nics: 2 },
    readonly agentId = `agent-${hostId}`,
  ) {}

  async start(heartbeatIntervalMs: number): Promise<v1.RegisterHostResponse> {
    await this.bus.serve({ role: "host", scopeId: hostScope(this.agentId, this.hostId), description: "stand-in host" }, [
      endpoint(hostAgentService.GetHostState, async () => {
        await this.gate();
        return {
          hostId: this.hostId,
          bootId: this.bootId,
          realizedGeneration: this.realizedGeneration,
          documentEpoch: this.epoch,
          stateId: this.stateId,
          vms: [...this.vms.values()].map((status) => ({ status })),
        };
      }),
      endpoint(hostAgentService.Reregister, async () => {
        await this.gate();
        void this.register();
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
    this.realizedGeneration = 0;
    this.bootId = uniqueId();
    await this.register();
    this.following?.stop();
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

  stop(): void {
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
            if (change.key !== barrierKey && change.value) this.apply(change.value);
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

  /** Realizes a one-chunk document at once: every VM reaches its desired power state. */
  private apply(doc: v1.HostDocument): void {
    if (this.paused || doc.generation <= this.realizedGeneration) return;
    this.applied.push(doc);
    const wanted = new Set<string>();
    for (const vm of doc.vms) {
      wanted.add(vm.vmId ?? "");
      const on = vm.powerState === v1.PowerState.POWER_STATE_ON;
      this.report(
        v1.VmStatus.create({
          vmId: vm.vmId ?? "",
          hostId: this.hostId,
          state: on ? v1.VmState.VM_STATE_RUNNING : v1.VmState.VM_STATE_STOPPED,
          observedGeneration: vm.generation ?? 0,
          incarnation: vm.incarnation ?? "",
        }),
      );
    }
    for (const status of [...this.vms.values()]) {
      if (!wanted.has(status.vmId)) this.report(v1.VmStatus.create({ ...status, state: v1.VmState.VM_STATE_REMOVED }));
    }
    this.realizedGeneration = doc.generation;
    this.stateId = doc.stateId;
    this.epoch = doc.epoch;
    this.beat();
  }

  private report(status: v1.VmStatus): void {
    this.reportSeq += 1;
    status.reportSeq = this.reportSeq;
    if (status.state === v1.VmState.VM_STATE_REMOVED) this.vms.delete(status.vmId);
    else this.vms.set(status.vmId, status);
    this.bus.publish(this.bus.subjects.event("host", this.hostId, "vm"), v1.VmStatus, status, this.hostId);
  }

  private async gate(): Promise<void> {
    while (this.paused) await wallClock.sleep(20);
  }
}

export class StandInSanNode {
  /** Volumes held: id -> size and incarnation. */
  readonly volumes = new Map<string, { sizeMib: number; incarnation: string; stateId: string }>();
  readonly bootId = uniqueId();
  private timer: Timer | null = null;

  constructor(
    private readonly bus: Bus,
    readonly nodeId: string,
    readonly capacityMib = 10_240,
  ) {}

  async start(heartbeatIntervalMs: number): Promise<void> {
    await this.bus.serve({ role: "san-node", scopeId: this.nodeId, description: "stand-in SAN node" }, [
      endpoint(sanNodeService.CreateBackingVolume, (req) => {
        const held = this.volumes.get(req.volumeId);
        if (held && held.incarnation !== req.incarnation) throw failedPrecondition(`holds another incarnation`);
        this.volumes.set(req.volumeId, { sizeMib: req.sizeMib, incarnation: req.incarnation, stateId: req.stateId });
        return { volume: { volumeId: req.volumeId, sizeMib: req.sizeMib, incarnation: req.incarnation, blockSizeBytes: 4096 } };
      }),
      endpoint(sanNodeService.DeleteBackingVolume, (req) => {
        const held = this.volumes.get(req.volumeId);
        if (!held) throw notFound(`volume ${req.volumeId} not found`);
        if (req.incarnation && held.incarnation !== req.incarnation) throw failedPrecondition("holds another incarnation");
        this.volumes.delete(req.volumeId);
        return {};
      }),
      endpoint(sanNodeService.ListBackingVolumes, () => ({
        volumes: [...this.volumes].map(([volumeId, v]) => ({ volumeId, sizeMib: v.sizeMib, incarnation: v.incarnation, stateId: v.stateId, blockSizeBytes: 4096 })),
      })),
      endpoint(sanNodeService.Reregister, () => ({})),
    ]);
    await this.bus.call(
      storageService.RegisterSanNode,
      { nodeId: this.nodeId, capacityMib: this.capacityMib, blockSizeBytes: 4096, bootId: this.bootId },
      { scopeId: this.nodeId },
    );
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

  stop(): void {
    this.timer?.cancel();
  }
}
