// Proves the local datacenter the README's run command starts: `simdc up
// --demo` as a real supervisor of real processes, driven only through the
// simdc CLI, as a user would. Killing an agent shows as a disconnected host
// within the configured timeout; restarting it brings its VMs back; a paused
// agent disconnects and returns; killing and restarting the controller loses
// nothing; `simdc down` stops every process.

import { spawn, execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { headers } from "nats";
import { simdc as proto } from "@simdc/proto";
import { wallClock } from "@simdc/common";
import { eventually } from "@simdc/testkit";
import { freePort } from "@simdc/cli";
import { cli, startUp, type UpDatacenter } from "./up-env.js";

import v1 = proto.v1;

const run = promisify(execFile);
const heartbeatIntervalMs = 200;
const heartbeatMissesMax = 3;

let dc: UpDatacenter;
const simdc = (...args: string[]): Promise<string> => dc.simdc(...args);
const json = <T>(...args: string[]): Promise<T> => dc.json<T>(...args);

interface HostJson {
  id: string;
  state: string;
}
interface VmJson {
  id: string;
  hostId: string;
  generation: number;
  incarnation: string;
  status: { state: string; observedGeneration: number };
}

const hostState = async (id: string): Promise<string> =>
  (await json<HostJson[]>("host", "list")).find((h) => h.id === id)?.state ?? "";

beforeAll(async () => {
  dc = await startUp(
    ["--hosts", "4", "--hosts-per-agent", "2", "--san", "2", "--heartbeat-interval-ms", String(heartbeatIntervalMs), "--heartbeat-misses-max", String(heartbeatMissesMax), "--demo"],
    "demo: try simdc",
  );
});

afterAll(async () => {
  await dc?.stop();
});

describe("simdc up", () => {
  it("simdc up: reports ready, then the demo's VMs run on their hosts", async () => {
    expect(dc.output()).toMatch(/ready in [\d.]+ s: 4 hosts in 2 agent processes, 2 SAN nodes, 1 controller/);
    expect(dc.output()).toMatch(/seed \d+, time scale 1x; the same run again: simdc up --seed \d+/);
    const vms = await json<VmJson[]>("vm", "list");
    // The demo's three, and one CPU-bound VM more than the 4 hosts, to make one host contended.
    expect(vms.map((v) => [v.id, v.status.state])).toEqual([
      ...["crunch-1", "crunch-2", "crunch-3", "crunch-4", "crunch-5"].map((id) => [id, "VM_STATE_RUNNING"]),
      ["db-1", "VM_STATE_RUNNING"],
      ["web-1", "VM_STATE_RUNNING"],
      ["web-2", "VM_STATE_RUNNING"],
    ]);
    expect(dc.output()).toMatch(/demo: host-\d+ is contended: \d+ vCPUs on \d+ cores, \d+% busy/);
    // A network in each mode, and the demo's first packets crossed hosts.
    const nets = await json<{ id: string; mode: string }[]>("net", "list");
    expect(nets.map((n) => [n.id, n.mode])).toEqual([
      ["home", "NETWORK_MODE_NAT"],
      ["lab", "NETWORK_MODE_HOST_ONLY"],
      ["lan", "NETWORK_MODE_BRIDGE"],
    ]);
    expect(dc.output()).toMatch(/demo: web-1 \(10\.10\.0\.\d+\) pinged db-1 \(10\.10\.0\.\d+\) across hosts: 3 of 3 answered/);
    expect(dc.output()).toMatch(/demo: web-1 \(10\.10\.0\.\d+\) pinged www \(198\.18\.128\.1\) out of the bridge network lan to the outside: 3 of 3 answered/);
    const status = await simdc("status");
    expect(status).toMatch(/hosts: 4\/4 connected; SAN nodes: 2\/2 connected; VMs: 8 running/);
    const seed = /seed (\d+)/.exec(dc.output())?.[1];
    expect(status).toContain(`datacenter: seed ${seed}, time scale 1x; active controller controller-1`);
    expect(status).toMatch(/documents: generation \d+ written up to \d+, realized by every live host up to \d+ \(0 hosts behind\)/);
  });

  it("simdc up: a killed agent's hosts disconnect within the timeout and return with their VMs on restart", async () => {
    const killedAt = performance.now();
    await simdc("fault", "kill", "agent-1");
    await eventually("host-1 disconnected", async () => ((await hostState("host-1")) === "HOST_STATE_DISCONNECTED" ? true : undefined));
    expect(performance.now() - killedAt).toBeLessThan(heartbeatIntervalMs * heartbeatMissesMax + 1_500);
    expect(await hostState("host-2")).toBe("HOST_STATE_DISCONNECTED");
    expect(await hostState("host-3")).toBe("HOST_STATE_CONNECTED");
    const lost = (await json<VmJson[]>("vm", "list")).filter((v) => v.hostId === "host-1" || v.hostId === "host-2");
    expect(lost.length).toBeGreaterThan(0);
    for (const vm of lost) expect(vm.status.state).toBe("VM_STATE_UNKNOWN");
    // Nothing restarts it on its own: experiments must see the failure.
    await wallClock.sleep(1_000);
    expect(await hostState("host-1")).toBe("HOST_STATE_DISCONNECTED");
    await simdc("fault", "restart", "agent-1");
    await eventually("the agent's VMs running again", async () => {
      const vms = await json<VmJson[]>("vm", "list");
      return vms.every((v) => v.status.state === "VM_STATE_RUNNING") ? true : undefined;
    }, 20_000);
  });

  it("simdc up: a paused agent disconnects and returns when resumed", async () => {
    await simdc("fault", "pause", "agent-2");
    await eventually("host-3 disconnected", async () => ((await hostState("host-3")) === "HOST_STATE_DISCONNECTED" ? true : undefined));
    await simdc("fault", "resume", "agent-2");
    await eventually("host-3 connected", async () => ((await hostState("host-3")) === "HOST_STATE_CONNECTED" ? true : undefined));
  });

  it("simdc up: a change made while its host is paused, or killed, is realized once the host is back", async () => {
    const vmOn = async (hostIds: string[]): Promise<VmJson> =>
      (await json<VmJson[]>("vm", "list")).find((v) => hostIds.includes(v.hostId) && v.status.state === "VM_STATE_RUNNING")!;
    const realized = (id: string, state: string) => async () => {
      const vm = await json<VmJson>("vm", "get", id);
      return vm.status.state === state && vm.status.observedGeneration === vm.generation ? vm : undefined;
    };
    // Paused in the middle of a change: the stop waits, then lands at the new generation.
    const paused = await vmOn(["host-3", "host-4"]);
    await simdc("fault", "pause", "agent-2");
    await simdc("vm", "stop", paused.id);
    await wallClock.sleep(heartbeatIntervalMs * heartbeatMissesMax * 2);
    const meanwhile = await json<VmJson>("vm", "get", paused.id);
    expect(meanwhile.status.observedGeneration).toBe(paused.generation);
    await simdc("fault", "resume", "agent-2");
    const stopped = await eventually(`${paused.id} stopped after resume`, realized(paused.id, "VM_STATE_STOPPED"), 20_000);
    expect(stopped.generation).toBe(paused.generation + 1);
    // Killed in the middle of a change: the restarted agent reads its document afresh and gets the new generation.
    await simdc("fault", "kill", "agent-2");
    await simdc("vm", "start", paused.id);
    await simdc("fault", "restart", "agent-2");
    const started = await eventually(`${paused.id} running after restart`, realized(paused.id, "VM_STATE_RUNNING"), 20_000);
    expect(started.generation).toBe(paused.generation + 2);
  });

  it("simdc up: the supervisor refuses bad process faults with a typed error and changes nothing", async () => {
    const prefix = "simdc";
    const nc = await dc.nats("operator");
    const before = await simdc("-o", "json", "status");
    const subject = `${prefix}.ctl.supervisor.SignalProcess`;
    const cases: [Uint8Array, string, RegExp][] = [
      [new Uint8Array([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]), "400", /^INVALID_ARGUMENT: malformed/],
      [new Uint8Array(), "400", /^INVALID_ARGUMENT: name/],
      [v1.SignalProcessRequest.encode({ name: "agent-1" }).finish(), "400", /^INVALID_ARGUMENT: action 0/],
      [v1.SignalProcessRequest.encode({ name: "agent-1", action: 77 as v1.ProcessAction }).finish(), "400", /^INVALID_ARGUMENT: action 77/],
      [v1.SignalProcessRequest.encode({ name: "../x", action: 1 }).finish(), "400", /^INVALID_ARGUMENT: name/],
      [v1.SignalProcessRequest.encode({ name: "agent-9", action: 1 }).finish(), "404", /^NOT_FOUND: no process named agent-9/],
      [v1.SignalProcessRequest.encode({ name: "agent-1", action: 3 }).finish(), "412", /^FAILED_PRECONDITION: agent-1 is not paused/],
    ];
    // Over NATS the supervisor asks for the operator's token, which `up` wrote beside the operator's password.
    const withToken = headers();
    withToken.set("Simdc-Operator-Token", (dc.credential("operator") as { supervisorToken?: string }).supervisorToken ?? "");
    for (const [body, code, text] of cases) {
      const reply = await nc.request(subject, body, { timeout: 5_000, headers: withToken });
      expect(reply.headers?.get("Nats-Service-Error-Code")).toBe(code);
      expect(reply.headers?.get("Nats-Service-Error")).toMatch(text);
    }
    const list = await nc.request(`${prefix}.ctl.supervisor.ListProcesses`, new Uint8Array([0xff]), { timeout: 5_000, headers: withToken });
    expect(list.headers?.get("Nats-Service-Error-Code")).toBe("400");
    const noToken = await nc.request(subject, v1.SignalProcessRequest.encode({ name: "agent-1", action: 1 }).finish(), { timeout: 5_000 });
    expect(noToken.headers?.get("Nats-Service-Error-Code")).toBe("403");
    expect(noToken.headers?.get("Nats-Service-Error")).toMatch(/^PERMISSION_DENIED: only the operator drives the supervisor/);
    await nc.close();
    const strip = (s: string) => JSON.parse(s, (k, v) => (k === "lastHeartbeatMs" ? 0 : v));
    expect(strip(await simdc("-o", "json", "status")).processes).toEqual(strip(before).processes);
  });

  it("simdc up: a bus partition cuts one host of a multi-host agent off and heals", async () => {
    await simdc("fault", "add", "iso", "--action", "partition", "--from", "host-4");
    await eventually("host-4 disconnected", async () => ((await hostState("host-4")) === "HOST_STATE_DISCONNECTED" ? true : undefined));
    expect(await hostState("host-3")).toBe("HOST_STATE_CONNECTED");
    const list = await simdc("fault", "list");
    expect(list).toMatch(/iso\s+partition/);
    await simdc("fault", "clear");
    await eventually("host-4 connected", async () => ((await hostState("host-4")) === "HOST_STATE_CONNECTED" ? true : undefined));
  });

  it("simdc up: events shows what happened with its cause, wait follows a state, and a timed rule acts only in its window", async () => {
    // A watcher started before the fault sees it as it happens.
    const watcher = execFile(process.execPath, [cli, "--data-dir", dc.dataDir, "events", "-w", "--kind", "host,process,fault", "-o", "json"]);
    let watched = "";
    watcher.stdout!.on("data", (c: Buffer) => (watched += c.toString()));
    await wallClock.sleep(1_000);
    const killedAt = Date.now();
    await simdc("fault", "kill", "agent-2");
    expect(await simdc("wait", "host", "host-3", "--for", "disconnected", "--timeout", "10s")).toMatch(/^host host-3 is disconnected \(after \d+ ms\)/);
    expect(Date.now() - killedAt).toBeLessThan(heartbeatIntervalMs * heartbeatMissesMax + 2_000);
    await simdc("fault", "restart", "agent-2");
    await simdc("wait", "host", "host-3", "--for", "connected", "--timeout", "20s");
    await expect(simdc("wait", "host", "host-3", "--for", "disconnected", "--timeout", "500ms")).rejects.toMatchObject({
      code: 1,
      stderr: expect.stringMatching(/DEADLINE_EXCEEDED: host host-3 is not disconnected after 500 ms: it is connected/),
    });
    await eventually("the watcher saw kill, disconnect and reconnect", () => (/"host-connected".*"host-3"/.test(watched) ? true : undefined), 10_000);
    watcher.kill("SIGINT");
    const seen = watched.trim().split("\n").map((l) => JSON.parse(l) as { kind: string; objectId: string; cause?: string; timeMs: number });
    const kill = seen.find((e) => e.kind === "process-signaled" && e.objectId === "agent-2")!;
    expect(kill.cause).toBe("cli");
    const lost = seen.find((e) => e.kind === "host-disconnected" && e.objectId === "host-3")!;
    expect(lost.timeMs).toBeGreaterThan(kill.timeMs);
    // The history has it too, for whoever looks later.
    const later = await simdc("events", "--kind", "process-signaled", "--id", "agent-2");
    expect(later).toMatch(/process-signaled\s+process\/agent-2\s+kill agent-2 .*\(cause: cli\)/);
    await expect(simdc("events", "--kind", "nonsense")).rejects.toMatchObject({ code: 2, stderr: expect.stringMatching(/--kind nonsense is not a kind of event/) });

    // A drop of host-1's heartbeats that starts in 3 s and lasts 2.5 s: host-1 goes away and comes back with no clear.
    await simdc("fault", "add", "blip", "--action", "drop", "--from", "host-1", "--to", "controller", "--after", "3s", "--duration", "2500ms", "--wait");
    expect(await simdc("fault", "list")).toMatch(/blip\s+drop\s+>\s+host-1\s+controller\s+100\s+0\s+starts in/);
    await simdc("wait", "host", "host-1", "--for", "disconnected", "--timeout", "10s");
    await simdc("wait", "host", "host-1", "--for", "connected", "--timeout", "10s");
    // The controller blames the silence on the rule that dropped the heartbeats.
    const silenced = (await simdc("events", "--kind", "host-disconnected", "--id", "host-1", "-o", "json")).trim().split("\n").map((l) => JSON.parse(l) as { cause?: string; message: string });
    expect(silenced.at(-1)).toMatchObject({ cause: "fault:blip", message: expect.stringContaining("(fault rule blip dropped them)") });
    const list = JSON.parse(await simdc("-o", "json", "fault", "list")) as { rules: { id: string; phase: string; dropped: number }[] };
    expect(list.rules.find((r) => r.id === "blip")).toMatchObject({ phase: "ended" });
    expect(list.rules.find((r) => r.id === "blip")!.dropped).toBeGreaterThan(0);
    const warned = await run(process.execPath, [cli, "--data-dir", dc.dataDir, "fault", "add", "nobody", "--action", "drop", "--from", "host-99"]);
    expect(warned.stderr).toMatch(/warning: no process answers as host-99/);
    await simdc("fault", "clear", "--wait");
  });

  it("simdc up: killing and restarting the controller loses nothing and disconnects no host", async () => {
    await simdc("volume", "create", "extra-boot", "--size-mib", "64");
    await simdc("vm", "create", "extra-1", "--boot-volume", "extra-boot", "--vcpus", "1", "--memory-mib", "256");
    await simdc("vm", "stop", "web-1");
    const before = await json<VmJson[]>("vm", "list");
    await simdc("fault", "kill", "controller-1");
    await expect(simdc("vm", "list")).rejects.toThrow(/UNAVAILABLE/);
    // status still shows the processes, and says the controller does not answer.
    const status = await simdc("status");
    expect(status).toMatch(/^datacenter: seed \d+, time scale 1x; no answer from the controller \(UNAVAILABLE: /);
    expect(status).toMatch(/^controller-1\s+controller\s+\d+\s+exited\s+.*SIGKILL$/m);
    await simdc("fault", "restart", "controller-1");
    await eventually("controller serving", () => simdc("vm", "list").then(() => true), 15_000);
    const after = await json<VmJson[]>("vm", "list");
    expect(after.map((v) => [v.id, v.hostId, v.generation])).toEqual(before.map((v) => [v.id, v.hostId, v.generation]));
    await eventually("web-1 stopped at its new generation", async () => {
      const vm = await json<VmJson>("vm", "get", "web-1");
      return vm.status.state === "VM_STATE_STOPPED" && vm.status.observedGeneration === vm.generation ? true : undefined;
    });
    const hosts = await json<HostJson[]>("host", "list");
    expect(hosts.every((h) => h.state === "HOST_STATE_CONNECTED")).toBe(true);
    // The logs since the restart (pretty-printed, as a user reads them) say no host disconnected.
    const logs = await simdc("logs", "controller-1", "-n", "2000");
    const sinceRestart = logs.slice(logs.lastIndexOf("stored state loaded"));
    expect(sinceRestart).toMatch(/serving as the active controller/);
    expect(sinceRestart).not.toMatch(/host disconnected/);
    // The filters: by level, by text, by time, and none at all.
    const warnings = (await simdc("logs", "--level", "warn", "-n", "5000")).trim().split("\n");
    expect(warnings.length).toBeGreaterThan(0);
    for (const line of warnings) expect(line).toMatch(/ (WARN|ERROR|FATAL): |^\s/);
    const grepped = (await simdc("logs", "controller-1", "--grep", "serving as the active controller")).trim().split("\n");
    expect(grepped.length).toBeGreaterThanOrEqual(2);
    for (const line of grepped) expect(line).toContain("serving as the active controller");
    expect(await simdc("logs", "-n", "0")).toBe("");
    expect(await simdc("logs", "controller-1", "--since", "1h", "--grep", "no such text anywhere")).toBe("");
    await expect(simdc("logs", "--level", "loud")).rejects.toMatchObject({ code: 2 });
    // host get is a table with the list's words.
    expect(await simdc("host", "get", "host-1")).toMatch(/^FIELD\s+VALUE\nHOST\s+host-1\nSTATE\s+connected\n/);
  });

  it("simdc up: NATS killed through simdc comes back through simdc, and its outage disconnects no host", async () => {
    const events: string[] = [];
    const watcher = await dc.nats("observer");
    watcher.subscribe("simdc.evt.host.*.disconnected", { callback: (_e, m) => events.push(m.subject) });
    await watcher.flush();
    await simdc("fault", "kill", "nats");
    // Only the supervisor's socket answers now.
    expect(await simdc("fault", "restart", "nats")).toMatch(/restart nats: now running/);
    await eventually("the controller serving again", () => simdc("vm", "list").then(() => true), 20_000);
    await wallClock.sleep(heartbeatIntervalMs * heartbeatMissesMax * 3);
    const hosts = await json<HostJson[]>("host", "list");
    expect(hosts.every((h) => h.state === "HOST_STATE_CONNECTED")).toBe(true);
    expect(events).toEqual([]);
    await watcher.close();
  });

  it("simdc up: logical networks are created, listed and refused as the CLI says; an observer reads them and cannot create one", async () => {
    // The demo's three networks hold VNIs 1-3.
    expect(await simdc("net", "create", "web", "--mode", "bridge", "--subnet", "10.0.0.0/24")).toBe("network web: bridge on overlay 4; 10.0.0.0/24 (gateway 10.0.0.1)\n");
    expect(await simdc("net", "create", "pay", "--mode", "nat", "--subnet", "172.16.0.0/16", "--vlan", "42")).toMatch(/^network pay: nat on vlan 42;/);
    expect(await simdc("net", "list")).toMatch(/^NETWORK\s+TENANT\s+MODE\s+TRANSPORT\s+VNI\/VLAN\s+SUBNETS\s+FLOWS\s+UPLINK\n(.*\n){3}pay\s+default\s+nat\s+vlan\s+42\s+172.16.0.0\/16 \(gw 172.16.0.1\)\s+proactive\s+converged\nweb\s+default\s+bridge\s+overlay\s+4\s+10.0.0.0\/24/);
    await expect(simdc("net", "create", "lab2", "--mode", "host-only", "--subnet", "10.0.0.128/25")).rejects.toMatchObject({ code: 1, stderr: expect.stringMatching(/^simdc: ALREADY_EXISTS: subnet 10.0.0.128\/25 overlaps 10.0.0.0\/24 of network web\n$/) });
    await expect(simdc("net", "create", "lab2", "--mode", "wifi", "--subnet", "10.9.0.0/24")).rejects.toMatchObject({ code: 2 });
    const observer = ["--user", "observer"];
    expect(await simdc(...observer, "net", "list")).toContain("web");
    await expect(simdc(...observer, "net", "create", "spy", "--mode", "bridge", "--subnet", "10.66.0.0/24")).rejects.toMatchObject({ code: 1, stderr: expect.stringMatching(/^simdc: PERMISSION_DENIED: this role may not call simdc.v1.NetworkService\/CreateNetwork/) });
    await simdc("net", "delete", "pay");
    expect(await simdc("net", "list")).not.toContain("pay");
  });

  it("simdc up: bad input is one line and a non-zero exit", async () => {
    for (const [args, code, text] of [
      [["vm", "get", "nope"], 1, /^simdc: NOT_FOUND: vm nope not found\n$/],
      [["vm", "create", "../x", "--boot-volume", "v"], 2, /^simdc: INVALID_ARGUMENT: name "..\/x" is not a valid name/],
      [["vm", "create", "huge", "--boot-volume", "web-1-boot", "--vcpus", "120"], 1, /^simdc: RESOURCE_EXHAUSTED: no host fits 120 vCPUs/],
      [["vm", "create", "orphan", "--boot-volume", "nope"], 1, /^simdc: NOT_FOUND: boot volume nope does not exist/],
      [["vm", "create", "w", "--boot-volume", "web-1-boot", "--wait", "always"], 2, /^simdc: INVALID_ARGUMENT: --wait must be none, controller or hosts/],
      [["fault", "kill", "agent-99"], 1, /^simdc: NOT_FOUND: no process named agent-99/],
      [["vm", "list", "--bogus"], 2, /^simdc: INVALID_ARGUMENT: Unknown option '--bogus'/],
      [["vm", "list", "--host", "nosuch"], 1, /^simdc: NOT_FOUND: no host nosuch is registered/],
    ] as const) {
      const err = (await simdc(...args).catch((e: unknown) => e)) as { code: number; stderr: string };
      expect(err.code, args.join(" ")).toBe(code);
      expect(err.stderr).toMatch(text);
      expect(err.stderr.trim().split("\n")).toHaveLength(1);
    }
  });

  it("simdc up: simdc down stops every process", async () => {
    const pids = (await json<{ processes: { pid: number }[] }>("status")).processes.map((p) => p.pid);
    await simdc("down");
    await eventually("the supervisor to exit", () => (dc.process.exitCode !== null ? true : undefined));
    expect(dc.process.exitCode).toBe(0);
    for (const pid of pids) expect(() => process.kill(pid, 0)).toThrow();
  });
});

describe("simdc up, supervisor killed", () => {
  it("simdc up: after the supervisor is SIGKILLed, up refuses to start over its processes and down stops them", async () => {
    const dir = mkdtempSync(join(tmpdir(), "simdc-up-orphans-"));
    const port = await freePort();
    const cmd = (...args: string[]) => run(process.execPath, [cli, "--data-dir", dir, ...args], { timeout: 30_000 });
    const supervisor = spawn(process.execPath, [cli, "up", "--data-dir", dir, "--nats-port", String(port), "--hosts", "1", "--san", "1"], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    let out = "";
    supervisor.stdout!.on("data", (c: Buffer) => (out += c.toString()));
    try {
      await eventually("ready", () => (out.includes("ready in") ? true : undefined), 30_000);
      const pids = (JSON.parse((await cmd("-o", "json", "status")).stdout) as { processes: { pid: number }[] }).processes.map((p) => p.pid);
      expect(pids).toHaveLength(4);
      supervisor.kill("SIGKILL");
      await new Promise((r) => supervisor.once("exit", r));
      // The children run on, in their own process groups.
      for (const pid of pids) expect(() => process.kill(pid, 0)).not.toThrow();
      const again = (await cmd("up", "--nats-port", String(await freePort())).catch((e: unknown) => e)) as { code: number; stderr: string };
      expect(again.code).toBe(1);
      expect(again.stderr).toMatch(/processes of an earlier 'simdc up' still run \(nats, controller-1, san-1, agent-1\)/);
      expect((await cmd("down")).stdout).toMatch(/stopped 4 processes left by a killed supervisor/);
      for (const pid of pids) expect(() => process.kill(pid, 0)).toThrow();
    } finally {
      // A failed check must not leave the datacenter running: down stops whatever is left.
      supervisor.kill("SIGKILL");
      await cmd("down").catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
