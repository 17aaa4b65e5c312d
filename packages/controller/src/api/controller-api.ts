// ControllerService: which controller is active, at which epoch, and how the
// datacenter runs (seed, time scale, simulated now), for `simdc status`.

import { controllerService, endpoint, type Endpoint } from "@simdc/bus";
import { simdc } from "@simdc/proto";
import type { ControllerState } from "../state.js";

import v1 = simdc.v1;

export function controllerEndpoints(state: ControllerState, writesReverted: () => number): Endpoint<any, any>[] {
  return [
    endpoint(controllerService.GetControllerStatus, () => ({
      controllerId: state.controllerId,
      role: state.lease.isActive ? v1.ControllerRole.CONTROLLER_ROLE_ACTIVE : v1.ControllerRole.CONTROLLER_ROLE_STANDBY,
      lease: state.lease.current,
      stateId: state.stateId,
      seed: state.seed,
      timeScale: state.clock.timeScale,
      nowMs: state.clock.nowMs(),
      writesReverted: writesReverted(),
      messagesRefused: state.counters.refused,
    })),
  ];
}
