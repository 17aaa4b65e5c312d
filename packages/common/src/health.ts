// An optional HTTP health endpoint for a process (GET /healthz), for container
// healthchecks and orchestrators that cannot speak NATS. The NATS-native
// health check is the services framework's $SRV.PING.

import { createServer, type Server } from "node:http";

export interface HealthReport {
  healthy: boolean;
  /** Anything worth showing: connection state, registered ids, counts. */
  details: Record<string, unknown>;
}

/** Prometheus text for GET /metrics, and its content type. */
export interface MetricsSource {
  text(): Promise<string>;
  contentType: string;
}

/** Serves GET /healthz on 0.0.0.0:`port` (200 when healthy, else 503, JSON body) and GET /metrics when given. */
export function serveHealth(port: number, report: () => HealthReport, metrics?: MetricsSource): Promise<Server> {
  const server = createServer((req, res) => {
    if (req.url === "/metrics" && metrics) {
      metrics.text().then(
        (body) => res.writeHead(200, { "content-type": metrics.contentType }).end(body),
        (err: unknown) => res.writeHead(500, { "content-type": "text/plain" }).end(String(err)),
      );
      return;
    }
    if (req.url !== "/healthz") {
      res.writeHead(404).end();
      return;
    }
    const { healthy, details } = report();
    res.writeHead(healthy ? 200 : 503, { "content-type": "application/json" });
    res.end(JSON.stringify({ status: healthy ? "ok" : "unhealthy", ...details }));
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "0.0.0.0", () => resolve(server));
  });
}
