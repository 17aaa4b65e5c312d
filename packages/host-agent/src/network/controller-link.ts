// A vswitch's connection to its controller, as Open vSwitch keeps it: an
// echo (probe) every inactivity-probe interval (5 s by default); no answer
// within another interval and the controller is lost. What happens then is
// the fail mode's: *secure* keeps every flow and installs nothing new until
// the controller is back; *standalone*, once the controller has been silent
// for 3 probe intervals, flushes the flows and forwards as a learning switch
// (normal) until it is back (ofproto/fail-open.c).

import type { Clock, Timer } from "@simdc/common";

export type FailMode = "secure" | "standalone";
export const failModes: readonly FailMode[] = ["secure", "standalone"];
/** OVS's default inactivity probe (vswitchd/bridge.c). */
export const inactivityProbeMsDefault = 5_000;
/** Probe intervals of silence before a standalone switch fails open. */
export const failOpenProbes = 3;

export interface ControllerLinkOptions {
  mode: FailMode;
  probeMs: number;
  clock: Clock;
  /** One echo: resolves true when the active controller answered within `timeoutMs`. */
  probe(timeoutMs: number): Promise<boolean>;
  /** The controller is lost (no answer for a probe interval after the last one). */
  onLost(): void;
  /** Standalone only: silent for 3 probe intervals. */
  onFailOpen(): void;
  /** The controller answers again. */
  onBack(): void;
}

export class ControllerLink {
  connected = true;
  failOpen = false;
  private lastAnsweredMs: number;
  private timer: Timer | null = null;
  private probing = false;

  constructor(private readonly options: ControllerLinkOptions) {
    this.lastAnsweredMs = options.clock.nowMs();
  }

  get mode(): FailMode {
    return this.options.mode;
  }

  get running(): boolean {
    return this.timer !== null;
  }

  start(): void {
    if (this.timer) return;
    this.lastAnsweredMs = this.options.clock.nowMs();
    this.timer = this.options.clock.every(this.options.probeMs, () => void this.tick());
  }

  stop(): void {
    this.timer?.cancel();
    this.timer = null;
  }

  private async tick(): Promise<void> {
    if (this.probing) return;
    this.probing = true;
    let answered = false;
    try {
      answered = await this.options.probe(this.options.probeMs);
    } finally {
      this.probing = false;
    }
    if (!this.timer) return;
    const now = this.options.clock.nowMs();
    if (answered) {
      this.lastAnsweredMs = now;
      if (!this.connected || this.failOpen) {
        this.connected = true;
        this.failOpen = false;
        this.options.onBack();
      }
      return;
    }
    const silentMs = now - this.lastAnsweredMs;
    if (this.connected && silentMs >= this.options.probeMs) {
      this.connected = false;
      this.options.onLost();
    }
    if (this.options.mode === "standalone" && !this.failOpen && silentMs >= failOpenProbes * this.options.probeMs) {
      this.failOpen = true;
      this.options.onFailOpen();
    }
  }
}
