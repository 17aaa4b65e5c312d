// The logical ports of the datacenter: every NIC of every live VM, indexed by
// network and by host, with the MACs and addresses they hold. New NICs get
// their MAC and IP here, checked against everything held and everything a
// create in flight has taken, so two concurrent creates never share one.
// Tells the SDN compiler which hosts a change of a VM's ports concerns: the
// hosts with a port on any network the VM joins or leaves.

import { checkName, invalidArgument, notFound, alreadyExists } from "@simdc/common";
import { simdc } from "@simdc/proto";
import type { Entry } from "../store/fenced-store.js";
import type { VmStore } from "../store/kinds.js";
import { allocateIp, allocateMac, contains, gatewayOf, ipToNumber, numberToIp, parseCidr } from "./ipam.js";
import type { Networks } from "./networks.js";
import type { SecurityGroups } from "./security-groups.js";

import v1 = simdc.v1;

/** NICs a VM may have (eth0-eth7). */
export const nicsPerVmMax = 8;

export interface LogicalPort {
  vmId: string;
  /** Its place among the VM's NICs (eth<index>). */
  index: number;
  hostId: string;
  networkId: string;
  mac: string;
  ip: string;
  /** Its port on the host's vswitch (0: none given yet, as in records from before ports were kept). */
  ofport: number;
  /** The security groups whose rules admit its inbound traffic (none: no filter). */
  securityGroups: string[];
}

const unicastMac = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

export class LogicalPorts {
  private readonly byVm = new Map<string, LogicalPort[]>();
  private readonly byNetwork = new Map<string, Set<LogicalPort>>();
  private readonly byHost = new Map<string, Set<LogicalPort>>();
  private readonly macs = new Set<string>();
  /** Addresses held per network. */
  private readonly ips = new Map<string, Set<number>>();
  /** Ports taken by creates whose records are not written yet, per host. */
  private readonly ofportsHeld = new Map<string, Set<number>>();
  private readonly listeners: ((hostIds: Set<string>) => void)[] = [];

  /** @param routedWith the other networks a network's VMs route to (a change of its ports concerns their hosts too). */
  constructor(
    vms: VmStore,
    private readonly routedWith: (networkId: string) => readonly string[] = () => [],
  ) {
    for (const [id, entry] of vms.records.all()) this.set(id, entry);
    vms.records.onChange((id, _before, after) => this.set(id, after));
  }

  /** Told which hosts' network share changed when a VM's ports change. */
  onHostsChanged(listener: (hostIds: Set<string>) => void): void {
    this.listeners.push(listener);
  }

  onNetwork(networkId: string): ReadonlySet<LogicalPort> {
    return this.byNetwork.get(networkId) ?? new Set();
  }

  onHost(hostId: string): ReadonlySet<LogicalPort> {
    return this.byHost.get(hostId) ?? new Set();
  }

  /** Hosts with a port on the network. */
  hostsOn(networkId: string): Set<string> {
    const out = new Set<string>();
    for (const port of this.onNetwork(networkId)) out.add(port.hostId);
    return out;
  }

  /** Hosts with a NIC in the security group. */
  hostsInGroup(groupId: string): Set<string> {
    const out = new Set<string>();
    for (const ports of this.byVm.values()) for (const port of ports) if (port.securityGroups.includes(groupId)) out.add(port.hostId);
    return out;
  }

  /** The security groups the host's NICs use. */
  groupsOnHost(hostId: string): Set<string> {
    const out = new Set<string>();
    for (const port of this.onHost(hostId)) for (const groupId of port.securityGroups) out.add(groupId);
    return out;
  }

  /** The NICs in the security group. */
  inGroup(groupId: string): LogicalPort[] {
    return [...this.byVm.values()].flat().filter((p) => p.securityGroups.includes(groupId));
  }

