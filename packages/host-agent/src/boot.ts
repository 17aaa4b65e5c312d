// Opens a VM's boot volume over the storage API the way a real host would:
// ask the controller which SAN node holds the volume, then read the first
// blocks from that node. It retries peers that are UNAVAILABLE a bounded number
// of times and turns every other outcome into a failure reason; it never
// changes VM state itself.

import { sanNodeService, storageService, type Bus } from "@simdc/bus";
import { checkName, toSimdcError, type Logger, type SimdcError } from "@simdc/common";
import { simdc } from "@simdc/proto";
import { bootAttemptsMax, bootBackoff, bootCallTimeoutMs } from "./limits.js";
import { pause } from "./pause.js";
import { backoffDelayMs } from "./timing.js";

import v1 = simdc.v1;

/** A failure reason as VmStatus carries it. */
export interface FailureReason {
  code: v1.ErrorCode;
  message: string;
}

/** How opening a boot volume ended. */
export type BootOutcome =
  | { ok: true; sanNodeId: string; bytesRead: number }
  | { ok: false; reason: FailureReason }
  /** The VM or its host went away while booting; nobody wants the result. */
  | { ok: false; reason: null };

export interface BootContext {
  bus: Bus;
  /** The host that boots: the sender fault rules see. */
  hostId: string;
  logger: Logger;
  /** Aborted when the VM is removed or its host stops. */
  signal: AbortSignal;
  random: () => number;
}

/** Maps a typed error to the proto enum that statuses carry. */
function reasonOf(err: SimdcError): FailureReason {
  return { code: v1.ErrorCode[`ERROR_CODE_${err.code}`], message: err.message };
}

/**
 * Reads blocks [0, blockCount) of `volumeId` from the SAN node that holds it.
 * @returns ok with the node and the bytes read; or a failure reason: NOT_FOUND
 * "boot volume <id> not found" when the controller or the node does not know
 * the volume, UNAVAILABLE (or RESOURCE_EXHAUSTED) after bootAttemptsMax
 * attempts at unreachable (or busy) peers, any other code as the peer sent it.
 * Never throws operating errors.
 */
export async function openBootVolume(ctx: BootContext, volumeId: string, blockCount: number): Promise<BootOutcome> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await readBootBlocks(ctx.bus, ctx.hostId, volumeId, blockCount);
    } catch (err) {
      if (ctx.signal.aborted) return { ok: false, reason: null };
      const failure = toSimdcError(err);
      if (failure.code === "NOT_FOUND") {
        return { ok: false, reason: { code: v1.ErrorCode.ERROR_CODE_NOT_FOUND, message: `boot volume ${volumeId} not found` } };
      }
      // A peer that is gone or too busy may answer the next attempt; anything else will not.
      const transient = failure.code === "UNAVAILABLE" || failure.code === "RESOURCE_EXHAUSTED";
      if (!transient || attempt >= bootAttemptsMax) {
        ctx.logger.warn({ volumeId, attempt, code: failure.code, reason: failure.message }, "cannot open boot volume");
        return { ok: false, reason: reasonOf(failure) };
      }
      ctx.logger.debug({ volumeId, attempt, reason: failure.message }, "boot volume unreachable or busy; retrying");
      if (!(await pause(backoffDelayMs(bootBackoff, attempt, ctx.random), ctx.signal))) {
        return { ok: false, reason: null };
      }
    }
  }
}

async function readBootBlocks(bus: Bus, hostId: string, volumeId: string, blockCount: number): Promise<BootOutcome> {
  const { volume } = await bus.call(storageService.GetVolume, { volumeId }, { timeoutMs: bootCallTimeoutMs, source: hostId });
  // The controller's answer is input too: a bad node id would be a bad subject.
  const sanNodeId = checkName("volume.san_node_id", volume?.sanNodeId ?? "");
  const { data } = await bus.call(
    sanNodeService.ReadBlocks,
    { volumeId, lba: 0, blockCount },
    { scopeId: sanNodeId, timeoutMs: bootCallTimeoutMs, source: hostId },
  );
  return { ok: true, sanNodeId, bytesRead: data.length };
}
