// One host's hypervisor as the agent runs it: the pure CPU scheduler, memory
// manager and guest workloads of @simdc/hypervisor, stepped together on the
// simulated clock, with the samples esxtop would show and a bounded ring of
// the host's past samples. It decides nothing about placement and talks to
// no one: the host publishes what it reports.

import { hashText, type Rng } from "@simdc/common";
import {
  CpuScheduler,
  MemoryManager,
  Workload,
  type Coscheduling,
  type CpuSharesPreset,
  type CpuTimes,
  type MemoryEvent,
  type MemorySharesPreset,
  type ShareSalting,
  type WorkloadSpec,
} from "@simdc/hypervisor";
import { simdc } from "@simdc/proto";

import v1 = simdc.v1;

/** How a host's hypervisor is built (the agent's flags). */
export interface HypervisorSettings {
  cores: number;
  threadsPerCore: 1 | 2;
  coreMhz: number;
  memoryMib: number;
  quantumMs: number;
  coscheduling: Coscheduling;
  /** A hosted (type 2) hypervisor's cost on every vCPU; 0 for bare metal. */
  hostedOverheadPct: number;
  vcpusPerCoreMax: number;
  salting: ShareSalting;
  /** Simulated time a step covers (10 Hz: 100 ms). */
  stepMs: number;
  /** The window of a sample (esxtop's default delay: 5 s). */
  sampleMs: number;
  /** Host samples the ring keeps. */
  historySamples: number;
  /** Samples each VM's ring keeps (a few KiB a VM). */
  vmHistorySamples: number;
}

/** A VM's allocation and workload, checked at the document's edge. */
export interface VmResources {
  cpuShares: CpuSharesPreset | number;
  cpuReservationMhz: number;
  /** Undefined: unlimited. */
  cpuLimitMhz: number | undefined;
  memoryShares: MemorySharesPreset | number;
  memoryReservationMib: number;
  workload: WorkloadSpec;
  /** The OS image whose pages VMs can share. */
  image: string | undefined;
  /** sched.mem.pshare.salt; undefined: the VM's own. */
  shareSalt: string | undefined;
}

/** The size an image's pages take in a guest when nothing says otherwise (a Windows image, as the VDI profile). */
const imageMibDefault = 1024;

interface Guest {
  id: string;
  workload: Workload;
  workloadKey: string;
  vcpus: number;
  memoryMib: number;
  /** CPU totals at the last sample, to take the next window's differences (each vCPU's ready time too). */
  sampledCpu: CpuTimes;
  sampledVcpuReadyMs: Float64Array;
  stats: v1.VmStats | null;
  /** Past samples: historyFields numbers each, oldest at historyHead once the ring is full. */
  history: Float32Array;
  historyAtMs: Float64Array;
  historyCount: number;
  historyHead: number;
}

/** The VmStats numbers a VM's ring keeps, in order (per-vCPU figures are left out). */
const historyFields = [
  "usedPct",
  "runPct",
  "readyPct",
  "costopPct",
  "maxLimitedPct",
  "swapWaitPct",
  "lostWorkPct",
  "grantedMib",
  "consumedMib",
  "activeMib",
  "sharedMib",
  "balloonMib",
  "compressedMib",
  "swappedMib",
  "overheadMib",
] as const satisfies readonly (keyof v1.IVmStats)[];

const zeroTimes = (): CpuTimes => ({ runMs: 0, usedMs: 0, readyMs: 0, coStopMs: 0, maxLimitedMs: 0, swapWaitMs: 0, idleMs: 0, workWantedMs: 0, workGotMs: 0 });

export class HostHypervisor {
  readonly cpu: CpuScheduler;
  readonly memory: MemoryManager;
  private readonly guests = new Map<string, Guest>();
  private readonly history: v1.HostStats[] = [];
  private latest: v1.HostStats | null = null;
  private sinceSampleMs = 0;
  private hostSampledCpu: CpuTimes = zeroTimes();

  constructor(
    private readonly settings: HypervisorSettings,
    private readonly rng: Rng,
  ) {
    this.cpu = new CpuScheduler({
      cores: settings.cores,
      threadsPerCore: settings.threadsPerCore,
      coreMhz: settings.coreMhz,
      quantumMs: settings.quantumMs,
      coscheduling: settings.coscheduling,
      hostedOverheadPct: settings.hostedOverheadPct,
      vcpusPerCoreMax: settings.vcpusPerCoreMax,
    });
    this.memory = new MemoryManager({ memoryMb: settings.memoryMib, salting: settings.salting }, rng.derive("memory"));
  }

