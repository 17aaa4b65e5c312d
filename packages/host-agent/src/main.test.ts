// Proves the host-agent process (node packages/host-agent/dist/main.js; build
// first) against a real nats-server, a stand-in controller served on the bus
// and documents written into KV as the controller writes them: one process
// runs many hosts, each with its own registration, its own heartbeats spread
// over the interval and its own document; registration retries until a
// controller appears, documents are followed once their bucket appears, and
// hosts beat once registered; SIGTERM exits 0; a bad flag exits 2 with one
// line on stderr.

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { existsSync } from "node:fs";
import { connect, type NatsConnection } from "nats";
import { simdc } from "@simdc/proto";
import { endpoint, hostAgentService, hostScope, hostService, type Bus } from "@simdc/bus";
import {
  connectTestBus,
  eventually,
  freePort,
  serviceScript,
  startService,
  startTestNats,
  type TestNats,
  type TestService,
} from "@simdc/testkit";

import v1 = simdc.v1;

const mainJs = serviceScript("host-agent");

let nats: TestNats;
let raw: NatsConnection;
const buses: Bus[] = [];

beforeAll(async () => {
  if (!existsSync(mainJs)) throw new Error(`${mainJs} is missing: build first (npx tsc -b)`);
  nats = await startTestNats();
  raw = await connect({ servers: nats.url });
});

afterAll(async () => {
  for (const bus of buses) await bus.close();
  await raw?.close();
  await nats?.dispose();
});

/** Starts the agent as a real process; its settings come only from `args`. */
const startAgent = (args: string[]): TestService => startService("host-agent", args);

async function stopAgent(agent: TestService): Promise<number | NodeJS.Signals> {
  agent.signal("SIGTERM");
  return agent.exited;
}

async function busFor(prefix: string): Promise<Bus> {
  const bus = await connectTestBus(nats.url, { prefix });
  buses.push(bus);
  return bus;
}

/** A stand-in controller that records registrations (with the id of their subject) and answers with `intervalMs`. */
async function standInController(prefix: string, intervalMs: number): Promise<{ subjectId: string; request: v1.RegisterHostRequest }[]> {
  const registrations: { subjectId: string; request: v1.RegisterHostRequest }[] = [];
  const bus = await busFor(prefix);
  await bus.serve({ role: "controller", description: "stand-in controller" }, [
    endpoint(hostService.RegisterHost, (request, msg) => {
      registrations.push({ subjectId: msg.subject.split(".").at(-1)!, request });
      return { host: { id: request.hostId, agentId: request.agentId }, heartbeatIntervalMs: intervalMs, heartbeatMissesMax: 3 };
    }),
  ]);
  await bus.flush();
  return registrations;
}

/** Writes each host's document with one VM that is OFF (so no SAN node is needed), as the controller does. */
async function writeDocuments(prefix: string, agentId: string, hostIds: string[]): Promise<void> {
  const bus = await busFor(prefix);
  const docs = await bus.bucket("docs", v1.HostDocument, { fenced: { epochOf: () => 1 } });
  for (const hostId of hostIds) {
    await docs.put(`${agentId}.${hostId}.0`, {
      hostId,
      generation: 7,
      epoch: 1,
      stateId: "state-p",
      chunkIndex: 0,
      chunkCount: 1,
      vms: [
        {
          vmId: `vm-of-${hostId}`,
          incarnation: "i1",
          spec: { vcpus: 1, memoryMib: 512, bootVolume: "vol-boot" },
          powerState: v1.PowerState.POWER_STATE_OFF,
          generation: 1,
          bootVolume: { volumeId: "vol-boot", sanNodeId: "san-1" },
        },
      ],
    });
  }
}

/** Records every heartbeat under `prefix`, with when it arrived. */
async function watchHeartbeats(prefix: string): Promise<{ hostId: string; atMs: number; beat: v1.HostHeartbeat }[]> {
  const seen: { hostId: string; atMs: number; beat: v1.HostHeartbeat }[] = [];
  raw.subscribe(`${prefix}.evt.host.*.heartbeat`, {
    callback: (_err, msg) => {
      const beat = v1.HostHeartbeat.decode(msg.data);
      seen.push({ hostId: beat.hostId, atMs: Date.now(), beat });
    },
  });
  // An agent sends its hosts' beats in batches, one a slot.
  raw.subscribe(`${prefix}.evt.agent.*.heartbeats`, {
    callback: (_err, msg) => {
      for (const beat of v1.HostHeartbeats.decode(msg.data).beats as v1.HostHeartbeat[]) seen.push({ hostId: beat.hostId, atMs: Date.now(), beat });
    },
  });
  await raw.flush();
  return seen;
}

