// The named limits and retry policies of a host agent, in one place so a
// reader can see every bound the agent enforces. Nothing here does I/O; the
// values are the defaults the code uses, not settings a user must know about.

/** Simulated hosts one agent process may hold (they share its service, its document watch and its heartbeat timer). */
export const hostsPerAgentMax = 1000;

/**
 * VMs one simulated host may hold (vSphere 7's maximum per host); bounds the
 * VM table and the heartbeat size, and is reported to the controller's placement.
 */
export const vmsPerHostMax = 1024;

/** vCPUs one VM may ask for. Capacity accounting is the controller's; this only refuses nonsense. */
export const vcpusPerVmMax = 128;

/** Memory one VM may ask for, in MiB (4 TiB). */
export const memoryMibPerVmMax = 4_194_304;

/** Largest boot read, in blocks. */
export const bootBlocksMax = 1_024;

/** Bounds on the heartbeat interval the controller may ask for, in ms. */
export const heartbeatIntervalMsMin = 50;
export const heartbeatIntervalMsMax = 60_000;

/** Heartbeat slots per interval: the agent's timer fires this often per interval and beats one slot's hosts. */
export const heartbeatSlotsMax = 50;

/**
 * How long one RegisterHost call may take before it counts as lost, in ms:
 * generous, since a controller registering thousands of hosts at once
 * answers late, and a retry that comes too soon only adds to its load.
 */
export const registerCallTimeoutMs = 10_000;

/** Retry delays between RegisterHost attempts: doubling from initialMs, capped at maxMs. */
export const registerBackoff = { initialMs: 500, maxMs: 10_000 } as const;

/** How long a boot call (GetVolume, ReadBlocks) may take, in ms. */
export const bootCallTimeoutMs = 2_000;

/** Attempts at opening a boot volume while a peer answers UNAVAILABLE, before the VM fails. */
export const bootAttemptsMax = 4;

/** Retry delays between boot attempts. */
export const bootBackoff = { initialMs: 100, maxMs: 2_000 } as const;