  /**
   * Admits a powered-on VM: its CPU and memory (admission control checks its
   * reservations and vCPUs) and its workload. Nothing changes on a refusal.
   * @throws SimdcError RESOURCE_EXHAUSTED (a reservation or the vCPU cap does
   * not fit), INVALID_ARGUMENT (more vCPUs than logical CPUs, a bad workload).
   */
  powerOn(vmId: string, vcpus: number, memoryMib: number, resources: VmResources): void {
    const workload = new Workload(resources.workload, vcpus, this.rng.derive(vmId));
    const image = resources.image ?? workload.image;
    this.cpu.addVm(vmId, { vcpus, shares: resources.cpuShares, reservationMhz: resources.cpuReservationMhz, ...(resources.cpuLimitMhz !== undefined ? { limitMhz: resources.cpuLimitMhz } : {}) });
    try {
      // Idempotent at one size: the first VM of an image defines it.
      if (image) this.memory.defineImage(image, imageMibDefault);
      this.memory.addVm(vmId, {
        memoryMb: memoryMib,
        reservationMb: resources.memoryReservationMib,
        shares: resources.memoryShares,
        vcpus,
        ...(image ? { imageId: image, imageMb: Math.min(imageMibDefault, memoryMib / 2) } : {}),
        ...(resources.shareSalt !== undefined ? { salt: saltOf(resources.shareSalt) } : {}),
      });
    } catch (err) {
      this.cpu.removeVm(vmId);
      throw err;
    }
    this.guests.set(vmId, { id: vmId, workload, workloadKey: JSON.stringify(resources.workload), vcpus, memoryMib, sampledCpu: zeroTimes(), sampledVcpuReadyMs: new Float64Array(vcpus),
      stats: null,
      history: new Float32Array(this.settings.vmHistorySamples * historyFields.length),
      historyAtMs: new Float64Array(this.settings.vmHistorySamples),
      historyCount: 0,
      historyHead: 0,
    });
  }

  /**
   * Applies a running VM's new allocation and workload (a new workload starts
   * from its first phase). Nothing changes on a refusal.
   * @throws SimdcError as powerOn.
   */
  update(vmId: string, resources: VmResources): void {
    const guest = this.guests.get(vmId);
    if (!guest) return;
    const workloadKey = JSON.stringify(resources.workload);
    const workload = workloadKey === guest.workloadKey ? guest.workload : new Workload(resources.workload, guest.vcpus, this.rng.derive(`${vmId}/${workloadKey}`));
    const before = this.cpu.settings(vmId);
    this.cpu.updateVm(vmId, { shares: resources.cpuShares, reservationMhz: resources.cpuReservationMhz, ...(resources.cpuLimitMhz !== undefined ? { limitMhz: resources.cpuLimitMhz } : {}) });
    try {
      this.memory.updateVm(vmId, { reservationMb: resources.memoryReservationMib, shares: resources.memoryShares, ...(resources.shareSalt !== undefined ? { salt: saltOf(resources.shareSalt) } : {}) });
    } catch (err) {
      this.cpu.updateVm(vmId, { shares: before.shares, reservationMhz: before.reservationMhz, ...(before.limitMhz !== undefined ? { limitMhz: before.limitMhz } : {}) });
      throw err;
    }
    guest.workload = workload;
    guest.workloadKey = workloadKey;
  }

  /** The VM stopped: its CPU, memory and workload are gone. */
  powerOff(vmId: string): void {
    if (!this.guests.delete(vmId)) return;
    this.cpu.removeVm(vmId);
    this.memory.removeVm(vmId);
  }

  has(vmId: string): boolean {
    return this.guests.has(vmId);
  }

  /** Memory taken outside the VMs (the memory pressure fault). */
  setPressure(pressureMib: number): void {
    this.memory.setPressureMb(pressureMib);
  }

  /**
   * A step of simulated time (one step's by default): the workloads say what
   * they want, memory reclaims and stalls, the scheduler hands out CPU with
   * the stalls counted.
   * @returns what memory saw change (state changes for events).
   */
  step(nowMs: number, dtMs = this.settings.stepMs): readonly MemoryEvent[] {
    // Over the values, not the entries: no array a guest a step on the hot path.
    for (const guest of this.guests.values()) {
      const sample = guest.workload.step(dtMs);
      this.cpu.setDemand(guest.id, sample.cpuDemand);
      this.memory.setGuestActivity(guest.id, sample);
    }
    const events = this.memory.step(dtMs);
    for (const guest of this.guests.values()) this.cpu.setSwapWait(guest.id, this.memory.swapWaitFraction(guest.id));
    this.cpu.step(dtMs);
    this.sinceSampleMs += dtMs;
    if (this.sinceSampleMs >= this.settings.sampleMs) this.sample(nowMs);
    return events;
  }

