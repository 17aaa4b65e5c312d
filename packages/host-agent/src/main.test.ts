// Proves the host-agent process (node packages/host-agent/dist/main.js; build
// first) against a real nats-server and a stand-in controller served on the
// bus: one process runs many hosts, each with its own registration, its own
// staggered heartbeats and its own ApplyVm subject; registration retries until
// the controller appears while the hosts already serve and heartbeat; SIGTERM
// exits 0; a bad flag exits 2 with one line on stderr.

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { existsSync } from "node:fs";
import { connect, type NatsConnection } from "nats";
import { simdc } from "@simdc/proto";
import { endpoint, hostAgentService, hostService, type Bus } from "@simdc/bus";
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
  if (!existsSync(mainJs)) throw new Error(`${mainJs} is missing: build first (npx tsc -b packages/host-agent)`);
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

/** A stand-in controller that records registrations and answers with `intervalMs`. */
async function standInController(prefix: string, intervalMs: number): Promise<v1.RegisterHostRequest[]> {
  const registrations: v1.RegisterHostRequest[] = [];
  const bus = await connectTestBus(nats.url, { prefix });
  buses.push(bus);
  await bus.serve({ role: "controller", description: "stand-in controller" }, [
    endpoint(hostService.RegisterHost, (req) => {
      registrations.push(req);
      return { host: { id: req.hostId, agentId: req.agentId }, heartbeatIntervalMs: intervalMs, heartbeatMissesMax: 3 };
    }),
  ]);
  await bus.flush();
  return registrations;
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
  await raw.flush();
  return seen;
}


