// Stand-in peers that speak the real wire protocol over a real NATS server,
// for testing one service without the others: a host that realizes whatever
// it is told at once, and a SAN node that only records volumes. They are
// test peers, not models: the real agent and SAN node have their own tests,
// and the system tests run all three for real.

import { randomUUID } from "node:crypto";
import { endpoint, hostAgentService, hostService, sanNodeService, storageService, type Bus } from "@simdc/bus";
import { notFound } from "@simdc/common";
import { simdc } from "@simdc/proto";

import v1 = simdc.v1;

export class StandInHost {
  readonly vms = new Map<string, v1.VmStatus>();
  readonly applied: v1.ApplyVmRequest[] = [];
  bootId = randomUUID();
  private timer: NodeJS.Timeout | null = null;
  private seq = 0;
  /** While true the host neither heartbeats nor answers (like SIGSTOP). */
  paused = false;

  constructor(
    private readonly bus: Bus,
    readonly hostId: string,
    readonly capacity: { pcpus: number; memoryMib: number; nics: number } = { pcpus: 8, memoryMib: 16384, nics: 2 },
  ) {}

  async start(heartbeatIntervalMs: number): Promise<v1.RegisterHostResponse> {
    await this.bus.serve({ role: "host", scopeId: this.hostId, description: "stand-in host" }, [
      endpoint(hostAgentService.ApplyVm, async (req) => {
        await this.gate();
        this.applied.push(req);
        const on = req.powerState === v1.PowerState.POWER_STATE_ON;
        const status = v1.VmStatus.create({
          vmId: req.vmId,
          hostId: this.hostId,
          state: on ? v1.VmState.VM_STATE_RUNNING : v1.VmState.VM_STATE_STOPPED,
          observedGeneration: req.generation,
        });
        this.vms.set(req.vmId, status);
        this.bus.publish(this.bus.subjects.event("vm", req.vmId, "status"), v1.VmStatus, status);
        return { status };
      }),
      endpoint(hostAgentService.RemoveVm, async (req) => {
        await this.gate();
        if (!this.vms.delete(req.vmId)) throw notFound(`vm ${req.vmId} not found`);
        return {};
      }),
    ]);
    const reply = await this.register();
    this.timer = setInterval(() => this.beat(), heartbeatIntervalMs);
    return reply;
  }

  register(): Promise<v1.RegisterHostResponse> {
    return this.bus.call(hostService.RegisterHost, {
      hostId: this.hostId,
      agentId: `agent-${this.hostId}`,
      capacity: this.capacity,
      bootId: this.bootId,
    });
  }

  /** Forgets every VM and takes a new boot id, like a restarted agent. */
  async reboot(): Promise<void> {
    this.vms.clear();
    this.bootId = randomUUID();
    await this.register();
  }

  beat(): void {
    if (this.paused) return;
    this.seq += 1;
    this.bus.publish(this.bus.subjects.event("host", this.hostId, "heartbeat"), v1.HostHeartbeat, {
      hostId: this.hostId,
      agentId: `agent-${this.hostId}`,
      bootId: this.bootId,
      seq: this.seq,
      sentAtMs: Date.now(),
      vms: [...this.vms.values()],
    });
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  private async gate(): Promise<void> {
    while (this.paused) await new Promise((r) => setTimeout(r, 20));
  }
}

export class StandInSanNode {
  readonly volumes = new Map<string, number>();
  readonly bootId = randomUUID();
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly bus: Bus,
    readonly nodeId: string,
    readonly capacityMib = 10_240,
  ) {}

  async start(heartbeatIntervalMs: number): Promise<void> {
    await this.bus.serve({ role: "san-node", scopeId: this.nodeId, description: "stand-in SAN node" }, [
      endpoint(sanNodeService.CreateBackingVolume, (req) => {
        this.volumes.set(req.volumeId, req.sizeMib);
        return { volume: { id: req.volumeId, sizeMib: req.sizeMib, sanNodeId: this.nodeId, blockSizeBytes: 4096 } };
      }),
      endpoint(sanNodeService.DeleteBackingVolume, (req) => {
        if (!this.volumes.delete(req.volumeId)) throw notFound(`volume ${req.volumeId} not found`);
        return {};
      }),
    ]);
    await this.bus.call(storageService.RegisterSanNode, {
      nodeId: this.nodeId,
      capacityMib: this.capacityMib,
      blockSizeBytes: 4096,
      bootId: this.bootId,
    });
    this.timer = setInterval(() => {
      this.bus.publish(this.bus.subjects.event("san", this.nodeId, "heartbeat"), v1.SanNodeHeartbeat, {
        nodeId: this.nodeId,
        bootId: this.bootId,
        sentAtMs: Date.now(),
        capacityMib: this.capacityMib,
      });
    }, heartbeatIntervalMs);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }
}
