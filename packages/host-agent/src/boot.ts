// Opens a VM's boot volume the way a real host would: read the first blocks
// from the SAN node its document says holds the volume. The host never needs
// the controller to boot. It retries peers that are UNAVAILABLE a bounded
// number of times and turns every other outcome into a failure reason; it
// never changes VM state itself.

import { sanNodeService, type Bus } from "@simdc/bus";
import { toSimdcError, type Clock, type Logger, type SimdcError } from "@simdc/common";
import { simdc } from "@simdc/proto";
import { bootAttemptsMax, bootBackoff, bootCallTimeoutMs } from "./limits.js";
import { backoffDelayMs } from "./timing.js";
import type { BootLocation } from "./validate.js";

import v1 = simdc.v1;

/** A failure reason as VmStatus carries it. */
export interface FailureReason {
  code: v1.ErrorCode;
  message: string;
}

/** How opening a boot volume ended. */
export type BootOutcome =
  | { ok: true; bytesRead: number }
  | { ok: false; reason: FailureReason }
  /** The VM or its host went away while booting; nobody wants the result. */
  | { ok: false; reason: null };

export interface BootContext {
  bus: Bus;
  /** The host that boots: the sender fault rules see. */
  hostId: string;
  logger: Logger;
  clock: Clock;
  /** Aborted when the VM is removed or its host stops. */
  signal: AbortSignal;
  random: () => number;
  /**
   * How long transient failures (a node unreachable or busy) are retried,
   * as a hypervisor keeps retrying I/O to a datastore whose paths are down
   * until its timeout; at least bootAttemptsMax attempts are made.
   */
  retryForMs: number;
}

/** Maps a typed error to the proto enum that statuses carry. */
export function reasonOf(err: SimdcError): FailureReason {
  return { code: v1.ErrorCode[`ERROR_CODE_${err.code}`], message: err.message };
}

/**
 * Reads blocks [0, blockCount) of the boot volume from its SAN node.
 * @returns ok with the bytes read; or a failure reason: NOT_FOUND "boot
 * volume <id> not found" when the controller did not know the volume or the
 * node does not hold it, UNAVAILABLE (or RESOURCE_EXHAUSTED) after
 * retrying an unreachable (or busy) node for ctx.retryForMs (and at least
 * bootAttemptsMax attempts), any other code
 * as the node sent it. Never throws operating errors.
 */
export async function openBootVolume(ctx: BootContext, boot: BootLocation, blockCount: number): Promise<BootOutcome> {
  const notFound = { ok: false as const, reason: { code: v1.ErrorCode.ERROR_CODE_NOT_FOUND, message: `boot volume ${boot.volumeId} not found` } };
  if (!boot.sanNodeId) return notFound;
  const giveUpAtMs = ctx.clock.nowMs() + ctx.retryForMs;
  for (let attempt = 1; ; attempt++) {
    try {
      const { data } = await ctx.bus.call(
        sanNodeService.ReadBlocks,
        { volumeId: boot.volumeId, lba: 0, blockCount },
        { scopeId: boot.sanNodeId, timeoutMs: bootCallTimeoutMs, source: ctx.hostId },
      );
      return { ok: true, bytesRead: data.length };
    } catch (err) {
      if (ctx.signal.aborted) return { ok: false, reason: null };
      const failure = toSimdcError(err);
      if (failure.code === "NOT_FOUND") return notFound;
      // A peer that is gone or too busy may answer the next attempt; anything else will not.
      const transient = failure.code === "UNAVAILABLE" || failure.code === "RESOURCE_EXHAUSTED";
      if (!transient || (attempt >= bootAttemptsMax && ctx.clock.nowMs() >= giveUpAtMs)) {
        ctx.logger.warn({ volumeId: boot.volumeId, attempt, code: failure.code, reason: failure.message }, "cannot open boot volume");
        return { ok: false, reason: reasonOf(failure) };
      }
      ctx.logger.debug({ volumeId: boot.volumeId, attempt, reason: failure.message }, "boot volume unreachable or busy; retrying");
      if (!(await ctx.clock.sleep(backoffDelayMs(bootBackoff, attempt, ctx.random), ctx.signal))) return { ok: false, reason: null };
    }
  }
}
