// A registry of members that register and then heartbeat: hypervisor hosts
// and SAN nodes. Registrations are stored in KV (a fenced store), so every
// controller knows every member; liveness comes from the silence between
// heartbeats, which every controller hears, so a standby that takes over
// knows at once who is alive. A restarted controller gives every known
// member a full timeout of grace before judging it, and so does one whose
// own connection to NATS was down: its silence is not theirs.

import { encodeMessage, type EventName, type EventObjectKind, type MessageType } from "@simdc/bus";
import { failedPrecondition, notFound, type Clock, type Logger } from "@simdc/common";
import { simdc } from "@simdc/proto";
import type { EventPublisher } from "../events.js";
import type { Lease } from "../lease/lease.js";
import type { FencedStore } from "../store/fenced-store.js";
import { SortedKeys } from "../store/sorted-keys.js";
import { Liveness, type LivenessPolicy } from "./liveness.js";

import v1 = simdc.v1;

/** How one kind of member stores its connection state and boot id. */
export interface MemberKind<T extends { id: string; bootId: string }> {
  /** KV bucket name. */
  bucket: string;
  eventKind: EventObjectKind;
  noun: string;
  type: MessageType<T>;
  isConnected(member: T): boolean;
  withConnected(member: T, connected: boolean): T;
  /** Who holds the id: another live holder may not take it over. */
  holderOf(member: T): string;
  registeredEvent: v1.EventKind;
  connectedEvent: v1.EventKind;
  disconnectedEvent: v1.EventKind;
}

export interface MemberTransition {
  id: string;
  connected: boolean;
  rebooted: boolean;
}

/** What a heartbeat told: a known incarnation of a member, or one to refuse. */
export type HeartbeatVerdict =
  | { kind: "ok"; transition: MemberTransition | null }
  | { kind: "unknown" }
  | { kind: "stale-boot"; registeredBootId: string };

export interface RegistryOptions {
  policy: LivenessPolicy;
  clock: Clock;
  events: EventPublisher;
  logger: Logger;
  lease: Lease;
}

export class MemberRegistry<T extends { id: string; bootId: string }> {
  private readonly liveness: Liveness;
  private readonly ids = new SortedKeys();
  /** False while this controller's own connection to NATS is down. */
  private listening = true;

  constructor(
    private readonly kind: MemberKind<T>,
    readonly records: FencedStore<T>,
    private readonly options: RegistryOptions,
  ) {
    this.liveness = new Liveness(options.policy, options.clock);
    for (const [id, entry] of records.all()) {
      this.ids.add(id);
      if (kind.isConnected(entry.value)) this.liveness.seen(id);
    }
    records.onChange((id, _before, after) => (after ? this.ids.add(id) : this.ids.delete(id)));
  }

  /** Up to `limit` member ids after `after`, in order. */
  idsAfter(after: string, limit: number): string[] {
    return this.ids.after(after, limit);
  }

  get timeoutMs(): number {
    return this.liveness.timeoutMs;
  }

  get size(): number {
    return this.records.size;
  }

  get(id: string): T | undefined {
    return this.records.get(id)?.value;
  }

  /** @throws SimdcError NOT_FOUND. */
  require(id: string): T {
    const member = this.get(id);
    if (!member) throw notFound(`${this.kind.noun} ${id} not found`);
    return member;
  }

  *all(): IterableIterator<T> {
    for (const [, entry] of this.records.all()) yield entry.value;
  }

  isConnected(id: string): boolean {
    const member = this.get(id);
    return member !== undefined && this.kind.isConnected(member);
  }

  /** True when `id` heartbeats within the timeout, whatever is stored. */
  isAlive(id: string): boolean {
    const last = this.liveness.lastSeen(id);
    return last !== undefined && this.options.clock.nowMs() - last <= this.liveness.timeoutMs;
  }

  lastHeartbeatMs(id: string): number {
    return this.liveness.lastSeen(id) ?? 0;
  }

