// Proves who may say what on the bus of a datacenter `simdc up` runs: a NATS
// user per role, with subject permissions. An unauthenticated client is
// refused with a clear message; an agent publishes only its own hosts'
// subjects, cannot register another agent's host, manage SAN volumes, write
// desired state or drive the supervisor; an observer reads but changes
// nothing; the controller cannot drive the supervisor; and a registration of
// a host held by a live agent, or a heartbeat that names another host than
// its subject, is refused even from a client allowed to send it.

import { execFile } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect, headers, type NatsConnection } from "nats";
import { simdc as proto } from "@simdc/proto";
import { wallClock } from "@simdc/common";
import { eventually } from "@simdc/testkit";
import { cli, startUp, type UpDatacenter } from "./up-env.js";

import v1 = proto.v1;

let dc: UpDatacenter;

beforeAll(async () => {
  dc = await startUp(["--hosts", "2", "--hosts-per-agent", "1", "--san", "1", "--heartbeat-interval-ms", "200"]);
});

afterAll(async () => {
  await dc?.stop();
});

/** Publishes as `user` and says whether an operator subscribed to the subject saw that very message. */
async function delivered(user: string, subject: string, data: Uint8Array): Promise<boolean> {
  const operator = await dc.nats("operator");
  const seen: string[] = [];
  const mine = Buffer.from(data).toString("base64");
  operator.subscribe(subject, { callback: (_e, m) => (Buffer.from(m.data).toString("base64") === mine ? seen.push(m.subject) : undefined) });
  await operator.flush();
  const sender = await dc.nats(user);
  sender.publish(subject, data);
  await sender.flush().catch(() => undefined);
  // A message that is allowed arrives within a round trip; give a refused one the same chance.
  await operator.flush();
  await wallClock.sleep(100);
  await Promise.all([sender.close().catch(() => undefined), operator.close()]);
  return seen.length > 0;
}

/** Calls `subject` as `user`: "ok", an error header's code, or "refused" when NATS refused the request. */
async function requestAs(user: string, subject: string, data: Uint8Array, token?: string): Promise<string> {
  const nc = await dc.nats(user);
  try {
    const h = headers();
    if (token) h.set("Simdc-Operator-Token", token);
    const reply = await nc.request(subject, data, { timeout: 1_500, headers: h });
    return reply.headers?.get("Nats-Service-Error-Code") || "ok";
  } catch (err) {
    return /permission/i.test(String(err)) || /timeout/i.test(String(err)) ? "refused" : `error: ${String(err)}`;
  } finally {
    await nc.close().catch(() => undefined);
  }
}

const heartbeat = (hostId: string, bootId = "forged"): Uint8Array => v1.HostHeartbeat.encode({ hostId, agentId: "agent-1", bootId, seq: 424242 }).finish();

