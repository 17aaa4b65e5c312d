// Everything the controller's handlers and loops share, in one place, so the
// API modules take one argument and cannot reach around it.

import type { Bus } from "@simdc/bus";
import type { Clock, Logger, Rng } from "@simdc/common";
import { simdc } from "@simdc/proto";
import type { GroupDocuments } from "./compile/group-documents.js";
import type { HostDocuments } from "./compile/host-documents.js";
import type { CrashPoints } from "./crash-points.js";
import type { EventPublisher } from "./events.js";
import type { Lease } from "./lease/lease.js";
import type { ObservedVms } from "./observe/observed-vms.js";
import type { HostRanking } from "./placement/host-ranking.js";
import type { OvercommitRatios } from "./placement/placement.js";
import type { VolumeReconciler } from "./reconcile/volume-reconciler.js";
import type { MemberRegistry } from "./registry/member-registry.js";
import type { VmStore, VolumeStore } from "./store/kinds.js";
import type { RequestLog } from "./store/request-log.js";
import type { HostSync } from "./sync/host-sync.js";

import type { Networks } from "./network/networks.js";
import type { SecurityGroups } from "./network/security-groups.js";
import type { ExternalEndpoints } from "./network/external.js";
import type { Routers } from "./network/routers.js";
import type { LogicalPorts } from "./network/logical-ports.js";
import v1 = simdc.v1;

/** Counters a status shows. */
export interface ControllerCounters {
  /** Messages refused: stale boot ids, generations from the future, taken ids, spoofed ids. */
  refused: number;
  /** Packet-ins from reactive networks answered, and flows sent back. */
  packetIns: number;
  flowMods: number;
}

export interface ControllerState {
  controllerId: string;
  bus: Bus;
  clock: Clock;
  logger: Logger;
  events: EventPublisher;
  ratios: OvercommitRatios;
  heartbeatIntervalMs: number;
  heartbeatMissesMax: number;
  metricsIntervalMs: number;
  seed: number;
  lease: Lease;
  /** The incarnation of the stored datacenter state (see DatacenterState). */
  stateId: string;
  hosts: MemberRegistry<v1.Host>;
  sanNodes: MemberRegistry<v1.SanNode>;
  vms: VmStore;
  volumes: VolumeStore;
  networks: Networks;
  securityGroups: SecurityGroups;
  endpoints: ExternalEndpoints;
  routers: Routers;
  /** Every VM NIC, by network and host, with the addresses they hold. */
  ports: LogicalPorts;
  /** A host's share of the networks; with allProactive, reactive networks' known-MAC flows too (to answer packet-ins). */
  compileNetwork(hostId: string, allProactive?: boolean): v1.HostNetwork | undefined;
  /** Draws new NICs' MACs, from the run's seed. */
  macRandom: Rng;
  requests: RequestLog;
  documents: HostDocuments;
  /** The security groups' documents, which hosts expand for their NICs. */
  groupDocuments: GroupDocuments;
  sync: HostSync;
  observed: ObservedVms;
  ranking: HostRanking;
  /** Each host's last hypervisor sample (its metrics), for placement by measured demand. */
  measured: Map<string, v1.IHostStats>;
  volumeReconciler: VolumeReconciler;
  counters: ControllerCounters;
  crash: CrashPoints;
}