  /** Closes a sample window: each VM's percentages over it, the host's, and the host's into the ring. */
  private sample(nowMs: number): void {
    const windowMs = this.sinceSampleMs;
    this.sinceSampleMs = 0;
    for (const [id, guest] of this.guests) {
      const cpu = this.cpu.vmCounters(id);
      const mem = this.memory.vmCounters(id);
      const d = difference(cpu.total, guest.sampledCpu);
      guest.sampledCpu = { ...cpu.total };
      const pct = (ms: number): number => round((ms / windowMs) * 100);
      guest.stats = v1.VmStats.create({
        vmId: id,
        vcpus: guest.vcpus,
        sampledAtMs: nowMs,
        usedPct: pct(d.usedMs),
        runPct: pct(d.runMs),
        readyPct: pct(d.readyMs),
        costopPct: pct(d.coStopMs),
        maxLimitedPct: pct(d.maxLimitedMs),
        swapWaitPct: pct(d.swapWaitMs),
        lostWorkPct: d.workWantedMs > 0 ? round(Math.max(0, 1 - d.workGotMs / d.workWantedMs) * 100) : 0,
        grantedMib: round(mem.grantedMb),
        consumedMib: round(mem.consumedMb),
        activeMib: round(mem.activeMb),
        sharedMib: round(mem.sharedMb),
        balloonMib: round(mem.balloonMb),
        compressedMib: round(mem.compressedMb),
        swappedMib: round(mem.swappedMb),
        overheadMib: round(mem.overheadMb),
        workload: guest.workload.sample.phase,
        vcpuReadyPct: cpu.perVcpu.map((v, i) => pct(v.total.readyMs - guest.sampledVcpuReadyMs[i]!)),
      });
      cpu.perVcpu.forEach((v, i) => (guest.sampledVcpuReadyMs[i] = v.total.readyMs));
      this.remember(guest, guest.stats);
    }
    const host = this.cpu.hostCounters();
    const d = difference(host.total, this.hostSampledCpu);
    this.hostSampledCpu = { ...host.total };
    const mem = this.memory.hostCounters();
    this.latest = v1.HostStats.create({
      sampledAtMs: nowMs,
      windowMs,
      cores: host.cores,
      logicalCpus: host.logicalCpus,
      vcpus: host.vcpus,
      utilizationPct: round((d.usedMs / (host.cores * windowMs)) * 100),
      vcpuRatio: round(host.vcpusPerCore),
      memoryState: mem.state,
      memoryMib: mem.memoryMb,
      freeMib: round(mem.freeMb),
      minFreeMib: round(mem.minFreeMb),
      overcommitRatio: round(mem.overcommitRatio),
      sharedSavedMib: round(mem.sharingSavingsMb),
      sharedSavedBetweenVmsMib: round(mem.interVmSharingSavingsMb),
      balloonMib: round(mem.balloonMb),
      compressedMib: round(mem.compressedMb),
      swappedMib: round(mem.swappedMb),
      pressureMib: round(mem.pressureMb),
    });
    this.history.push(this.latest);
    if (this.history.length > this.settings.historySamples) this.history.shift();
  }

  /** Writes a VM's sample into its ring, over the oldest when full. */
  private remember(guest: Guest, stats: v1.VmStats): void {
    const slots = this.settings.vmHistorySamples;
    const slot = (guest.historyHead + guest.historyCount) % slots;
    historyFields.forEach((field, i) => (guest.history[slot * historyFields.length + i] = stats[field]));
    guest.historyAtMs[slot] = stats.sampledAtMs;
    if (guest.historyCount < slots) guest.historyCount += 1;
    else guest.historyHead = (guest.historyHead + 1) % slots;
  }

  /** A VM's past samples, oldest first (empty for a VM the host does not run). */
  vmHistory(vmId: string): v1.VmStats[] {
    const guest = this.guests.get(vmId);
    if (!guest) return [];
    const slots = this.settings.vmHistorySamples;
    const out: v1.VmStats[] = [];
    for (let n = 0; n < guest.historyCount; n++) {
      const slot = (guest.historyHead + n) % slots;
      const sample = v1.VmStats.create({ vmId, vcpus: guest.vcpus, sampledAtMs: guest.historyAtMs[slot]! });
      historyFields.forEach((field, i) => (sample[field] = round(guest.history[slot * historyFields.length + i]!)));
      out.push(sample);
    }
    return out;
  }

  /** The last sample of the host (null before the first window closed). */
  hostStats(): v1.HostStats | null {
    return this.latest;
  }

  /** The last sample of each VM that has one. */
  vmStats(): v1.VmStats[] {
    const out: v1.VmStats[] = [];
    for (const guest of this.guests.values()) if (guest.stats) out.push(guest.stats);
    return out;
  }

  /** The host's past samples, oldest first. */
  hostHistory(): readonly v1.HostStats[] {
    return this.history;
  }
}

function difference(now: CpuTimes, before: CpuTimes): CpuTimes {
  return {
    runMs: now.runMs - before.runMs,
    usedMs: now.usedMs - before.usedMs,
    readyMs: now.readyMs - before.readyMs,
    coStopMs: now.coStopMs - before.coStopMs,
    maxLimitedMs: now.maxLimitedMs - before.maxLimitedMs,
    swapWaitMs: now.swapWaitMs - before.swapWaitMs,
    idleMs: now.idleMs - before.idleMs,
    workWantedMs: now.workWantedMs - before.workWantedMs,
    workGotMs: now.workGotMs - before.workGotMs,
  };
}

/** Two decimals: what a sample shows, and no more bytes on the wire than it needs. */
function round(value: number): number {
  return Math.round(value * 100) / 100;
}

/** A salt as the memory manager keys sharing by it: "0" is legacy sharing's 0, any other text its hash. */
function saltOf(text: string): number {
  return /^\d+$/.test(text) ? Number(text) % 0x1_0000_0000 : hashText(text);
}
