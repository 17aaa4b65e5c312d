// The host-agent process: flags and env to settings, then one HostAgent with
// every configured simulated host, until SIGTERM. All process plumbing
// (logging, NATS, signals, /healthz, exit 2 on a bad flag) is runProcess's;
// the logic is HostAgent's.

import { runProcess } from "@simdc/bus";
import { HostAgent } from "./agent.js";
import { agentConfigOf, hostAgentSettings } from "./config.js";

await runProcess({
  service: "host-agent",
  settings: hostAgentSettings,
  // Checks the host list and agent id before anything starts.
  idOf: (settings) => agentConfigOf(settings).agentId,
  run: ({ bus, settings, logger, clock, rng }) => HostAgent.start({ bus, logger, clock, rng, config: agentConfigOf(settings) }),
});
