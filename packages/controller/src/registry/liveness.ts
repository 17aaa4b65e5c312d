// Tracks which members (hosts, SAN nodes) are alive from the silence between
// their heartbeats. It only measures time; the registries decide what a
// connect or disconnect means. Driven by an injected clock so it can be
// tested without waiting.

import type { Clock } from "@simdc/common";

export interface LivenessPolicy {
  heartbeatIntervalMs: number;
  heartbeatMissesMax: number;
}

export class Liveness {
  private readonly lastSeenMs = new Map<string, number>();

  constructor(
    private readonly policy: LivenessPolicy,
    private readonly clock: Clock,
  ) {}

  /** Silence longer than this means the member is gone. */
  get timeoutMs(): number {
    return this.policy.heartbeatIntervalMs * this.policy.heartbeatMissesMax;
  }

  /** Records a sign of life now. */
  seen(id: string): void {
    this.lastSeenMs.set(id, this.clock.nowMs());
  }

  lastSeen(id: string): number | undefined {
    return this.lastSeenMs.get(id);
  }

  /** Counts everyone as seen now: a full timeout of grace (after the observer itself was deaf). */
  forgiveAll(): void {
    const now = this.clock.nowMs();
    for (const id of this.lastSeenMs.keys()) this.lastSeenMs.set(id, now);
  }

  /** Ids silent for longer than the timeout. */
  silent(): string[] {
    const cutoff = this.clock.nowMs() - this.timeoutMs;
    const out: string[] = [];
    for (const [id, at] of this.lastSeenMs) if (at < cutoff) out.push(id);
    return out;
  }
}