describe("permissions", () => {
  it("permissions: a client without credentials, or with wrong ones, is refused with a clear message", async () => {
    await expect(connect({ servers: dc.natsUrl() })).rejects.toThrow(/Authorization Violation/i);
    const err = (await dc.simdc("status").catch((e: unknown) => e)) as { code?: number; stderr?: string };
    expect(err).not.toHaveProperty("code"); // the operator's own credentials work
    const env = { ...process.env, SIMDC_NATS_USER: "operator", SIMDC_NATS_PASSWORD: "wrong" };
    const refused = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      execFile(process.execPath, [cli, "--data-dir", dc.dataDir, "status"], { env }, (e, _out, stderr) => resolve({ code: (e as { code?: number } | null)?.code ?? 0, stderr }));
    });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/^simdc: UNAVAILABLE: NATS at .* refused the credentials of operator/);
  });

  it("permissions: an agent publishes its own hosts' heartbeats and nobody else's", async () => {
    expect(await delivered("agent-1", "simdc.evt.host.host-1.heartbeat", heartbeat("host-1"))).toBe(true);
    expect(await delivered("agent-1", "simdc.evt.host.host-2.heartbeat", heartbeat("host-2"))).toBe(false);
    expect(await delivered("agent-1", "simdc.evt.san.san-1.heartbeat", v1.SanNodeHeartbeat.encode({ nodeId: "san-1", seq: 424242 }).finish())).toBe(false);
  });

  it("permissions: an agent sends underlay trains, and credit for them, only under its own name", async () => {
    const train = v1.UnderlayTrain.encode({ fromHost: "host-1", toHost: "host-2" }).finish();
    expect(await delivered("agent-1", "simdc.dp.agent-2.host-2.agent-1", train)).toBe(true);
    expect(await delivered("agent-1", "simdc.dp.agent-2.host-2.agent-2", train)).toBe(false);
    expect(await delivered("agent-1", "simdc.dp.agent-2.host-2", train)).toBe(false);
    // Credit for the trains it took, likewise.
    const credit = v1.UnderlayCredit.encode({ seq: 7 }).finish();
    expect(await delivered("agent-1", "simdc.dp.agent-2.agent-1", credit)).toBe(true);
    expect(await delivered("agent-1", "simdc.dp.agent-2.agent-3", credit)).toBe(false);
  });

  it("permissions: an agent cannot register another agent's host, manage volumes, write desired state or drive the supervisor", async () => {
    const register = v1.RegisterHostRequest.encode({ hostId: "host-2", agentId: "agent-1", bootId: "b", capacity: { pcpus: 1, memoryMib: 1 } }).finish();
    expect(await requestAs("agent-1", "simdc.api.v1.HostService.RegisterHost.host-2", register)).toBe("refused");
    expect(await requestAs("agent-1", "simdc.san.san-1.CreateBackingVolume", v1.CreateBackingVolumeRequest.encode({ volumeId: "evil", sizeMib: 1, incarnation: "i" }).finish())).toBe("refused");
    expect(await requestAs("agent-1", "simdc.san.san-1.DeleteBackingVolume", v1.DeleteBackingVolumeRequest.encode({ volumeId: "web-1-boot" }).finish())).toBe("refused");
    expect(await requestAs("agent-1", "simdc.ctl.supervisor.SignalProcess", v1.SignalProcessRequest.encode({ name: "controller-1", action: 1 }).finish())).toBe("refused");
    expect(await delivered("agent-1", "$KV.simdc-vms.evil", new Uint8Array([1]))).toBe(false);
    // Block I/O from a host is allowed (a volume that does not exist is NOT_FOUND, not refused).
    expect(await requestAs("agent-1", "simdc.san.san-1.ReadBlocks", v1.ReadBlocksRequest.encode({ volumeId: "nope", blockCount: 1 }).finish())).toBe("404");
  });

  it("permissions: an observer reads but changes nothing; the controller cannot drive the supervisor", async () => {
    expect(await requestAs("observer", "simdc.api.v1.ComputeService.ListVms", new Uint8Array())).toBe("ok");
    const create = v1.CreateVmRequest.encode({ name: "spy", spec: { vcpus: 1, memoryMib: 1, bootVolume: "v" } }).finish();
    expect(await requestAs("observer", "simdc.api.v1.ComputeService.CreateVm", create)).toBe("refused");
    // The supervisor obeys only the operator's token: the controller may reach it, but is refused.
    const token = (dc.credential("operator") as { supervisorToken?: string }).supervisorToken;
    expect(token).toMatch(/^[0-9a-f]{32}$/);
    expect(await requestAs("controller-1", "simdc.ctl.supervisor.ListProcesses", new Uint8Array())).toBe("403");
    expect(await requestAs("controller-1", "simdc.ctl.supervisor.SignalProcess", v1.SignalProcessRequest.encode({ name: "agent-1", action: 1 }).finish())).toBe("403");
    expect(await requestAs("operator", "simdc.ctl.supervisor.ListProcesses", new Uint8Array())).toBe("403");
    expect(await requestAs("operator", "simdc.ctl.supervisor.ListProcesses", new Uint8Array(), token)).toBe("ok");
  });

  it("permissions: a registration of a host held by a live agent, and a heartbeat naming another host, are refused and counted", async () => {
    const before = v1.GetControllerStatusResponse.decode((await (await dc.nats()).request("simdc.api.v1.ControllerService.GetControllerStatus", new Uint8Array())).data);
    const register = v1.RegisterHostRequest.encode({ hostId: "host-1", agentId: "agent-evil", bootId: "b", capacity: { pcpus: 4096, memoryMib: 1 } }).finish();
    expect(await requestAs("operator", "simdc.api.v1.HostService.RegisterHost.host-1", register)).toBe("412");
    // The operator may publish anywhere, but a heartbeat is judged by its subject, not its payload.
    const nc: NatsConnection = await dc.nats();
    nc.publish("simdc.evt.host.host-1.heartbeat", heartbeat("host-2"));
    await nc.flush();
    await eventually("the refusals to be counted", async () => {
      const now = v1.GetControllerStatusResponse.decode((await nc.request("simdc.api.v1.ControllerService.GetControllerStatus", new Uint8Array())).data);
      return now.messagesRefused >= before.messagesRefused + 2 ? true : undefined;
    });
    const host = v1.GetHostResponse.decode((await nc.request("simdc.api.v1.HostService.GetHost", v1.GetHostRequest.encode({ hostId: "host-1" }).finish())).data).host;
    expect(host?.agentId).toBe("agent-1");
    expect(host?.capacity?.pcpus).toBe(16);
    await nc.close();
  });
});
