// Checks the shipped deployment files against each other without Docker:
// every simdc service of docker-compose.yml publishes its health and metrics
// port and is a scrape target of deploy/prometheus.yml, and nothing else is.

import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";

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
