// Publishes the controller's events (v1.Event) on <prefix>.evt.<kind>.<id>.<name>.
// Events are notifications for watchers; state lives in KV, so a lost event
// loses nothing.

import type { Bus, Counter, EventName, EventObjectKind } from "@simdc/bus";
import { simdc } from "@simdc/proto";
import type { Clock } from "@simdc/common";

import v1 = simdc.v1;

export class EventPublisher {
  private readonly published: Counter<"kind">;

  constructor(
    private readonly bus: Bus,
    private readonly clock: Clock,
    private readonly source: string,
  ) {
    this.published = bus.metrics.counter("simdc_events_published_total", "Events this controller published, by kind (host-disconnected counts heartbeats missed past the limit)", ["kind"]);
  }

  /** The fault rule that dropped a message from `sender` at this controller lately, if any. */
  recentDropBy(sender: string, withinMs: number): string | undefined {
    return this.bus.recentDropBy(sender, withinMs);
  }

  publish(
    objectKind: EventObjectKind,
    objectId: string,
    name: EventName,
    kind: v1.EventKind,
    message: string,
    status?: v1.Status.$Properties,
    cause = "",
  ): void {
    this.published.inc({ kind: `${objectKind}-${name}` });
    this.bus.publish(this.bus.subjects.event(objectKind, objectId, name), v1.Event, {
      kind,
      objectId,
      timeMs: this.clock.nowMs(),
      message,
      status: status ?? null,
      source: this.source,
      cause,
    } as v1.Event);
  }
}
