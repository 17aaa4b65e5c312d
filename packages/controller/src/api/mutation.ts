// What every changing call shares: only the active controller changes
// anything; a request id makes a retried or duplicated request return the
// first answer; the answer goes out only once the lease is confirmed (a
// deposed controller never acknowledges); and the caller may wait until the
// hosts' documents carry the change, or until every live host realized it.

import { type Input, type RpcMethod } from "@simdc/bus";
import { deadlineExceeded, invalidArgument, type Timer } from "@simdc/common";
import { simdc } from "@simdc/proto";
import { checkRequestId, fingerprintOf } from "../store/request-log.js";
import type { ControllerState } from "../state.js";
import { decodeMessage, encodeMessage } from "@simdc/bus";

import v1 = simdc.v1;

/** Default and largest wait of a changing call, in simulated ms. */
export const waitTimeoutMsDefault = 30_000;
export const waitTimeoutMsMax = 600_000;

export interface Outcome<Res> {
  response: Input<Res>;
  /** Hosts whose documents the change alters (what --wait waits for). */
  hosts: string[];
  /** Security groups whose documents the change alters (waited for as hosts are). */
  groups?: string[];
}

interface Mutating {
  mutation?: v1.IMutation | null;
}

interface Resulting {
  result?: v1.IMutationResult | null;
}

function checkWait(wait: number | null | undefined): v1.WaitFor {
  switch (wait ?? 0) {
    case v1.WaitFor.WAIT_FOR_UNSPECIFIED:
    case v1.WaitFor.WAIT_FOR_NONE:
      return v1.WaitFor.WAIT_FOR_NONE;
    case v1.WaitFor.WAIT_FOR_CONTROLLER:
      return v1.WaitFor.WAIT_FOR_CONTROLLER;
    case v1.WaitFor.WAIT_FOR_HOSTS:
      return v1.WaitFor.WAIT_FOR_HOSTS;
    default:
      throw invalidArgument(`mutation.wait ${wait} is not a known WaitFor`);
  }
}

/**
 * Runs a changing call.
 * @param execute makes the change and says which hosts it concerns.
 * @param replayed the answer to give when a stored record shows `requestId`
 * already made its change (the request's own answer was lost in a crash).
 * @throws what `execute` throws; UNAVAILABLE when this controller is not (or
 * no longer) active; DEADLINE_EXCEEDED when the wait runs out.
 */
export async function mutate<Req extends Mutating, Res extends Resulting>(
  state: ControllerState,
  method: RpcMethod<Req, Res>,
  request: Req,
  execute: (requestId: string) => Promise<Outcome<Res>>,
  replayed: (requestId: string) => Input<Res> | undefined,
): Promise<Input<Res>> {
  state.lease.requireActive();
  const requestId = checkRequestId(request.mutation?.requestId ?? "");
  const wait = checkWait(request.mutation?.wait);
  const timeoutMs = Math.min(request.mutation?.waitTimeoutMs || waitTimeoutMsDefault, waitTimeoutMsMax);
  if (!requestId) return finish(state, await execute(""), wait, timeoutMs);
  const fingerprint = fingerprintOf(method.request, request);
  const joined = state.requests.joinable(requestId, fingerprint);
  if (joined) return asReplay((await joined) as Input<Res>);
  const stored = state.requests.answer(requestId, method.rpc, fingerprint);
  if (stored) return asReplay(decodeMessage(method.response, stored) as Input<Res>);
  const embedded = replayed(requestId);
  if (embedded) return asReplay(embedded);
  const run = (async () => {
    const outcome = await execute(requestId);
    try {
      await state.requests.remember(requestId, method.rpc, fingerprint, encodeMessage(method.response, outcome.response));
      state.crash.reach("answer-stored");
    } catch (err) {
      // The record of the change carries the request id too, so a retry still finds it.
      state.logger.warn({ requestId, err: String(err) }, "could not store the answer to a request");
    }
    return finish(state, outcome, wait, timeoutMs);
  })();
  state.requests.track(requestId, fingerprint, run);
  return run;
}

function asReplay<Res extends Resulting>(response: Input<Res>): Input<Res> {
  return { ...response, result: { ...(response.result ?? {}), replayed: true } } as Input<Res>;
}

async function finish<Res extends Resulting>(state: ControllerState, outcome: Outcome<Res>, wait: v1.WaitFor, timeoutMs: number): Promise<Input<Res>> {
  const groups = outcome.groups ?? [];
  const waits = wait !== v1.WaitFor.WAIT_FOR_NONE && outcome.hosts.length + groups.length > 0;
  // The documents are written while the lease is confirmed, not after: a round trip less for every waiting call.
  const carried = waits
    ? withDeadline(state, Promise.all([...outcome.hosts.map((h) => state.documents.whenCarried(h)), ...groups.map((g) => state.groupDocuments.whenCarried(g))]), timeoutMs)
    : null;
  // Awaited below unless the confirmation fails first: its failure must not go unhandled then.
  carried?.catch(() => undefined);
  await state.lease.confirm();
  state.crash.reach("before-answer");
  let configGeneration = 0;
  if (carried) {
    configGeneration = Math.max(0, ...(await carried));
    if (wait === v1.WaitFor.WAIT_FOR_HOSTS) await state.sync.waitRealized(configGeneration, timeoutMs);
  }
  return { ...outcome.response, result: { configGeneration, replayed: false } } as Input<Res>;
}

function withDeadline<T>(state: ControllerState, work: Promise<T>, timeoutMs: number): Promise<T> {
  let timer: Timer | null = null;
  const deadline = new Promise<never>((_, reject) => {
    timer = state.clock.after(timeoutMs, () => reject(deadlineExceeded(`the change was made, but the host documents were not written within ${timeoutMs} ms`)));
  });
  return Promise.race([work, deadline]).finally(() => (timer as Timer | null)?.cancel());
}
