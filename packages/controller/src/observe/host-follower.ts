// Listens to the hosts: heartbeats (liveness, realized generation, the
// digest of their VM states), VM status events, and SAN node heartbeats. The
// subject says who speaks (NATS permissions bind it to the sender; in an
// agent's batch of heartbeats it names the agent, and a beat counts only for
// a host that agent registered); a heartbeat from a host the registry does not know, or from another boot of
// it, is refused and counted, and the host is asked to register again. When
// the digest disagrees with what was heard, or this controller just started,
// the host's full state is asked for, one call per host at a time. Every
// controller listens, the standby too, so it knows everything when it takes
// over; only the active one writes or asks hosts to register.

import { hostAgentService, hostScope, sanNodeService, Subjects, type BatchItem, type Bus } from "@simdc/bus";
import { isValidName, uniqueId, type Clock, type Logger } from "@simdc/common";
import { simdc } from "@simdc/proto";
import type { ControllerState } from "../state.js";
import { withRequestId } from "../store/kinds.js";

import v1 = simdc.v1;

/** Full-state calls in flight at once. */
export const hostStateCallsMax = 32;
/** How long a full-state call may take, in ms. */
export const hostStateCallTimeoutMs = 5_000;

export class HostFollower {
  private readonly asking = new Set<string>();
  private readonly queued = new Map<string, string>();
  /** When each host was last asked for its state, or prompted to register (simulated ms). */
  private readonly lastAskedMs = new Map<string, number>();
  private readonly lastPromptedMs = new Map<string, number>();
  private readonly lastRefusalEventMs = new Map<string, number>();

  constructor(private readonly state: ControllerState) {}

  private get bus(): Bus {
    return this.state.bus;
  }

  private get clock(): Clock {
    return this.state.clock;
  }

  private get logger(): Logger {
    return this.state.logger;
  }

  start(): void {
    const { subjects } = this.bus;
    const hostOf = (subject: string): string => Subjects.token(subject, subjects.eventIdToken);
    this.bus.subscribe(subjects.event("host", "*", "heartbeat"), v1.HostHeartbeat, (beat, subject) => this.onHeartbeat(hostOf(subject), beat));
    this.bus.subscribeBatch(
      subjects.event("agent", "*", "heartbeats"),
      v1.HostHeartbeats,
      (batch, subject) => this.unpackBeats(Subjects.token(subject, subjects.eventIdToken), batch),
      ({ agentId, beat }) => this.onAgentBeat(agentId, beat),
    );
    this.bus.subscribe(subjects.event("host", "*", "vm"), v1.VmStatus, (status, subject) => this.onVmStatus(hostOf(subject), status));
    this.bus.subscribe(subjects.event("san", "*", "heartbeat"), v1.SanNodeHeartbeat, (beat, subject) => this.onSanHeartbeat(hostOf(subject), beat));
    this.bus.subscribe(subjects.event("host", "*", "metrics"), v1.HostMetrics, (metrics, subject) => this.onMetrics(hostOf(subject), metrics));
  }

  /**
   * A host's metrics: its hypervisor's sample becomes what placement measures
   * of it. Only a registered host's, under its own subject (which NATS
   * permissions bind to its agent), so a peer cannot speak for another.
   */
  private onMetrics(hostId: string, metrics: v1.HostMetrics): void {
    if (!this.state.hosts.get(hostId) || metrics.hostId !== hostId || !metrics.hypervisor) return;
    this.state.measured.set(hostId, metrics.hypervisor);
    this.state.ranking.update(hostId);
  }

  /** Refuses a message: counted always, logged and reported at most once per id and liveness timeout. */
  refuse(id: string, what: string, why: string): void {
    const { state } = this;
    state.counters.refused += 1;
    const now = this.clock.nowMs();
    if (now - (this.lastRefusalEventMs.get(id) ?? -Infinity) < state.hosts.timeoutMs) return;
    this.lastRefusalEventMs.set(id, now);
    this.logger.warn({ id, why, refusedInAll: state.counters.refused }, `refused ${what}`);
    if (state.lease.isActive) {
      state.events.publish("host", id, "refused", v1.EventKind.EVENT_KIND_MESSAGE_REFUSED, `refused ${what} of ${id}: ${why}`, {
        code: v1.ErrorCode.ERROR_CODE_FAILED_PRECONDITION,
        message: why,
      });
    }
  }

  /** The beats of an agent's batch, each standing for its host's own heartbeat; a beat naming no valid host is refused. */
  private *unpackBeats(agentId: string, batch: v1.HostHeartbeats): Iterable<BatchItem<{ agentId: string; beat: v1.HostHeartbeat }>> {
    if (!isValidName(agentId)) return;
    // Decoded, so every beat is a full message with its defaults.
    for (const beat of batch.beats as v1.HostHeartbeat[]) {
      if (!isValidName(beat.hostId)) {
        this.refuse(agentId, "a heartbeat", `it names no valid host (${JSON.stringify(beat.hostId.slice(0, 64))})`);
        continue;
      }
      yield { item: { agentId, beat }, subject: this.bus.subjects.event("host", beat.hostId, "heartbeat"), sender: beat.hostId, seq: beat.seq };
    }
  }