  /**
   * Checks a VM's NICs and gives each its MAC and IP (kept when given and
   * free), holding them until `release` (the record is written or the create
   * failed).
   * @param replacing the NIC the one given replaces in place (its MAC, address and port are its own to keep).
   * @param at how errors name the i-th NIC.
   * @throws SimdcError INVALID_ARGUMENT for a bad MAC or IP, NOT_FOUND for a
   * network or security group that does not exist, ALREADY_EXISTS for a MAC
   * or IP in use, RESOURCE_EXHAUSTED when a network has no address left.
   */
  assign(
    vmId: string,
    hostId: string,
    nics: v1.INicSpec[],
    networks: Networks,
    securityGroups: SecurityGroups,
    nextRandom: () => number,
    replacing?: v1.INicSpec,
    at: (i: number) => string = (i) => `nics[${i}]`,
  ): { nics: v1.NicSpec[]; release: () => void } {
    if (nics.length > nicsPerVmMax) throw invalidArgument(`a VM has at most ${nicsPerVmMax} NICs`);
    // Ports: the lowest the host's NICs and the creates in flight on it leave free; a NIC changed in place keeps its own.
    const taken = new Set<number>([...this.onHost(hostId)].map((p) => p.ofport));
    for (const held of this.ofportsHeld.get(hostId) ?? []) taken.add(held);
    const ofports: number[] = replacing ? [replacing.ofport ?? 0] : [];
    for (let ofport = 1; ofports.length < nics.length; ofport++) if (!taken.has(ofport)) ofports.push(ofport);
    const takenMacs: string[] = [];
    const takenIps: [string, number][] = [];
    const out: v1.NicSpec[] = [];
    for (const [i, nic] of nics.entries()) {
      const networkId = checkName(`${at(i)}.network`, nic.network ?? "");
      const network = networks.get(networkId)?.network;
      if (!network) throw notFound(`${at(i)}: network ${networkId} does not exist`);
      const groups = securityGroups.checkNicGroups(nic.securityGroups ?? [], at(i));
      // In use: anywhere, or by an earlier NIC of this call; a NIC changed in place may keep what it has.
      // (Asked of the sets as they are: a copy of every MAC a NIC made creating VMs quadratic.)
      const keptMac = replacing ? (replacing.mac ?? "") : undefined;
      const macs = { has: (m: string) => m !== keptMac && (this.macs.has(m) || takenMacs.includes(m)) };
      let mac = (nic.mac ?? "").toLowerCase();
      if (mac) {
        if (!unicastMac.test(mac) || (parseInt(mac.slice(0, 2), 16) & 1) !== 0) throw invalidArgument(`${at(i)}.mac ${JSON.stringify(nic.mac)} is not a unicast MAC like 02:00:00:00:00:01`);
        if (macs.has(mac)) throw alreadyExists(`${at(i)}: MAC ${mac} is in use`);
      } else mac = allocateMac(macs, nextRandom);
      const onNetwork = this.ips.get(networkId);
      const keptIp = replacing?.network === networkId && replacing.ip ? ipToNumber(replacing.ip) : undefined;
      const used = { has: (a: number) => a !== keptIp && (onNetwork?.has(a) === true || takenIps.some(([net, taken]) => net === networkId && taken === a)) };
      const subnets = (network.subnets ?? []).map((s) => parseCidr(s.cidr ?? ""));
      let ip: number;
      if (nic.ip) {
        ip = ipToNumber(nic.ip);
        const subnet = subnets.find((c) => contains(c, ip));
        if (!subnet) throw invalidArgument(`${at(i)}.ip ${nic.ip} is in none of network ${networkId}'s subnets`);
        const broadcast = subnet.base + 2 ** (32 - subnet.prefix) - 1;
        if (ip === subnet.base || ip === broadcast || ip === gatewayOf(subnet)) throw invalidArgument(`${at(i)}.ip ${nic.ip} is the subnet's network, gateway or broadcast address`);
        if (used.has(ip)) throw alreadyExists(`${at(i)}: ${nic.ip} is in use on network ${networkId}`);
      } else {
        let found: number | undefined;
        let lastError: unknown;
        for (const c of subnets) {
          try {
            found = allocateIp(c, used);
            break;
          } catch (err) {
            lastError = err;
          }
        }
        if (found === undefined) throw lastError;
        ip = found;
      }
      takenMacs.push(mac);
      takenIps.push([networkId, ip]);
      out.push(v1.NicSpec.create({ network: networkId, mac, ip: numberToIp(ip), ofport: ofports[i]!, securityGroups: groups }));
    }
    for (const mac of takenMacs) this.macs.add(mac);
    for (const [net, ip] of takenIps) this.ipsOf(net).add(ip);
    let held = this.ofportsHeld.get(hostId);
    if (!held) this.ofportsHeld.set(hostId, (held = new Set()));
    for (const ofport of ofports) held.add(ofport);
    return {
      nics: out,
      release: () => {
        // What the written record holds stays (it was indexed from the record); the rest is freed.
        const held = this.byVm.get(vmId) ?? [];
        for (const mac of takenMacs) if (!held.some((p) => p.mac === mac)) this.macs.delete(mac);
        for (const [net, ip] of takenIps) if (!held.some((p) => p.networkId === net && ipToNumber(p.ip) === ip)) this.ips.get(net)?.delete(ip);
        const onHost = this.ofportsHeld.get(hostId);
        for (const ofport of ofports) onHost?.delete(ofport);
        if (onHost?.size === 0) this.ofportsHeld.delete(hostId);
      },
    };
  }

