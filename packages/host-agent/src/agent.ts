// A host-agent process's role: it starts one SimHost per configured host id,
// spreads their heartbeats over the interval, and stops them all. It holds no
// VM or registration logic of its own; each host owns its identity and state.

import type { Bus, RunningRole } from "@simdc/bus";
import { systemClock, type Clock, type HealthReport, type Logger } from "@simdc/common";
import type { AgentConfig } from "./config.js";
import { SimHost } from "./host.js";

export interface HostAgentOptions {
  bus: Bus;
  logger: Logger;
  config: AgentConfig;
  /** VMs each host may hold; defaults to vmsPerHostMax. */
  vmsPerHostMax?: number;
  clock?: Clock;
  /** Jitter source in [0, 1); Math.random by default. */
  random?: () => number;
}

export class HostAgent implements RunningRole {
  private constructor(
    private readonly config: AgentConfig,
    private readonly hosts: Map<string, SimHost>,
  ) {}

  /**
   * Starts every host: each serves its endpoints before this resolves, and
   * registers and heartbeats on its own from then on.
   * @throws whatever serving an endpoint throws (a NATS failure); hosts already
   * started are stopped first.
   */
  static async start(options: HostAgentOptions): Promise<HostAgent> {
    const { config } = options;
    const epochMs = (options.clock ?? systemClock).nowMs();
    const hosts = new Map<string, SimHost>();
    config.hostIds.forEach((hostId, index) => {
      hosts.set(
        hostId,
        new SimHost({
          bus: options.bus,
          logger: options.logger,
          agentId: config.agentId,
          hostId,
          capacity: config.capacity,
          timing: config.timing,
          heartbeatIntervalMs: config.heartbeatIntervalMs,
          // Evenly spread phases: with 50 hosts, one beat every interval/50.
          heartbeatPhase: index / config.hostIds.length,
          heartbeatEpochMs: epochMs,
          ...(options.vmsPerHostMax !== undefined ? { vmsMax: options.vmsPerHostMax } : {}),
          ...(options.clock ? { clock: options.clock } : {}),
          ...(options.random ? { random: options.random } : {}),
        }),
      );
    });
    const agent = new HostAgent(config, hosts);
    try {
      for (const host of hosts.values()) await host.start();
      // The server must have the subscriptions before callers are told the hosts serve.
      await options.bus.flush();
    } catch (err) {
      await agent.stop();
      throw err;
    }
    options.logger.info({ hosts: hosts.size }, "hosts started");
    return agent;
  }

  /** The host with this id, for tests and diagnostics. */
  host(hostId: string): SimHost | undefined {
    return this.hosts.get(hostId);
  }

  /** Stops every host (timers, VM drivers, endpoints); the bus stays open. */
  async stop(): Promise<void> {
    await Promise.all([...this.hosts.values()].map((host) => host.stop()));
  }

  /** Healthy while running; details count registered hosts and VMs. */
  health(): HealthReport {
    let registered = 0;
    let vms = 0;
    for (const host of this.hosts.values()) {
      if (host.isRegistered()) registered += 1;
      vms += host.vmCount();
    }
    return {
      healthy: true,
      details: { agentId: this.config.agentId, hosts: this.hosts.size, hostsRegistered: registered, vms },
    };
  }
}
