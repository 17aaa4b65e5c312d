// Prometheus metrics of one process (prom-client): what the bus measures for
// every process (RPC latency and errors per endpoint, what fault rules did,
// failed publishes, the connection) and what each role adds (heartbeats,
// queue depths, block I/O). Served as text on GET /metrics beside /healthz.

import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";

/** Latency buckets for RPCs, in seconds: 0.5 ms to 10 s. */
const rpcBuckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export class Metrics {
  readonly registry = new Registry();
  /** Requests this process served, by proto method and outcome (OK or the error code). */
  readonly rpcSeconds: Histogram<"rpc" | "code">;
  /** Messages a fault rule dropped, delayed or duplicated here. */
  readonly faultMessages: Counter<"rule" | "action">;
  readonly publishFailures: Counter;

  constructor(service: string, id: string) {
    this.registry.setDefaultLabels({ service, id });
    collectDefaultMetrics({ register: this.registry, prefix: "simdc_" });
    this.rpcSeconds = new Histogram({
      name: "simdc_rpc_duration_seconds",
      help: "Requests served, from arrival to the reply handed to NATS, by method and outcome",
      labelNames: ["rpc", "code"],
      buckets: rpcBuckets,
      registers: [this.registry],
    });
    this.faultMessages = new Counter({
      name: "simdc_fault_rule_messages_total",
      help: "Messages a bus fault rule acted on in this process, by rule and what it did (dropped, delayed, duplicated)",
      labelNames: ["rule", "action"],
      registers: [this.registry],
    });
    this.publishFailures = new Counter({ name: "simdc_publish_failures_total", help: "Publishes that failed (too large, connection closed)", registers: [this.registry] });
  }

  /** A counter; a role started again on the same bus counts on in the one it registered before. */
  counter<L extends string = never>(name: string, help: string, labelNames: L[] = []): Counter<L> {
    const existing = this.registry.getSingleMetric(name);
    if (existing instanceof Counter) return existing as Counter<L>;
    return new Counter({ name, help, labelNames, registers: [this.registry] });
  }

  /** A gauge read when scraped: `collect` gives its value (a role started again replaces its gauges). */
  gauge(name: string, help: string, collect: () => number): Gauge {
    this.registry.removeSingleMetric(name);
    return new Gauge({ name, help, registers: [this.registry], collect() { this.set(collect()); } });
  }

  /** A gauge read when scraped, with a value per label set. */
  gaugeBy<L extends string>(name: string, help: string, labelNames: L[], collect: () => [Partial<Record<L, string>>, number][]): Gauge<L> {
    this.registry.removeSingleMetric(name);
    return new Gauge({
      name,
      help,
      labelNames,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const [labels, value] of collect()) this.set(labels, value);
      },
    });
  }

  /** The Prometheus text exposition. */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
