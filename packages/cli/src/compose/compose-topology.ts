// The compose deployment for a topology: docker-compose.yml (its shared parts
// from deploy/compose-base.yml, one service per process), the Prometheus
// configuration that scrapes those services, and the NATS users each needs
// (deploy/.auth). The repository's own docker-compose.yml is this with the
// default topology, so a test keeps the two equal.

import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { authorizationConfig, newPassword, usersFor } from "../supervisor/credentials.js";
import { planTopology, type ProcessPlan } from "../supervisor/topology.js";

export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "..");

export interface ComposeTopology {
  hosts: number;
  hostsPerAgent: number;
  san: number;
  controllers: number;
}

/** What the repository's docker-compose.yml runs. */
export const defaultComposeTopology: ComposeTopology = { hosts: 3, hostsPerAgent: 1, san: 2, controllers: 2 };

/** The processes of the topology, named as `simdc up` names them. */
export function composePlans(t: ComposeTopology): ProcessPlan[] {
  return planTopology({ hosts: t.hosts, sanNodes: t.san, hostsPerAgent: t.hostsPerAgent, controllers: t.controllers, dataDir: "/data", pcpus: 16, memoryMib: 65_536, sanCapacityMib: 102_400 });
}

const natsServers = ["nats-1", "nats-2", "nats-3"];

function plural(n: number, one: string, many: string): string {
  return `${n} ${n === 1 ? one : many}`;
}

/** docker-compose.yml for the topology. */
export function composeFile(t: ComposeTopology): string {
  const plans = composePlans(t);
  const agents = plans.filter((p) => p.role === "host-agent");
  const controllers = plans.filter((p) => p.role === "controller");
  const sans = plans.filter((p) => p.role === "san-storage");
  const perAgent = t.hostsPerAgent === 1 ? "one simulated host each" : `up to ${t.hostsPerAgent} simulated hosts each`;
  const header = [
    `# simdc as containers: a 3-node NATS cluster with JetStream, ${plural(t.controllers, "controller", "controllers")}`,
    `# (${t.controllers === 1 ? "active alone" : "one active, the others standby"}), ${plural(t.san, "SAN node", "SAN nodes")} and ${plural(agents.length, "host agent", "host agents")} (${perAgent},`,
    `# ${plural(t.hosts, "host", "hosts")} in all). One process per container, so a fault (kill, pause,`,
    "# an iptables partition) hits one process. Every service connects as its own",
    "# NATS user with subject permissions (deploy/.auth). This file, deploy/prometheus.yml",
    "# and deploy/.auth are written by `simdc compose` for a topology (this one:",
    `# simdc compose --hosts ${t.hosts} --hosts-per-agent ${t.hostsPerAgent} --san ${t.san} --controllers ${t.controllers}), which`,
    "# `bash scripts/setup.sh --docker` runs with the defaults. Build the images first:",
    "# `bash scripts/setup.sh --docker` (or, after `npm run build`, `bash deploy/build-images.sh`).",
    "# Then `docker-compose up -d`. Valid for docker-compose v1 (1.29) and `docker compose` v2.",
    "#",
  ].join("\n");
  const services: string[] = [];
  for (const [i, name] of natsServers.entries()) {
    const routes = natsServers.filter((n) => n !== name).map((n) => `nats://${n}:6222`).join(",");
    services.push(`  ${name}:
    <<: *nats
    command: ["--server_name=${name}", "--routes=${routes}"]
    ports:
      - "127.0.0.1:${i === 0 ? "${SIMDC_NATS_PORT:-4222}" : ""}:4222"
      - "127.0.0.1::8222"
    volumes:
      - ${name}-data:/data
      - ./deploy/.auth/nats.conf:/auth/nats.conf:ro
`);
  }
  for (const [i, c] of controllers.entries()) {
    const standby = i === 0 ? "" : `  # A standby: it follows the stored state and takes over when the active
  # controller's lease goes unrenewed.
`;
    services.push(`${standby}  ${c.name}:
    <<: *simdc
    command: ["node", "packages/controller/dist/main.js"]
    env_file: deploy/.auth/${c.name}.env
    environment:
      <<: *simdc-env
      SIMDC_CONTROLLER_ID: ${c.name}${i === 0 ? "\n      # Desired state survives the loss of any one NATS server." : ""}
      SIMDC_KV_REPLICAS: "3"
`);
  }
  for (const s of sans) {
    services.push(`  ${s.name}:
    <<: *simdc
    command: ["node", "packages/san-storage/dist/main.js"]
    env_file: deploy/.auth/${s.name}.env
    environment:
      <<: *simdc-env
      SIMDC_SAN_NODE_ID: ${s.name}
      SIMDC_DATA_DIR: /data/san
    volumes:
      - ${s.name}-data:/data/san
`);
  }
  for (const a of agents) {
    services.push(`  ${a.name}:
    <<: *simdc
    command: ["node", "packages/host-agent/dist/main.js"]
    env_file: deploy/.auth/${a.name}.env
    environment:
      <<: *simdc-env
      SIMDC_AGENT_ID: ${a.name}
      SIMDC_HOSTS: ${a.hostIds.join(",")}
`);
  }
  services.push(`  # Scrapes every service's /metrics with deploy/prometheus.yml. Off by
  # default: it needs an image from a registry (\`docker-compose --profile
  # monitoring up -d\`; PROMETHEUS_IMAGE to choose).
  prometheus:
    image: \${PROMETHEUS_IMAGE:-prom/prometheus:v2.53.0}
    profiles: ["monitoring"]
    logging: *logging
    ports:
      - "127.0.0.1:\${SIMDC_PROMETHEUS_PORT:-9090}:9090"
    volumes:
      - ./deploy/prometheus.yml:/etc/prometheus/prometheus.yml:ro
`);
  const volumes = [...natsServers, ...sans.map((s) => s.name)].map((v) => `  ${v}-data:`).join("\n");
  const base = readFileSync(join(repoRoot, "deploy", "compose-base.yml"), "utf8");
  return `${header}\n${base.trimEnd()}\n\nservices:\n${services.join("\n")}\nvolumes:\n${volumes}\n`;
}