async function health(port: number): Promise<Record<string, unknown>> {
  return (await (await fetch(`http://127.0.0.1:${port}/healthz`)).json()) as Record<string, unknown>;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe("process", () => {
  it("process: one agent with 20 hosts registers each once, beats per host per interval spread over the interval, and each host realizes its own document", async () => {
    // One process, twenty machines: each registers under its own subject
    // once, beats at the controller's interval in a slot of its own, answers
    // on its own subject and runs only the VMs of its own document; after
    // SIGTERM none of them says anything more.
    const prefix = "many";
    const agentId = "agent-many";
    const intervalMs = 250;
    const hostIds = Array.from({ length: 20 }, (_, i) => `host-${i + 1}`);
    const registrations = await standInController(prefix, intervalMs);
    await writeDocuments(prefix, agentId, hostIds);
    const beats = await watchHeartbeats(prefix);
    const agent = startAgent(["--nats-url", nats.url, "--prefix", prefix, "--agent-id", agentId, "--hosts", hostIds.join(",")]);
    try {
      await eventually("20 registrations", () => (registrations.length >= 20 ? true : undefined), 20_000);
      expect(registrations.map((r) => r.subjectId).sort()).toEqual([...hostIds].sort());
      expect(new Set(registrations.map((r) => r.request.bootId)).size).toBe(20);
      for (const { subjectId, request } of registrations) {
        expect(request.hostId).toBe(subjectId);
        expect(request.agentId).toBe(agentId);
        expect(request.capacity).toMatchObject({ pcpus: 16, memoryMib: 65_536, nics: 2 });
      }

      // Count over a window of 12 intervals, once every host runs at the interval from the reply.
      await sleep(2 * intervalMs);
      const windowStartMs = Date.now();
      const windowMs = 12 * intervalMs;
      await sleep(windowMs + 200);
      const inWindow = beats.filter((b) => b.atMs >= windowStartMs && b.atMs < windowStartMs + windowMs);
      for (const hostId of hostIds) {
        const mine = inWindow.filter((b) => b.hostId === hostId);
        expect(mine.length, hostId).toBeGreaterThanOrEqual(10);
        expect(mine.length, hostId).toBeLessThanOrEqual(13);
        const bootId = registrations.find((r) => r.subjectId === hostId)?.request.bootId;
        expect(mine.every((b) => b.beat.agentId === agentId && b.beat.bootId === bootId)).toBe(true);
        expect(mine.every((b) => b.beat.realizedGeneration === 7 && b.beat.vmCount === 1)).toBe(true);
      }
      // Spread: where in the interval each host's beats land; hosts that beat
      // together would fill one or two of ten slots.
      const slots = new Set(
        hostIds.map((hostId) => {
          const first = inWindow.find((b) => b.hostId === hostId)!;
          return Math.floor((first.atMs % intervalMs) / (intervalMs / 10));
        }),
      );
      expect(slots.size).toBeGreaterThanOrEqual(6);

      // Each host answers on its own subject with its own document's VM.
      const client = await busFor(prefix);
      for (const hostId of hostIds) {
        const state = await eventually(`${hostId}'s VM stopped`, async () => {
          const reply = await client.call(hostAgentService.GetHostState, {}, { scopeId: hostScope(agentId, hostId) });
          return reply.vms.every((r) => r.status?.state === v1.VmState.VM_STATE_STOPPED) ? reply : undefined;
        });
        expect(state.hostId).toBe(hostId);
        expect(state.realizedGeneration).toBe(7);
        expect(state.vms.map((r) => `${r.status?.vmId}@${r.status?.hostId}`)).toEqual([`vm-of-${hostId}@${hostId}`]);
      }
      // Registration happens once per host, not once per heartbeat or request.
      expect(registrations).toHaveLength(20);
    } finally {
      expect(await stopAgent(agent)).toBe(0);
    }
    // Nothing can announce an absence: wait a few intervals and count.
    const countAtExit = beats.length;
    await sleep(3 * intervalMs);
    expect(beats.length).toBe(countAtExit);
  });

  it("process: registration retries until a controller appears, while the hosts follow their documents once the bucket exists, and beat once registered", async () => {
    // The agent does not wait for the controller: its hosts follow their
    // documents as soon as the controller has created the bucket, and each
    // registers once a controller answers. Until then they do not beat (a
    // controller would refuse beats from hosts it does not know); the first
    // beat after registration reports what they realized meanwhile.
    const prefix = "late";
    const agentId = "agent-late";
    const hostIds = ["host-r1", "host-r2", "host-r3"];
    const beats = await watchHeartbeats(prefix);
    const healthPort = await freePort();
    const agent = startAgent([
      "--nats-url", nats.url, "--prefix", prefix, "--agent-id", agentId, "--hosts", hostIds.join(","),
      "--heartbeat-interval-ms", "200", "--health-port", String(healthPort),
    ]);
    try {
      await eventually("the agent serving its health", () => health(healthPort).catch(() => undefined), 20_000);
      // Long enough for several failed attempts at the backoff's start, and a retry of the document watch.
      await sleep(1_500);
      expect(await health(healthPort)).toMatchObject({ status: "ok", hosts: 3, hostsRegistered: 0, vms: 0 });

      await writeDocuments(prefix, agentId, hostIds);
      await eventually("every document realized", async () => ((await health(healthPort))["vms"] === 3 ? true : undefined));
      expect(await health(healthPort)).toMatchObject({ hostsRegistered: 0, vms: 3 });
      expect(beats).toEqual([]);

      const registrations = await standInController(prefix, 300);
      await eventually("every host registered", () => (registrations.length >= 3 ? true : undefined), 15_000);
      expect(registrations.map((r) => r.subjectId).sort()).toEqual(hostIds);
      await eventually("health says all registered", async () => ((await health(healthPort))["hostsRegistered"] === 3 ? true : undefined));
      await eventually("every host beating what it realized", () =>
        hostIds.every((h) => beats.some((b) => b.hostId === h && b.beat.realizedGeneration === 7)) ? true : undefined,
      );
      expect(await health(healthPort)).toMatchObject({ status: "ok", hosts: 3, hostsRegistered: 3, vms: 3 });
      // Prometheus metrics beside the health: the agent's own, and the bus's for every RPC it served.
      const metrics = await (await fetch(`http://127.0.0.1:${healthPort}/metrics`)).text();
      const value = (name: string): number => Number(new RegExp(`^${name}\\{[^}]*\\} (\\S+)$`, "m").exec(metrics)?.[1]);
      expect(value("simdc_hosts_registered")).toBe(3);
      expect(value("simdc_vms")).toBe(3);
      expect(value("simdc_heartbeats_sent_total")).toBeGreaterThanOrEqual(3);
      expect(value("simdc_nats_connected")).toBe(1);
      expect(metrics).toContain('service="host-agent",id="agent-late"');
      expect(metrics).toMatch(/^# TYPE simdc_rpc_duration_seconds histogram$/m);
      expect(metrics).toMatch(/^simdc_process_resident_memory_bytes\{[^}]*\} \d+/m);
    } finally {
      expect(await stopAgent(agent)).toBe(0);
    }
    expect(agent.stderr()).toBe("");
  });

  const badFlags: { name: string; args: string[] }[] = [
    { name: "an unknown flag", args: ["--agent-id", "a1", "--hosts", "host-1", "--bogus", "1"] },
    { name: "no agent id", args: ["--hosts", "host-1"] },
    { name: "no hosts", args: ["--agent-id", "a1"] },
    { name: "a host id with a dot", args: ["--agent-id", "a1", "--hosts", "host.1"] },
    { name: "a host id that is a wildcard", args: ["--agent-id", "a1", "--hosts", "host-1,>"] },
    { name: "an empty host id", args: ["--agent-id", "a1", "--hosts", "host-1,,host-2"] },
    { name: "a repeated host id", args: ["--agent-id", "a1", "--hosts", "host-1,host-1"] },
    { name: "more hosts than one agent runs", args: ["--agent-id", "a1", "--hosts", Array.from({ length: 1_001 }, (_, i) => `h-${i}`).join(",")] },
    { name: "a bad agent id", args: ["--agent-id", "Agent_1", "--hosts", "host-1"] },
    { name: "pcpus not a number", args: ["--agent-id", "a1", "--hosts", "host-1", "--pcpus", "many"] },
    { name: "pcpus 0", args: ["--agent-id", "a1", "--hosts", "host-1", "--pcpus", "0"] },
    { name: "boot blocks over the limit", args: ["--agent-id", "a1", "--hosts", "host-1", "--boot-blocks", "100000"] },
    { name: "a heartbeat interval under the minimum", args: ["--agent-id", "a1", "--hosts", "host-1", "--heartbeat-interval-ms", "10"] },
  ];

  it("process: a bad flag exits 2 with one line on stderr", async () => {
    // A bad setting ends the process before it touches NATS, saying why in one line.
    for (const c of badFlags) {
      const agent = startAgent(["--nats-url", nats.url, ...c.args]);
      expect(await agent.exited, c.name).toBe(2);
      const lines = agent.stderr().split("\n").filter((l) => l !== "");
      expect(lines, c.name).toHaveLength(1);
      expect(lines[0], c.name).toMatch(/^host-agent: /);
      expect(agent.stdout(), c.name).toBe("");
    }
  });
});