  /**
   * A beat from an agent's batch: the subject binds only the agent (NATS
   * permissions), so the beat counts only for a host that agent registered.
   */
  private onAgentBeat(agentId: string, beat: v1.HostHeartbeat): Promise<void> | void {
    if (beat.agentId && beat.agentId !== agentId) return this.refuse(beat.hostId, "a heartbeat", `it names agent ${JSON.stringify(beat.agentId)} in a batch of ${agentId}`);
    const registeredBy = this.state.hosts.get(beat.hostId)?.agentId;
    if (registeredBy && registeredBy !== agentId) return this.refuse(beat.hostId, "a heartbeat", `agent ${agentId} sent it, but ${registeredBy} registered the host`);
    return this.onHeartbeat(beat.hostId, beat.agentId ? beat : v1.HostHeartbeat.create({ ...beat, agentId }));
  }

  private async onHeartbeat(hostId: string, beat: v1.HostHeartbeat): Promise<void> {
    const { state } = this;
    if (!isValidName(hostId)) return;
    if (beat.hostId && beat.hostId !== hostId) return this.refuse(hostId, "a heartbeat", `it names ${JSON.stringify(beat.hostId)} in a subject of ${hostId}`);
    // Judged against what was heard up to this beat: VM statuses the host
    // sent after it may be recorded while the registry is asked, and would
    // make a host in step look out of step.
    const inStep = state.observed.matches(hostId, beat.vmDigest, beat.vmCount);
    const emptied = beat.vmCount === 0 && beat.vmDigest === 0 && !state.observed.isComplete(hostId);
    const verdict = await state.hosts.heartbeat(hostId, beat.bootId);
    // A host that runs a document of a store this controller does not have
    // gets no document before its VMs are adopted: it would drop them all.
    if (verdict.kind !== "stale-boot" && beat.stateId && beat.stateId !== state.stateId) state.documents.hold(hostId);
    if (verdict.kind === "unknown") {
      this.refuse(hostId, "a heartbeat", "the host is not registered");
      return this.prompt(beat.agentId, hostId);
    }
    if (verdict.kind === "stale-boot") {
      this.refuse(hostId, "a heartbeat", `boot ${beat.bootId.slice(0, 8)} is not the registered boot ${verdict.registeredBootId.slice(0, 8)}`);
      return this.prompt(beat.agentId, hostId);
    }
    if (verdict.transition) {
      state.ranking.update(hostId);
      state.sync.update(hostId);
    }
    if (beat.stateId && beat.stateId !== state.stateId) {
      // The host runs a document from a store this controller does not have: learn what it runs.
      this.askState(hostId, beat.agentId);
      return;
    }
    state.documents.release(hostId);
    if (!state.sync.report(hostId, beat.realizedGeneration, state.lease.isActive, beat.groupsRealized)) {
      this.refuse(hostId, "a heartbeat", `it reports generation ${beat.realizedGeneration}, which was never assigned (newest ${state.documents.desiredGeneration})`);
    }
    if (emptied) state.observed.resetHost(hostId);
    else if (!inStep) this.askState(hostId, beat.agentId);
  }

  /**
   * Records a VM's state as its host reports it. The host's event is the
   * VM's state-change event for watchers (`<p>.evt.host.<hostId>.vm`); the
   * controller adds none of its own, one message a change being enough.
   */
  private onVmStatus(hostId: string, status: v1.VmStatus): void {
    const { state } = this;
    if (!isValidName(hostId) || !isValidName(status.vmId)) return;
    if (status.hostId && status.hostId !== hostId) return this.refuse(hostId, "a VM status", `it names host ${status.hostId}`);
    state.observed.record(hostId, status.hostId ? status : v1.VmStatus.create({ ...status, hostId }));
  }

  private async onSanHeartbeat(nodeId: string, beat: v1.SanNodeHeartbeat): Promise<void> {
    const { state } = this;
    if (!isValidName(nodeId)) return;
    if (beat.nodeId && beat.nodeId !== nodeId) return this.refuse(nodeId, "a SAN heartbeat", `it names ${JSON.stringify(beat.nodeId)}`);
    const verdict = await state.sanNodes.heartbeat(nodeId, beat.bootId);
    if (verdict.kind !== "ok") {
      this.refuse(nodeId, "a SAN heartbeat", verdict.kind === "unknown" ? "the node is not registered" : "it is from another boot of the node");
      return this.promptNode(nodeId);
    }
    if (verdict.transition) state.volumeReconciler.nodeConnected(nodeId);
    const entry = state.sanNodes.records.get(nodeId);
    if (state.lease.isActive && entry && (entry.value.writable !== beat.writable || entry.value.problem !== beat.problem)) {
      try {
        await state.sanNodes.records.write(nodeId, v1.SanNode.create({ ...entry.value, writable: beat.writable, problem: beat.problem }), entry.revision);
      } catch (err) {
        this.logger.debug({ nodeId, err: String(err) }, "could not store a SAN node's disk state; the next beat retries");
      }
    }
  }