/** deploy/prometheus.yml for the topology: every simdc service's /metrics. */
export function prometheusFile(t: ComposeTopology): string {
  const plans = composePlans(t);
  const group = (role: string): string => {
    const targets = plans.filter((p) => p.role === role).map((p) => `"${p.name}:8080"`);
    return `      - targets: [${targets.join(", ")}]\n        labels: { role: ${role} }`;
  };
  return `# Prometheus scraping every simdc service of docker-compose.yml (the
# "monitoring" profile runs it), written with it by \`simdc compose\`: each
# process's /metrics has RPC latency and errors per endpoint, heartbeats, the
# compile queue, what fault rules did and the process itself. NATS's own
# monitoring port (8222) speaks JSON, not the Prometheus format; it needs a
# NATS exporter, which is not shipped.
global:
  scrape_interval: 5s
  evaluation_interval: 5s

scrape_configs:
  - job_name: simdc
    metrics_path: /metrics
    static_configs:
${["controller", "san-storage", "host-agent"].filter((r) => plans.some((p) => p.role === r)).map(group).join("\n")}
`;
}

/**
 * The NATS users of the topology in `<dir>/deploy/.auth`: nats.conf (mounted
 * into the NATS servers), an env file per service and <user>.json for the
 * CLI. Passwords are kept unless `force`; the permissions are written anew,
 * so they follow the code.
 * @returns how many users it wrote.
 */
export function writeComposeCredentials(dir: string, t: ComposeTopology, prefix: string, force = false): number {
  const authDir = join(dir, "deploy", ".auth");
  mkdirSync(join(authDir, "auth"), { recursive: true, mode: 0o700 });
  const password = (user: string): string => {
    const file = join(authDir, "auth", `${user}.json`);
    if (force || !existsSync(file)) return newPassword();
    return (JSON.parse(readFileSync(file, "utf8")) as { password: string }).password;
  };
  const users = usersFor(prefix, composePlans(t), password);
  writeFileSync(join(authDir, "nats.conf"), authorizationConfig(users), { mode: 0o600 });
  for (const u of users) {
    writeFileSync(join(authDir, `${u.user}.env`), `SIMDC_NATS_USER=${u.user}\nSIMDC_NATS_PASSWORD=${u.password}\n`, { mode: 0o600 });
    writeFileSync(join(authDir, "auth", `${u.user}.json`), `${JSON.stringify({ user: u.user, password: u.password })}\n`, { mode: 0o600 });
  }
  return users.length;
}

/** Writes the whole deployment for the topology into `dir` (docker-compose.yml, deploy/prometheus.yml, deploy/.auth). */
export function writeComposeDeployment(dir: string, t: ComposeTopology, prefix: string, force = false): number {
  mkdirSync(join(dir, "deploy"), { recursive: true });
  writeFileSync(join(dir, "docker-compose.yml"), composeFile(t));
  writeFileSync(join(dir, "deploy", "prometheus.yml"), prometheusFile(t));
  return writeComposeCredentials(dir, t, prefix, force);
}
