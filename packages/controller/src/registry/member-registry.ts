// A registry of members that register and then heartbeat: hypervisor hosts
// and SAN nodes. Registrations are persisted in KV, so a restarted controller
// knows every member; liveness comes from the silence between heartbeats.
// A restarted controller gives every known member a full timeout of grace
// before judging it, so a controller restart does not disconnect the fleet.

import type { Bucket, Bus, EventObjectKind, MessageType } from "@simdc/bus";
import { notFound, type Clock, type Logger } from "@simdc/common";
import { simdc } from "@simdc/proto";
import type { EventPublisher } from "../events.js";
import { Liveness, type LivenessPolicy } from "./liveness.js";

import v1 = simdc.v1;

/** How one kind of member stores its connection state and boot id. */
export interface MemberKind<T extends { id: string; bootId: string }> {
  /** KV bucket name and event object kind. */
  bucket: string;
  eventKind: EventObjectKind;
  noun: string;
  type: MessageType<T>;
  isConnected(member: T): boolean;
  withConnected(member: T, connected: boolean, bootId: string): T;
  registeredEvent: v1.EventKind;
  connectedEvent: v1.EventKind;
  disconnectedEvent: v1.EventKind;
}

export interface MemberTransition {
  id: string;
  connected: boolean;
  /** True when the member's process restarted (a new boot id). */
  rebooted: boolean;
}

export interface RegistryOptions {
  replicas: number;
  policy: LivenessPolicy;
  clock: Clock;
  events: EventPublisher;
  logger: Logger;
}

export class MemberRegistry<T extends { id: string; bootId: string }> {
  private readonly members = new Map<string, T>();
  private readonly liveness: Liveness;

  private constructor(
    private readonly kind: MemberKind<T>,
    private readonly bucket: Bucket<T>,
    private readonly options: RegistryOptions,
  ) {
    this.liveness = new Liveness(options.policy, options.clock);
  }

  static async open<T extends { id: string; bootId: string }>(
    bus: Bus,
    kind: MemberKind<T>,
    options: RegistryOptions,
  ): Promise<MemberRegistry<T>> {
    const bucket = await bus.bucket(kind.bucket, kind.type, { replicas: options.replicas });
    const registry = new MemberRegistry(kind, bucket, options);
    const all = await bucket.loadAll((key, err) =>
      options.logger.error({ key, err }, `skipping a ${kind.noun} record that does not decode`),
    );
    for (const [id, { value }] of all) {
      registry.members.set(id, value);
      if (kind.isConnected(value)) registry.liveness.seen(id);
    }
    return registry;
  }

  get timeoutMs(): number {
    return this.liveness.timeoutMs;
  }

  get(id: string): T | undefined {
    return this.members.get(id);
  }

  /** @throws SimdcError NOT_FOUND. */
  require(id: string): T {
    const member = this.members.get(id);
    if (!member) throw notFound(`${this.kind.noun} ${id} not found`);
    return member;
  }

  all(): IterableIterator<T> {
    return this.members.values();
  }

  isConnected(id: string): boolean {
    const member = this.members.get(id);
    return member !== undefined && this.kind.isConnected(member);
  }

  lastHeartbeatMs(id: string): number {
    return this.liveness.lastSeen(id) ?? 0;
  }

  /**
   * Records a (re-)registration, persisted before it returns.
   * @throws SimdcError UNAVAILABLE when KV does not answer.
   */
  async register(member: T): Promise<MemberTransition> {
    const previous = this.members.get(member.id);
    const registered = this.kind.withConnected(member, true, member.bootId);
    await this.bucket.put(member.id, registered);
    this.members.set(member.id, registered);
    this.liveness.seen(member.id);
    const rebooted = previous !== undefined && previous.bootId !== member.bootId;
    if (!previous) {
      this.publish(member.id, "registered", this.kind.registeredEvent, `${this.kind.noun} ${member.id} registered`);
    } else if (!this.kind.isConnected(previous)) {
      this.announce(member.id, true);
    }
    this.options.logger.info({ [this.kind.eventKind]: member.id, rebooted }, `${this.kind.noun} registered`);
    return { id: member.id, connected: true, rebooted };
  }

