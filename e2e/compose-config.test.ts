// Checks the shipped deployment files without starting containers: they are
// what `simdc compose` writes for the default topology; every simdc service
// publishes its health and metrics port and is a scrape target of
// deploy/prometheus.yml, and nothing else is; another topology gives the
// services, hosts and users it asks for, in a file docker-compose accepts.

import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { composeFile, defaultComposeTopology, prometheusFile, writeComposeDeployment } from "@simdc/cli";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");

describe("deployment files", () => {
  it("deployment: Prometheus scrapes exactly the simdc services of the compose file, each publishing port 8080", () => {
    const compose = parse(readFileSync(join(root, "docker-compose.yml"), "utf8"), { merge: true }) as { services: Record<string, { image?: string; ports?: string[] }> };
    const simdcServices = Object.entries(compose.services)
      .filter(([, s]) => (s.image ?? "").includes("SIMDC_IMAGE"))
      .map(([name, s]) => {
        expect(s.ports, name).toContain("127.0.0.1::8080");
        return name;
      })
      .sort();
    expect(simdcServices.length).toBeGreaterThanOrEqual(5);
    const prometheus = parse(readFileSync(join(root, "deploy", "prometheus.yml"), "utf8")) as { scrape_configs: { static_configs: { targets: string[] }[] }[] };
    const targets = prometheus.scrape_configs.flatMap((c) => c.static_configs.flatMap((s) => s.targets)).sort();
    expect(targets).toEqual(simdcServices.map((s) => `${s}:8080`));
  });
});

describe("simdc compose", () => {
  it("compose: the repository's docker-compose.yml and deploy/prometheus.yml are what simdc compose writes for the default topology", () => {
    expect(readFileSync(join(root, "docker-compose.yml"), "utf8")).toBe(composeFile(defaultComposeTopology));
    expect(readFileSync(join(root, "deploy", "prometheus.yml"), "utf8")).toBe(prometheusFile(defaultComposeTopology));
  });

  it("compose: another topology gets its agents, hosts, SAN nodes, controllers and NATS users, in a file docker-compose accepts", () => {
    const dir = mkdtempSync(join(tmpdir(), "simdc-compose-"));
    try {
      const users = writeComposeDeployment(dir, { hosts: 10, hostsPerAgent: 4, san: 1, controllers: 1 }, "simdc");
      // 3 agents, 1 SAN node, 1 controller, and operator, observer and supervisor.
      expect(users).toBe(8);
      const compose = parse(readFileSync(join(dir, "docker-compose.yml"), "utf8"), { merge: true }) as { services: Record<string, { environment?: Record<string, string> }> };
      const hosts = Object.fromEntries(Object.entries(compose.services).filter(([n]) => n.startsWith("agent-")).map(([n, s]) => [n, s.environment?.["SIMDC_HOSTS"]]));
      expect(hosts).toEqual({ "agent-1": "host-1,host-2,host-3,host-4", "agent-2": "host-5,host-6,host-7,host-8", "agent-3": "host-9,host-10" });
      expect(Object.keys(compose.services).sort()).toEqual(["agent-1", "agent-2", "agent-3", "controller-1", "nats-1", "nats-2", "nats-3", "prometheus", "san-1"]);
      expect(readFileSync(join(dir, "deploy", ".auth", "agent-3.env"), "utf8")).toMatch(/^SIMDC_NATS_USER=agent-3\nSIMDC_NATS_PASSWORD=[0-9a-f]{32}\n$/);
      execFileSync("docker-compose", ["-f", join(dir, "docker-compose.yml"), "config", "-q"], { stdio: "pipe" });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