const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe("process", () => {
  it("process: one agent with 20 hosts registers each once, heartbeats per host per interval, staggered, and serves each host", async () => {
    const prefix = "many";
    const intervalMs = 250;
    const hostIds = Array.from({ length: 20 }, (_, i) => `host-${i + 1}`);
    const registrations = await standInController(prefix, intervalMs);
    const beats = await watchHeartbeats(prefix);
    const agent = startAgent(["--nats-url", nats.url, "--prefix", prefix, "--agent-id", "agent-many", "--hosts", hostIds.join(",")]);
    try {
      await eventually("20 registrations", () => (registrations.length >= 20 ? true : undefined), 20_000);
      await sleep(1_000);
      expect(registrations.map((r) => r.hostId).sort()).toEqual([...hostIds].sort());
      expect(new Set(registrations.map((r) => r.bootId)).size).toBe(20);
      for (const r of registrations) {
        expect(r.agentId).toBe("agent-many");
        expect(r.capacity).toMatchObject({ pcpus: 16, memoryMib: 65_536, nics: 2 });
      }

      // Count over a window of 12 intervals, once every host runs at the interval from the reply.
      const windowStartMs = Date.now();
      const windowMs = 12 * intervalMs;
      await sleep(windowMs + 200);
      const inWindow = beats.filter((b) => b.atMs >= windowStartMs && b.atMs < windowStartMs + windowMs);
      for (const hostId of hostIds) {
        const mine = inWindow.filter((b) => b.hostId === hostId);
        expect(mine.length, hostId).toBeGreaterThanOrEqual(10);
        expect(mine.length, hostId).toBeLessThanOrEqual(13);
        expect(mine.every((b) => b.beat.agentId === "agent-many")).toBe(true);
        const bootId = registrations.find((r) => r.hostId === hostId)?.bootId;
        expect(mine.every((b) => b.beat.bootId === bootId)).toBe(true);
      }
      // Staggered: where in the interval each host's beats land spreads over
      // it; hosts that beat together would fill one or two of ten slots.
      const slots = new Set(
        hostIds.map((hostId) => {
          const first = inWindow.find((b) => b.hostId === hostId)!;
          return Math.floor((first.atMs % intervalMs) / (intervalMs / 10));
        }),
      );
      expect(slots.size).toBeGreaterThanOrEqual(6);

      // Each host serves its own subject and reports only its own VMs.
      const client = await connectTestBus(nats.url, { prefix });
      buses.push(client);
      for (const [i, hostId] of hostIds.entries()) {
        const reply = await client.call(
          hostAgentService.ApplyVm,
          { vmId: `vm-${i + 1}`, spec: { vcpus: 1, memoryMib: 512, bootVolume: "vol-boot" }, powerState: v1.PowerState.POWER_STATE_OFF, generation: 1 },
          { scopeId: hostId },
        );
        expect(reply.status?.hostId).toBe(hostId);
      }
      const sinceMs = Date.now() + 400;
      await eventually(
        "every host's heartbeat lists just its VM",
        () => {
          for (const [i, hostId] of hostIds.entries()) {
            const last = beats.filter((b) => b.hostId === hostId && b.atMs > sinceMs).at(-1);
            if (!last) return undefined;
            const vms = last.beat.vms.map((s) => `${s.vmId}@${s.hostId}:${v1.VmState[s.state ?? 0]}`);
            expect(vms).toEqual([`vm-${i + 1}@${hostId}:VM_STATE_STOPPED`]);
          }
          return true;
        },
        10_000,
      );
      // Registration happens once per host, not once per heartbeat or request.
      expect(registrations).toHaveLength(20);
    } finally {
      expect(await stopAgent(agent)).toBe(0);
    }
    const countAtExit = beats.length;
    await sleep(600);
    expect(beats.length).toBe(countAtExit);
  });

  it("process: registration retries until the controller appears, while the hosts already serve and heartbeat", async () => {
    const prefix = "late";
    const hostIds = ["host-r1", "host-r2", "host-r3"];
    const beats = await watchHeartbeats(prefix);
    const healthPort = await freePort();
    const agent = startAgent([
      "--nats-url", nats.url, "--prefix", prefix, "--agent-id", "agent-late", "--hosts", hostIds.join(","),
      "--heartbeat-interval-ms", "200", "--health-port", String(healthPort),
    ]);
    try {
      await eventually(
        "heartbeats of every host",
        () => (hostIds.every((h) => beats.some((b) => b.hostId === h)) ? true : undefined),
        20_000,
      );
      const client = await connectTestBus(nats.url, { prefix });
      buses.push(client);
      const reply = await client.call(
        hostAgentService.ApplyVm,
        { vmId: "vm-early", spec: { vcpus: 1, memoryMib: 512, bootVolume: "vol-boot" }, powerState: v1.PowerState.POWER_STATE_OFF, generation: 1 },
        { scopeId: "host-r2" },
      );
      expect(reply.status?.hostId).toBe("host-r2");
      // Long enough for several failed attempts at the backoff's start.
      await sleep(2_000);
      const before = (await (await fetch(`http://127.0.0.1:${healthPort}/healthz`)).json()) as Record<string, unknown>;
      expect(before).toMatchObject({ status: "ok", hosts: 3, hostsRegistered: 0, vms: 1 });

      const registrations = await standInController(prefix, 300);
      await eventually("every host registered", () => (registrations.length >= 3 ? true : undefined), 15_000);
      await sleep(1_000);
      expect(registrations.map((r) => r.hostId).sort()).toEqual(hostIds);
      const after = (await (await fetch(`http://127.0.0.1:${healthPort}/healthz`)).json()) as Record<string, unknown>;
      expect(after).toMatchObject({ status: "ok", hosts: 3, hostsRegistered: 3, vms: 1 });
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
    { name: "a bad agent id", args: ["--agent-id", "Agent_1", "--hosts", "host-1"] },
    { name: "pcpus not a number", args: ["--agent-id", "a1", "--hosts", "host-1", "--pcpus", "many"] },
    { name: "pcpus 0", args: ["--agent-id", "a1", "--hosts", "host-1", "--pcpus", "0"] },
    { name: "boot blocks over the limit", args: ["--agent-id", "a1", "--hosts", "host-1", "--boot-blocks", "100000"] },
  ];

  it("process: a bad flag exits 2 with one line on stderr", async () => {
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