  /**
   * Records a (re-)registration, stored before it returns. Only the active
   * controller registers.
   * @throws SimdcError FAILED_PRECONDITION when another live holder has the
   * id; CONFLICT when the record changed meanwhile; UNAVAILABLE.
   */
  async register(member: T): Promise<MemberTransition> {
    const entry = this.records.get(member.id);
    const previous = entry?.value;
    if (previous && this.kind.holderOf(previous) !== this.kind.holderOf(member) && this.isAlive(member.id) && this.kind.isConnected(previous)) {
      throw failedPrecondition(
        `${this.kind.noun} ${member.id} is held by ${this.kind.holderOf(previous)}, which is alive; ${this.kind.holderOf(member)} may take it once that one is gone`,
      );
    }
    const registered = this.kind.withConnected(member, true);
    // A repeated registration (a retry whose answer was late) changes nothing and costs no write.
    const same = previous !== undefined && bytesEqual(encodeMessage(this.kind.type, previous), encodeMessage(this.kind.type, registered));
    if (!same) await this.records.write(member.id, registered, entry?.revision);
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
   * Records a heartbeat of `id` from boot `bootId`. Only a registered
   * incarnation counts; the caller refuses the others. While active, a
   * member that was disconnected is stored connected again.
   */
  async heartbeat(id: string, bootId: string): Promise<HeartbeatVerdict> {
    if (!this.listening) return { kind: "ok", transition: null };
    const entry = this.records.get(id);
    if (!entry) return { kind: "unknown" };
    if (entry.value.bootId !== bootId) return { kind: "stale-boot", registeredBootId: entry.value.bootId };
    this.liveness.seen(id);
    if (this.kind.isConnected(entry.value) || !this.options.lease.isActive) return { kind: "ok", transition: null };
    await this.store(id, true);
    return { kind: "ok", transition: { id, connected: true, rebooted: false } };
  }

  /** Marks silent members disconnected (active only). @returns their transitions. */
  async sweep(): Promise<MemberTransition[]> {
    if (!this.listening || !this.options.lease.isActive) return [];
    const out: MemberTransition[] = [];
    for (const id of this.liveness.silent()) {
      if (!this.isConnected(id)) continue;
      if (await this.store(id, false)) out.push({ id, connected: false, rebooted: false });
    }
    return out;
  }

  /**
   * Follows this controller's own connection: while it is down no heartbeat
   * can arrive, so nobody is judged; once it is back, everyone gets a full
   * timeout of grace.
   */
  connectionChanged(connected: boolean): void {
    this.listening = connected;
    if (connected) this.liveness.forgiveAll();
  }

  /** Stores the connection state; false when the record changed meanwhile (the next beat or sweep retries). */
  private async store(id: string, connected: boolean): Promise<boolean> {
    const entry = this.records.get(id);
    if (!entry || this.kind.isConnected(entry.value) === connected) return false;
    try {
      await this.records.write(id, this.kind.withConnected(entry.value, connected), entry.revision);
    } catch (err) {
      this.options.logger.warn({ err: String(err), id }, `could not store the ${this.kind.noun}'s connection state`);
      return false;
    }
    this.announce(id, connected);
    return true;
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
    // A fault rule that dropped its heartbeats here is the cause, as far as this controller can tell.
    const rule = this.options.events.recentDropBy(id, silenceMs);
    const cause = rule ? ` (fault rule ${rule} dropped them)` : "";
    this.publish(id, "disconnected", this.kind.disconnectedEvent, `${this.kind.noun} ${id} sent no heartbeat for ${silenceMs} ms${cause}`, {
      code: v1.ErrorCode.ERROR_CODE_UNAVAILABLE,
      message: "heartbeats missed",
    }, rule ? `fault:${rule}` : "");
  }

  private publish(id: string, name: EventName, kind: v1.EventKind, message: string, status?: v1.Status.$Properties, cause = ""): void {
    this.options.events.publish(this.kind.eventKind, id, name, kind, message, status, cause);
  }
}

export const hostKind: MemberKind<v1.Host> = {
  bucket: "hosts",
  eventKind: "host",
  noun: "host",
  type: v1.Host,
  isConnected: (h) => h.state === v1.HostState.HOST_STATE_CONNECTED,
  withConnected: (h, connected) =>
    v1.Host.create({ ...h, state: connected ? v1.HostState.HOST_STATE_CONNECTED : v1.HostState.HOST_STATE_DISCONNECTED }),
  holderOf: (h) => `agent ${h.agentId}`,
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
  withConnected: (n, connected) => v1.SanNode.create({ ...n, connected }),
  holderOf: (n) => `node ${n.id}`,
  registeredEvent: v1.EventKind.EVENT_KIND_SAN_NODE_REGISTERED,
  connectedEvent: v1.EventKind.EVENT_KIND_SAN_NODE_CONNECTED,
  disconnectedEvent: v1.EventKind.EVENT_KIND_SAN_NODE_DISCONNECTED,
};

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