  private ipsOf(networkId: string): Set<number> {
    let set = this.ips.get(networkId);
    if (!set) this.ips.set(networkId, (set = new Set()));
    return set;
  }

  private set(vmId: string, entry: Entry<v1.VmRecord> | undefined): void {
    const vm = entry && !entry.value.deleted ? entry.value.vm : undefined;
    const before = this.byVm.get(vmId) ?? [];
    const after: LogicalPort[] = (vm?.spec?.nics ?? []).map((nic, index) => ({
      vmId,
      index,
      hostId: vm?.hostId ?? "",
      networkId: nic.network ?? "",
      mac: nic.mac ?? "",
      ip: nic.ip ?? "",
      ofport: nic.ofport ?? 0,
      securityGroups: nic.securityGroups ?? [],
    }));
    const same = before.length === after.length && before.every((p, i) => JSON.stringify(p) === JSON.stringify(after[i]));
    if (same) return;
    for (const port of before) {
      this.byNetwork.get(port.networkId)?.delete(port);
      this.byHost.get(port.hostId)?.delete(port);
      this.macs.delete(port.mac);
      this.ips.get(port.networkId)?.delete(ipToNumber(port.ip));
    }
    // The hosts that shared a network with the old ports, and those that share one with the new.
    const touched = new Set<string>();
    const networks = new Set<string>();
    for (const port of [...before, ...after]) {
      touched.add(port.hostId);
      networks.add(port.networkId);
    }
    if (after.length) this.byVm.set(vmId, after);
    else this.byVm.delete(vmId);
    for (const port of after) {
      let onNet = this.byNetwork.get(port.networkId);
      if (!onNet) this.byNetwork.set(port.networkId, (onNet = new Set()));
      onNet.add(port);
      let onHost = this.byHost.get(port.hostId);
      if (!onHost) this.byHost.set(port.hostId, (onHost = new Set()));
      onHost.add(port);
      this.macs.add(port.mac);
      if (port.ip) this.ipsOf(port.networkId).add(ipToNumber(port.ip));
    }
    for (const networkId of networks) {
      for (const host of this.hostsOn(networkId)) touched.add(host);
      for (const mate of this.routedWith(networkId)) for (const host of this.hostsOn(mate)) touched.add(host);
    }
    touched.delete("");
    for (const listener of this.listeners) listener(touched);
  }
}
