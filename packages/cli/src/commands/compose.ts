// simdc compose: the compose deployment for a topology (docker-compose.yml,
// deploy/prometheus.yml and the NATS users in deploy/.auth) written into a
// directory, ready for `docker-compose up -d` there.

import { resolve } from "node:path";
import { intFlag, parse, positionals, stringFlag } from "../args.js";
import { writeComposeDeployment } from "../compose/compose-topology.js";
import type { GlobalOptions } from "../context.js";
import { out } from "../output.js";
import { hostsMax, hostsPerAgentMax } from "../supervisor/topology.js";

export async function composeCommand(global: GlobalOptions, argv: string[]): Promise<void> {
  const parsed = parse(argv, {
    hosts: { type: "string" },
    "hosts-per-agent": { type: "string" },
    san: { type: "string" },
    controllers: { type: "string" },
    dir: { type: "string" },
    force: { type: "boolean" },
  });
  positionals(parsed, []);
  const f = parsed.flags;
  const topology = {
    hosts: intFlag(f, "hosts", 3, 1, hostsMax),
    hostsPerAgent: intFlag(f, "hosts-per-agent", 1, 1, hostsPerAgentMax),
    san: intFlag(f, "san", 2, 0, 64),
    controllers: intFlag(f, "controllers", 2, 1, 3),
  };
  const dir = resolve(stringFlag(f, "dir") ?? ".");
  const users = writeComposeDeployment(dir, topology, global.prefix ?? "simdc", f["force"] === true);
  out(`wrote ${dir}/docker-compose.yml, ${dir}/deploy/prometheus.yml and ${users} NATS users in ${dir}/deploy/.auth; start it there with docker-compose up -d\n`);
}