  /**
   * Records a heartbeat; unknown members are ignored (they register first).
   * @returns the transition when the member was disconnected or rebooted, else null.
   */
  async heartbeat(id: string, bootId: string): Promise<MemberTransition | null> {
    const member = this.members.get(id);
    if (!member) return null;
    this.liveness.seen(id);
    const wasConnected = this.kind.isConnected(member);
    const rebooted = bootId !== member.bootId;
    if (wasConnected && !rebooted) return null;
    // Memory first, so heartbeats racing the KV write see the new state once.
    const updated = this.kind.withConnected(member, true, bootId);
    this.members.set(id, updated);
    if (!wasConnected) this.announce(id, true);
    await this.persist(updated);
    return { id, connected: true, rebooted };
  }

  /** Marks silent members disconnected. @returns their transitions. */
  async sweep(): Promise<MemberTransition[]> {
    const out: MemberTransition[] = [];
    for (const id of this.liveness.silent()) {
      const member = this.members.get(id);
      if (!member || !this.kind.isConnected(member)) continue;
      const updated = this.kind.withConnected(member, false, member.bootId);
      this.members.set(id, updated);
      this.announce(id, false);
      out.push({ id, connected: false, rebooted: false });
      await this.persist(updated);
    }
    return out;
  }

  private async persist(member: T): Promise<void> {
    try {
      await this.bucket.put(member.id, member);
    } catch (err) {
      // The state is re-derived from heartbeats; a lost write only delays what a restart sees.
      this.options.logger.error({ err, id: member.id }, `could not persist ${this.kind.noun} state`);
    }
  }

  private announce(id: string, connected: boolean): void {
    const { logger } = this.options;
    if (connected) {
      logger.info({ [this.kind.eventKind]: id }, `${this.kind.noun} connected`);
      this.publish(id, "connected", this.kind.connectedEvent, `${this.kind.noun} ${id} is connected`);
      return;
    }
    const silenceMs = this.liveness.timeoutMs;
    logger.warn({ [this.kind.eventKind]: id, silenceMs }, `${this.kind.noun} disconnected`);
    this.publish(id, "disconnected", this.kind.disconnectedEvent, `${this.kind.noun} ${id} sent no heartbeat for ${silenceMs} ms`, {
      code: v1.ErrorCode.ERROR_CODE_UNAVAILABLE,
      message: "heartbeats missed",
    });
  }

  private publish(id: string, name: string, kind: v1.EventKind, message: string, status?: v1.Status.$Properties): void {
    this.options.events.publish(this.kind.eventKind, id, name, kind, message, status);
  }
}

export const hostKind: MemberKind<v1.Host> = {
  bucket: "hosts",
  eventKind: "host",
  noun: "host",
  type: v1.Host,
  isConnected: (h) => h.state === v1.HostState.HOST_STATE_CONNECTED,
  withConnected: (h, connected, bootId) =>
    v1.Host.create({
      ...h,
      bootId,
      state: connected ? v1.HostState.HOST_STATE_CONNECTED : v1.HostState.HOST_STATE_DISCONNECTED,
    }),
  registeredEvent: v1.EventKind.EVENT_KIND_HOST_REGISTERED,
  connectedEvent: v1.EventKind.EVENT_KIND_HOST_CONNECTED,
  disconnectedEvent: v1.EventKind.EVENT_KIND_HOST_DISCONNECTED,
};

export const sanNodeKind: MemberKind<v1.SanNode> = {
  bucket: "san-nodes",
  eventKind: "san",
  noun: "SAN node",
  type: v1.SanNode,
  isConnected: (n) => n.connected,
  withConnected: (n, connected, bootId) => v1.SanNode.create({ ...n, bootId, connected }),
  registeredEvent: v1.EventKind.EVENT_KIND_SAN_NODE_REGISTERED,
  connectedEvent: v1.EventKind.EVENT_KIND_SAN_NODE_CONNECTED,
  disconnectedEvent: v1.EventKind.EVENT_KIND_SAN_NODE_DISCONNECTED,
};
