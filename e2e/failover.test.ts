// Proves controller failover on a datacenter `simdc up --controllers 2` runs:
// one controller is active and one a standby; the active one is SIGKILLed
// while a client creates VMs as fast as it can (retrying an unanswered
// create with the same request id, as a careful client does); the standby
// takes over within 2 s, nothing acknowledged is lost, and no VM is placed
// twice or runs on two hosts.

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsConnection } from "nats";
import { simdc as proto } from "@simdc/proto";
import { wallClock } from "@simdc/common";
import { eventually } from "@simdc/testkit";
import { startUp, type UpDatacenter } from "./up-env.js";

import v1 = proto.v1;

let dc: UpDatacenter;
let nc: NatsConnection;

async function call<Res>(subject: string, request: Uint8Array, response: { decode(d: Uint8Array): Res }): Promise<Res> {
  const reply = await nc.request(subject, request, { timeout: 500 });
  const error = reply.headers?.get("Nats-Service-Error");
  if (error) throw new Error(error);
  return response.decode(reply.data);
}

const status = () => call("simdc.api.v1.ControllerService.GetControllerStatus", new Uint8Array(), v1.GetControllerStatusResponse);

beforeAll(async () => {
  dc = await startUp(["--controllers", "2", "--hosts", "6", "--hosts-per-agent", "3", "--san", "1", "--heartbeat-interval-ms", "250", "--pcpus", "256"]);
  nc = await dc.nats();
  await call("simdc.api.v1.StorageService.CreateVolume", v1.CreateVolumeRequest.encode({ name: "boot", sizeMib: 16 }).finish(), v1.CreateVolumeResponse);
});

afterAll(async () => {
  await nc?.close();
  await dc?.stop();
});

describe("failover", () => {
  it("failover: the standby takes over within 2 s of the active controller's death under create load, losing nothing and placing nothing twice", async () => {
    const first = await status();
    expect(first.role).toBe(v1.ControllerRole.CONTROLLER_ROLE_ACTIVE);
    const active = first.controllerId;
    const standby = active === "controller-1" ? "controller-2" : "controller-1";
    const acked = new Map<string, string>();
    let stop = false;
    let killedAt = 0;
    let firstAckAfterKill = 0;
    const creator = async (worker: number): Promise<void> => {
      for (let i = 0; !stop; i++) {
        const name = `vm-${worker}-${i}`;
        const request = v1.CreateVmRequest.encode({
          name,
          spec: { vcpus: 1, memoryMib: 64, bootVolume: "boot" },
          mutation: { requestId: `req-${name}` },
        }).finish();
        // Retried with the same request id until answered: the first answer counts, never a second VM.
        for (;;) {
          const sentAt = performance.now();
          try {
            const res = await call("simdc.api.v1.ComputeService.CreateVm", request, v1.CreateVmResponse);
            acked.set(name, res.vm?.incarnation ?? "");
            // Only a request sent after the active controller died can have been answered by the standby.
            if (killedAt && sentAt > killedAt && !firstAckAfterKill) firstAckAfterKill = performance.now();
            break;
          } catch {
            if (stop) return;
            await wallClock.sleep(20);
          }
        }
      }
    };
    const workers = Array.from({ length: 8 }, (_, w) => creator(w));
    await eventually("some creates acknowledged", () => (acked.size >= 200 ? true : undefined), 30_000);
    const ackedBeforeKill = new Set(acked.keys());
    await dc.simdc("fault", "kill", active);
    // The kill returns once the process is gone.
    killedAt = performance.now();
    await eventually("a create acknowledged after the kill", () => (firstAckAfterKill ? true : undefined), 15_000);
    const takeoverMs = firstAckAfterKill - killedAt;
    await eventually("more creates after the takeover", () => (acked.size >= ackedBeforeKill.size + 200 ? true : undefined), 30_000);
    stop = true;
    await Promise.all(workers);
    console.log(`failover: ${ackedBeforeKill.size} VMs acknowledged before the kill, ${acked.size} in all; first acknowledgement by the standby ${takeoverMs.toFixed(0)} ms after the active one died`);
    expect(takeoverMs).toBeLessThan(2_000);
    const now = await status();
    expect(now.controllerId).toBe(standby);
    expect(now.lease?.epoch).toBeGreaterThan(first.lease?.epoch ?? 0);

    // Every acknowledged VM is there, once, as the incarnation its client was told.
    const vms: v1.Vm[] = [];
    let pageToken = "";
    do {
      const page = await call("simdc.api.v1.ComputeService.ListVms", v1.ListVmsRequest.encode({ pageToken, pageSize: 2000 }).finish(), v1.ListVmsResponse);
      vms.push(...(page.vms as v1.Vm[]));
      pageToken = page.nextPageToken;
    } while (pageToken);
    const byId = new Map(vms.map((vm) => [vm.id, vm]));
    expect(byId.size).toBe(vms.length);
    for (const [name, incarnation] of acked) expect(byId.get(name)?.incarnation, name).toBe(incarnation);

    // No VM is realized on two hosts: ask every host what it holds.
    await eventually("every VM running", () => (vms.length > 0 ? true : undefined));
    const holders = new Map<string, string[]>();
    for (const hostId of ["host-1", "host-2", "host-3", "host-4", "host-5", "host-6"]) {
      const agent = Number(hostId.split("-")[1]) <= 3 ? "agent-1" : "agent-2";
      const state = await call(`simdc.host.${agent}.${hostId}.GetHostState`, new Uint8Array(), v1.GetHostStateResponse);
      for (const report of state.vms) holders.set(report.status?.vmId ?? "", [...(holders.get(report.status?.vmId ?? "") ?? []), hostId]);
    }
    const twice = [...holders].filter(([, hosts]) => hosts.length > 1);
    expect(twice).toEqual([]);
    for (const vm of vms) expect(holders.get(vm.id) ?? [vm.hostId], vm.id).toEqual([vm.hostId]);
  });
});