  /** Asks a host it does not know (or knows another boot of) to register again, once per liveness timeout. */
  private async prompt(agentId: string, hostId: string): Promise<void> {
    if (!this.state.lease.isActive || !isValidName(agentId) || !this.due(this.lastPromptedMs, hostId, this.state.hosts.timeoutMs)) return;
    try {
      await this.bus.call(hostAgentService.Reregister, {}, { scopeId: hostScope(agentId, hostId), timeoutMs: hostStateCallTimeoutMs });
    } catch (err) {
      this.logger.debug({ hostId, err: String(err) }, "could not ask a host to register again");
    }
  }

  private async promptNode(nodeId: string): Promise<void> {
    if (!this.state.lease.isActive || !this.due(this.lastPromptedMs, `san/${nodeId}`, this.state.sanNodes.timeoutMs)) return;
    try {
      await this.bus.call(sanNodeService.Reregister, {}, { scopeId: nodeId, timeoutMs: hostStateCallTimeoutMs });
    } catch (err) {
      this.logger.debug({ nodeId, err: String(err) }, "could not ask a SAN node to register again");
    }
  }

  private due(last: Map<string, number>, key: string, everyMs: number): boolean {
    const now = this.clock.nowMs();
    if (now - (last.get(key) ?? -Infinity) < everyMs) return false;
    last.set(key, now);
    return true;
  }

  /** Queues a full-state call to the host (one at a time per host, at most once per heartbeat interval). */
  private askState(hostId: string, agentId: string): void {
    if (!isValidName(agentId) || this.asking.has(hostId)) return;
    if (!this.due(this.lastAskedMs, hostId, this.state.heartbeatIntervalMs)) return;
    this.queued.set(hostId, agentId);
    this.pump();
  }

  private pump(): void {
    for (const [hostId, agentId] of this.queued) {
      if (this.asking.size >= hostStateCallsMax) return;
      this.queued.delete(hostId);
      this.asking.add(hostId);
      void this.fetchState(hostId, agentId).finally(() => {
        this.asking.delete(hostId);
        this.pump();
      });
    }
  }

  private async fetchState(hostId: string, agentId: string): Promise<void> {
    const { state } = this;
    let reply: v1.GetHostStateResponse;
    try {
      reply = await this.bus.call(hostAgentService.GetHostState, {}, { scopeId: hostScope(agentId, hostId), timeoutMs: hostStateCallTimeoutMs });
    } catch (err) {
      this.logger.debug({ hostId, err: String(err) }, "could not get a host's state");
      return;
    }
    if (reply.hostId !== hostId || reply.bootId !== state.hosts.get(hostId)?.bootId) return;
    const statuses: v1.VmStatus[] = [];
    for (const report of reply.vms) {
      const status = report.status ? v1.VmStatus.create({ ...report.status, hostId }) : null;
      if (status && isValidName(status.vmId)) statuses.push(status);
    }
    state.observed.replaceHost(hostId, statuses);
    if (reply.stateId && reply.stateId !== state.stateId) {
      if (state.lease.isActive) await this.adopt(hostId, reply);
      return;
    }
    state.sync.report(hostId, reply.realizedGeneration, state.lease.isActive);
  }

  /**
   * Adopts what a host runs from a store this controller does not have (the
   * store was lost): each VM whose name is free becomes desired state on
   * that host, and the host's generations continue above what it realized.
   */
  private async adopt(hostId: string, reply: v1.GetHostStateResponse): Promise<void> {
    const { state } = this;
    state.documents.raiseGeneration(reply.realizedGeneration);
    for (const report of reply.vms) {
      const desired = report.desired ? v1.DesiredVm.create(report.desired) : null;
      if (!desired || !isValidName(desired.vmId) || !state.vms.isFree(desired.vmId)) continue;
      const vm = v1.Vm.create({
        id: desired.vmId,
        spec: desired.spec,
        powerState: desired.powerState,
        generation: desired.generation || 1,
        hostId,
        createdAtMs: this.clock.nowMs(),
        incarnation: desired.incarnation || uniqueId(),
        placement: { hostId, reason: `adopted from host ${hostId}, which ran it from an earlier store (${reply.stateId})` },
      });
      try {
        await state.vms.records.write(vm.id, v1.VmRecord.create({ vm, requestIds: withRequestId([], "") }), state.vms.entry(vm.id)?.revision);
      } catch (err) {
        this.logger.warn({ vmId: vm.id, err: String(err) }, "could not adopt a VM");
        continue;
      }
      const message = `vm ${vm.id} running on ${hostId} from an earlier store was adopted`;
      this.logger.warn({ vmId: vm.id, hostId }, message);
      state.events.publish("vm", vm.id, "adopted", v1.EventKind.EVENT_KIND_STATE_ADOPTED, message);
    }
    // Its VMs are desired state now: its next document carries them.
    state.documents.release(hostId);
    state.documents.touch(hostId);
  }
}
