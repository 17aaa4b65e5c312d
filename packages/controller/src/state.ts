// Everything the controller's handlers and loops share, in one place, so the
// API modules take one argument and cannot reach around it.

import type { Bus } from "@simdc/bus";
import type { Clock, Logger } from "@simdc/common";
import { simdc } from "@simdc/proto";
import type { EventPublisher } from "./events.js";
import type { OvercommitRatios } from "./placement/placement.js";
import type { VmReconciler } from "./reconcile/vm-reconciler.js";
import type { MemberRegistry } from "./registry/member-registry.js";
import type { DesiredStore } from "./store/desired-store.js";
import type { HostAllocation, SanAllocation } from "./store/kinds.js";
import type { ObservedVms } from "./store/observed-vms.js";

import v1 = simdc.v1;

export interface ControllerState {
  bus: Bus;
  clock: Clock;
  logger: Logger;
  events: EventPublisher;
  ratios: OvercommitRatios;
  heartbeatIntervalMs: number;
  heartbeatMissesMax: number;
  hosts: MemberRegistry<v1.Host>;
  sanNodes: MemberRegistry<v1.SanNode>;
  vms: DesiredStore<v1.Vm, HostAllocation>;
  volumes: DesiredStore<v1.Volume, SanAllocation>;
  observed: ObservedVms;
  reconciler: VmReconciler;
}
