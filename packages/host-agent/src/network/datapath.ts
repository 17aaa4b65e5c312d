// One host's share of the SDN data plane: its vswitch with the flows the
// controller compiled, the VM NIC ports and the tunnels to other hosts, the
// local services the flows send packets to (DHCP and the ARP responder,
// answered here from what the controller pushed, as OVN's pinctrl does, so
// addressing goes on without the controller), and the guests' NIC stacks.
// A document's flows are applied as one step: the difference between what
// is installed and what is wanted, with no moment without flows.

import { failedPrecondition, invalidArgument, notFound, SimdcError, type Clock, type Logger, type Timer } from "@simdc/common";
import { simdc } from "@simdc/proto";
import { formatFlow, formatIp, formatMac, packetFields, packetWords, parseFlow, parsePacket, reactiveCookie, toWords, Vswitch, wordOffset, type FlowSpec, type Packet, type PacketWords, type Verdict } from "@simdc/vswitch";
import { ControllerLink, type FailMode } from "./controller-link.js";
import { GuestNic } from "./guest.js";
import { ratePpsMax, Traffic } from "./traffic.js";
import { Uplink, type UplinkSpec } from "./uplink.js";
import {
  arp,
  ARP_REPLY,
  ARP_REQUEST,
  arpBytes,
  DHCP_CLIENT_PORT,
  DHCP_SERVER_PORT,
  dhcpBytes,
  DhcpType,
  DL_DST,
  DL_SRC,
  DL_TYPE,
  ETH_ARP,
  IN_PORT,
  ipv4,
  METADATA,
  NW_DST,
  NW_PROTO,
  NW_SRC,
  PROTO_UDP,
  sameSubnet,
  scratchFields,
  TP_DST,
  TP_SRC,
  TUN_ID,
  type DhcpMessage,
  type Payload,
} from "./packets.js";
import { noNetwork, type NetworkSection, type NicPort, type Tunnel } from "./section.js";

import v1 = simdc.v1;

const IN_PORT_WORD = wordOffset("in_port");
/** The words of the pipeline's scratch fields (metadata, registers, conntrack state): never carried across a tunnel. */
const scratchWords = ["metadata", ...Array.from({ length: 8 }, (_, i) => `reg${i}`), "ct_state", "ct_zone", "ct_mark"].flatMap((name) => {
  const at = wordOffset(name);
  return name === "metadata" ? [at, at + 1] : [at];
});

/** VXLAN over IPv4: outer Ethernet, IP, UDP and the VXLAN header (RFC 7348). */
export const overlayOverheadBytes = 50;
/** The underlay's MTU; an inner frame larger than this less the overhead does not fit. */
export const underlayMtuBytes = 1_500;
export const pingCountMax = 10_000;
/** Packet-ins to the controller a simulated second, at most (a burst of as many), as OVS's controller_rate_limit. */
export const packetInRatePerS = 100;
/** Packets held for one destination while its packet-in is answered; more are dropped. */
const packetInBufferMax = 32;
/** How often flows' idle and hard timeouts are checked, in simulated ms. */
export const flowExpiryCheckMs = 1_000;

export interface DatapathOptions {
  hostId: string;
  clock: Clock;
  /** Seeded, in [0, 1). */
  random: () => number;
  logger: Logger;
  /** Sends an encapsulated packet to another host's vswitch. @returns false when the underlay dropped it (its flow control). */
  tunnel(tunnel: Tunnel, headers: Uint32Array, payload: Payload, bytes: number): boolean;
  failMode: FailMode;
  inactivityProbeMs: number;
  /** One echo to the controller: true when the active one answered in time. */
  probe(timeoutMs: number): Promise<boolean>;
  /** A reactive network's table miss, to the controller: the flows it answers with (flow-mod). */
  packetIn(segment: number, dlSrc: string, dlDst: string): Promise<string[]>;
  /** The host's physical NICs: the first converged, the second (if any) dedicated. */
  uplinks: UplinkSpec[];
  /** A NIC dropped `count` packets since the last report (reported at most once a second a NIC). */
  nicDrops(nic: string, count: number): void;
  /** A section held back while the controller was lost is installed now (its controller answered again). */
  heldInstalled(): void;
}

interface PortCounters {
  rxPackets: number;
  txPackets: number;
  rxBytes: number;
  txBytes: number;
  drops: number;
}

/** The MAC the vswitch's DHCP server and ARP responder answer from, one per segment. */
function serverMac(segment: bigint): bigint {
  return 0x0a00_0000_0000n | (segment & 0xff_ffffn);
}

function nicName(port: NicPort): string {
  return `${port.vmId}.eth${port.nicIndex}`;
}

function tunnelName(tunnel: Tunnel): string {
  return `tun-${tunnel.hostId}`;
}

/** Whether two sections hold the very same flows, as the controller wrote them. */
function sameFlows(a: NetworkSection, b: NetworkSection): boolean {
  return a.flowTexts.length === b.flowTexts.length && a.flowTexts.every((t, i) => t === b.flowTexts[i]);
}

function sendsToConntrack(flow: FlowSpec): boolean {
  return flow.actions.some((a) => a.kind === "ct");
}

/** A flow's identity in its table: what add-flow would replace and del-flows --strict remove. */
/** Each parsed flow's table, priority and match as text, made once (the hosts of an agent share parsed flows). */
const flowKeys = new WeakMap<FlowSpec, string>();

function flowKey(flow: FlowSpec): string {
  let key = flowKeys.get(flow);
  if (key === undefined) {
    key = flowKeyOnce(flow);
    flowKeys.set(flow, key);
  }
  return key;
}

/** The same, not kept: a whole section compared at once (a host's first, or after hand edits) needs each only then. */
function flowKeyOnce(flow: FlowSpec): string {
  // Field by field: an installed flow reads its fields through getters, which a spread would not copy.
  const text = formatFlow({ table: flow.table, priority: flow.priority, idleTimeoutS: flow.idleTimeoutS, hardTimeoutS: flow.hardTimeoutS, match: flow.match, cookie: 0n, actions: [] });
  return text.slice(0, text.lastIndexOf(" actions="));
}

export class HostDatapath {
  readonly vswitch: Vswitch;
  private section: NetworkSection = noNetwork;
  private controllerTables = 0;
  private readonly nicPorts = new Map<number, NicPort>();
  private readonly nicByName = new Map<string, NicPort>();
  private readonly tunnelPorts = new Map<number, Tunnel>();
  private readonly tunnelByHost = new Map<string, Tunnel>();
  /** Guests' NICs by `<vmId>.<nicIndex>`, and by the ofport they are plugged into. */
  private readonly guests = new Map<string, GuestNic>();
  private readonly guestByOfport = new Map<number, GuestNic>();
  /** Port counters by port name (a NIC keeps its counts when the compiler renumbers its port). */
  private readonly counters = new Map<string, PortCounters>();
  /** The same counters by ofport, for the hot path (rebuilt when ports change). */
  private readonly countersByOfport = new Map<number, PortCounters>();
  /** A packet's words while it is forwarded (the vswitch copies what it keeps). */
  private readonly scratch = new Uint32Array(packetWords);
  /** Each cached verdict's packet as it leaves by a tunnel (in_port and the pipeline's scratch fields cleared). */
  private encapsulated = new WeakMap<Verdict, PacketWords>();
  private readonly deliveries: { guest: GuestNic; packet: Packet; payload: Payload; bytes: number }[] = [];
  private readonly running = new Set<string>();
  /** The external endpoints this vswitch plays (always running while plugged). */
  private externals = new Set<string>();
  packetIns = 0;
  /** Packets that came over the underlay from a host this one has no tunnel to, or malformed. */
  underlayRefused = 0;
  mtuDrops = 0;
  /** Packets the underlay's flow control dropped on the way out. */
  underlayThrottled = 0;
  private nextEchoId = 1;
  private expiry: Timer | null = null;
  /** Flows removed by their idle or hard timeout. */
  flowsRemoved = 0;
  /** Reactive networks: packet-ins sent, packets dropped (rate limit, no answer), flows installed from answers. */
  centralPacketIns = 0;
  packetInsDropped = 0;
  flowMods = 0;
  private packetInTokens = packetInRatePerS;
  private packetInRefilledMs = 0;
  /** Packets waiting for the answer to their destination's packet-in. */
  private readonly awaitingFlow = new Map<string, { ofport: number; words: PacketWords; payload: Payload; bytes: number }[]>();
  readonly traffic: Traffic;
  readonly uplinks: Uplink[];
  private readonly dropsReported = new Map<Uplink, { count: number; atMs: number }>();
  /** NICs a fault reshaped for a while, and the timer that puts each back. */
  private readonly nicRestores = new Map<Uplink, Timer>();
  /** The controller connection: probed while the host has ports (a vswitch with no ports has nothing to lose). */
  readonly link: ControllerLink;
  /** The newest section, held back while the controller is lost. */
  private deferred: NetworkSection | null = null;
  /**
   * The controller's tables as the last section left them, by flow text; null
   * once anything else changed them (a hand edit, failing open, a timeout),
   * and the next section is compared flow by flow.
   */
  /**
   * Whether the controller's tables hold exactly the last section's flows
   * (false after hand edits, expiry or a fail-open flush: the next section
   * is then compared with the tables themselves).
   */
  private tablesAsSection = false;
  /** Whether the installed section sends packets through conntrack (its connections then age every second). */
  private tracksConnections = false;

  constructor(private readonly options: DatapathOptions) {
    this.vswitch = new Vswitch({ ports: [], now: () => options.clock.nowMs() });
    this.traffic = new Traffic(options.clock);
    this.uplinks = options.uplinks.map((spec) => new Uplink(spec, options.clock, (nic) => this.reportDrops(nic)));
    const log = options.logger;
    this.link = new ControllerLink({
      mode: options.failMode,
      probeMs: options.inactivityProbeMs,
      clock: options.clock,
      probe: options.probe,
      onLost: () => log.warn({ failMode: options.failMode }, "vswitch lost its controller: flows kept, nothing new installed"),
      onFailOpen: () => {
        log.warn({ flows: this.vswitch.flows().length }, "vswitch fails open (standalone): flows flushed, forwarding as a learning switch");
        this.tablesAsSection = false;
        this.vswitch.deleteFlows();
        this.vswitch.addFlow("table=0,priority=0 actions=normal");
      },
      onBack: () => {
        const held = this.deferred;
        const section = held ?? this.section;
        this.deferred = null;
        log.info({ flows: section.flows.length }, "vswitch reconnected to its controller: resyncing its flows");
        this.install(section);
        if (held) options.heldInstalled();
      },
    });
  }

  stop(): void {
    for (const t of this.nicRestores.values()) t.cancel();
    this.link.stop();
    this.traffic.stopAll();
    this.expiry?.cancel();
    this.expiry = null;
  }

  /**
   * Checks idle and hard timeouts every second while any flow has one
   * (only hand-added flows do: the compiled ones never expire); a removed
   * flow is counted and logged, as OVS's flow-removed.
   */
  private watchTimeouts(): void {
    if (this.expiry) return;
    // Flows with timeouts, and connections a ct flow may have made, age on the simulated clock.
    // A section with ct flows (known at install) keeps the timer; no check scans every flow.
    const hasTimeouts = (): boolean => this.tracksConnections || this.vswitch.conntrackStats().connections > 0 || this.vswitch.timedFlowCount > 0;
    if (!hasTimeouts()) return;
    this.expiry = this.options.clock.every(flowExpiryCheckMs, () => {
      for (const { flow, reason } of this.vswitch.expire()) {
        this.tablesAsSection = false;
        this.flowsRemoved += 1;
        this.options.logger.info({ flow: formatFlow(flow), reason, packets: flow.nPackets }, "flow removed");
      }
      this.vswitch.expireConnections();
      if (!hasTimeouts()) {
        this.expiry?.cancel();
        this.expiry = null;
      }
    });
  }

  /** The section as last applied. */
  get network(): NetworkSection {
    return this.section;
  }

  /**
   * Realizes a network section, or holds it while the controller is lost
   * (a vswitch installs nothing its controller did not confirm).
   * @returns whether it is in place: false while held back, until
   * heldInstalled() says it went in (as ovn-controller reports nb_cfg only
   * once the flows are installed).
   */
  apply(section: NetworkSection): boolean {
    if (section.ports.length > 0) this.link.start();
    if (this.link.running && !this.link.connected) {
      // A section with the very flows installed changes nothing the controller must confirm (and any held back is older).
      if (sameFlows(section, this.section)) {
        this.deferred = null;
        return true;
      }
      this.deferred = section;
      return false;
    }
    this.install(section);
    if (section.ports.length === 0) this.link.stop();
    return true;
  }

  /**
   * Installs a network section as one step: flows in the controller's
   * tables made equal to it (flows that stay untouched, with their
   * counters), ports and tunnels replaced, guests plugged and unplugged.
   */
  private install(section: NetworkSection): void {
    if (this.tablesAsSection) this.installChanged(section);
    else this.installAll(section);
    this.tablesAsSection = true;
    this.tracksConnections = section.flows.some(sendsToConntrack);
    this.controllerTables = section.controllerTables || this.controllerTables;
    if (section.ports === this.section.ports && section.tunnels === this.section.tunnels) {
      // Only the flows changed (a security group's new admissions on the same ports): nothing to replug.
      this.section = section;
      this.watchTimeouts();
      return;
    }

    // What each guest NIC was plugged in as: one moved to another network or address must ask DHCP again.
    const pluggedAs = new Map(this.nicByName);
    this.nicPorts.clear();
    this.nicByName.clear();
    for (const port of section.ports) {
      this.nicPorts.set(port.ofport, port);
      this.nicByName.set(nicName(port), port);
    }
    this.tunnelPorts.clear();
    this.tunnelByHost.clear();
    for (const tunnel of section.tunnels) {
      this.tunnelPorts.set(tunnel.ofport, tunnel);
      this.tunnelByHost.set(tunnel.hostId, tunnel);
    }
    this.vswitch.setPorts([...this.nicPorts.keys(), ...this.tunnelPorts.keys()]);
    this.countersByOfport.clear();
    const names = new Set([...section.ports.map(nicName), ...section.tunnels.map(tunnelName)]);
    for (const name of this.counters.keys()) if (!names.has(name)) this.counters.delete(name);

    const plugged = new Set<string>();
    // Links come up once the whole section is in place: a guest's first DHCP packet must find its port.
    const starting: GuestNic[] = [];
    this.guestByOfport.clear();
    for (const port of section.ports) {
      const key = nicName(port);
      plugged.add(key);
      let guest = this.guests.get(key);
      const was = pluggedAs.get(key);
      if (guest && (guest.mac !== port.mac || (was && (was.segment !== port.segment || was.ip !== port.ip)))) {
        // A new MAC is a new NIC; a new network or address is the link going down and up (the guest asks DHCP again).
        guest.down();
        guest = undefined;
      }
      if (!guest) {
        guest = new GuestNic({
          mac: port.mac,
          clock: this.options.clock,
          random: this.options.random,
          send: (packet, payload, bytes) => this.inject(port.vmId, key, packet, payload, bytes),
          received: (sourceIp, payload, bytes) => this.traffic.arrived(port.vmId, sourceIp, payload, bytes),
          staticAddress: port.external ? { ip: port.ip, prefixLength: port.prefixLength, router: port.gateway } : undefined,
        });
        this.guests.set(key, guest);
        // An external endpoint is up while it is plugged; a VM's NIC while the VM runs.
        if (port.external) this.running.add(port.vmId);
        if (this.running.has(port.vmId)) starting.push(guest);
      }
      this.guestByOfport.set(port.ofport, guest);
    }
    for (const [key, guest] of this.guests) {
      if (plugged.has(key)) continue;
      guest.down();
      this.guests.delete(key);
    }
    const external = new Set(section.ports.filter((p) => p.external).map((p) => p.vmId));
    for (const id of this.externals) if (!external.has(id)) this.running.delete(id);
    this.externals = external;
    this.section = section;
    this.watchTimeouts();
    for (const guest of starting) guest.up();
  }

  /**
   * Makes the controller's tables equal to the section by comparing them
   * flow by flow (the flows that stay keep their counters): after anything
   * but the last document changed them.
   */
  private installAll(section: NetworkSection): void {
    const tablesEnd = Math.max(this.controllerTables, section.controllerTables);
    const wanted = new Map<string, FlowSpec>();
    for (const flow of section.flows) wanted.set(flowKeyOnce(flow), flow);
    for (const flow of this.vswitch.flows()) {
      // The controller's answers to packet-ins are not the document's; their idle timeouts end them.
      if (flow.table >= tablesEnd || flow.cookie === reactiveCookie) continue;
      const key = flowKeyOnce(flow);
      const want = wanted.get(key);
      if (want && formatFlow(want) === formatFlow(flow)) wanted.delete(key);
      else if (!want) this.vswitch.deleteFlowStrict(flow);
    }
    // Changed flows are replaced in place (same match and priority), never removed first.
    for (const flow of wanted.values()) this.vswitch.addFlow(flow);
  }

  /**
   * The tables hold exactly the last document's flows: only the texts that
   * changed are touched (a document that changes one flow of a thousand
   * costs one), new ones added first, replacing in place those with the same
   * match, then the ones no longer wanted removed.
   */
  private installChanged(section: NetworkSection): void {
    // The tables hold the last section's flows. A section that begins with the same texts (a
    // security group's new admissions come after the document's flows) is compared from where
    // they part only: a change of one flow on a host with hundreds costs one, not a pass over all.
    const before = this.section.flowTexts;
    const after = section.flowTexts;
    let common = 0;
    const shorter = Math.min(before.length, after.length);
    while (common < shorter && before[common] === after[common]) common += 1;
    const was = new Map<string, FlowSpec>();
    for (let i = common; i < before.length; i++) was.set(before[i]!, this.section.flows[i]!);
    const next = new Set<string>();
    const added: FlowSpec[] = [];
    for (let i = common; i < after.length; i++) {
      const text = after[i]!;
      next.add(text);
      if (!was.has(text)) added.push(section.flows[i]!);
    }
    const replaced = new Set(added.map(flowKey));
    let kept: Set<string> | null = null;
    for (const [text, flow] of was) {
      if (next.has(text)) continue;
      // A text may stand twice in a section: one the common part still holds stays.
      kept ??= new Set(after.slice(0, common));
      if (kept.has(text) || replaced.has(flowKey(flow))) continue;
      this.vswitch.deleteFlowStrict(flow);
    }
    for (const flow of added) this.vswitch.addFlow(flow);
  }

  /** Drops are reported as they start and then at most once a second, with how many since the last report. */
  private reportDrops(nic: Uplink): void {
    const now = this.options.clock.nowMs();
    const last = this.dropsReported.get(nic) ?? { count: 0, atMs: -Infinity };
    if (now - last.atMs < 1_000) return;
    this.options.nicDrops(nic.spec.name, nic.drops - last.count);
    this.dropsReported.set(nic, { count: nic.drops, atMs: now });
  }

  /** The NIC a segment's tunnels leave by: the dedicated one when the network is pinned to it and the host has one. */
  uplinkOf(segment: bigint): Uplink {
    return (this.section.dedicatedSegments.has(segment) ? this.uplinks[1] : undefined) ?? this.uplinks[0]!;
  }

  /** A VM started or stopped: its NICs' links come up (asking DHCP for an address) or go down. */
  setRunning(vmId: string, running: boolean): void {
    if (running === this.running.has(vmId)) return;
    if (running) this.running.add(vmId);
    else this.running.delete(vmId);
    for (const port of this.section.ports) {
      if (port.vmId !== vmId) continue;
      const guest = this.guests.get(nicName(port));
      if (running) guest?.up();
      else guest?.down();
    }
    if (!running) this.traffic.stopVm(vmId);
  }

  /** A packet from a guest NIC, into the vswitch at the NIC's current port. */
  private inject(vmId: string, key: string, packet: Packet | PacketWords, payload: Payload, bytes: number): boolean {
    if (!this.running.has(vmId)) return true;
    const port = this.nicByName.get(key);
    if (!port) return true;
    // Traffic comes as words already (made once a flow); a guest's own packets (ARP, DHCP, ICMP) are few.
    let words: PacketWords;
    if (packet instanceof Uint32Array) {
      this.scratch.set(packet);
      words = this.scratch;
    } else words = toWords(packet);
    const throttled = this.underlayThrottled;
    this.forward(port.ofport, words, payload, bytes, false);
    // Dropped like any packet when the pipeline drops it; refused (the guest told) only when the underlay could not take it.
    return this.underlayThrottled === throttled;
  }

  /** The agent this host's tunnel to `hostId` says runs it (undefined: no tunnel). */
  tunnelAgentOf(hostId: string): string | undefined {
    return this.tunnelByHost.get(hostId)?.agentId;
  }

  /**
   * A packet from another host's vswitch: its header words as the sender's
   * vswitch left them, little-endian at `at` in `record`. Refused (counted)
   * from a host this one has no tunnel to.
   */
  fromUnderlay(fromHost: string, record: DataView, at: number, payload: Payload, bytes: number): void {
    const tunnel = this.tunnelByHost.get(fromHost);
    if (!tunnel || at + packetWords * 4 > record.byteLength) {
      this.underlayRefused += 1;
      return;
    }
    const words = this.scratch;
    for (let i = 0; i < packetWords; i++) words[i] = record.getUint32(at + 4 * i, true);
    // The sender cleared its pipeline's scratch fields; a lying sender's are cleared here too.
    for (const w of scratchWords) words[w] = 0;
    this.forward(tunnel.ofport, words, payload, Math.max(0, bytes - overlayOverheadBytes), true);
  }

  /** Counters by port name (a NIC keeps its counts when the compiler renumbers its port). */
  private countersOf(ofport: number): PortCounters {
    let c = this.countersByOfport.get(ofport);
    if (c) return c;
    const nic = this.nicPorts.get(ofport);
    const tunnel = this.tunnelPorts.get(ofport);
    const name = nic ? nicName(nic) : tunnel ? tunnelName(tunnel) : `port-${ofport}`;
    c = this.counters.get(name);
    if (!c) this.counters.set(name, (c = { rxPackets: 0, txPackets: 0, rxBytes: 0, txBytes: 0, drops: 0 }));
    this.countersByOfport.set(ofport, c);
    return c;
  }

  /** The hot path: `words` (the caller's, reused after this returns) enter at `ofport`. */
  private forward(ofport: number, words: PacketWords, payload: Payload, bytes: number, fromTunnel: boolean): void {
    words[IN_PORT_WORD] = ofport;
    const rx = this.countersOf(ofport);
    rx.rxPackets += 1;
    rx.rxBytes += bytes;
    const verdict = this.vswitch.processWords(words, bytes);
    if (verdict.packetIns > 0) {
      for (const id of verdict.controllerIds) {
        if (id === 0) {
          this.packetIns += 1;
          this.localService(ofport, verdict.packet, payload);
        } else this.toController(ofport, verdict.packet, words, payload, bytes);
      }
    }
    const outputs = verdict.outputs;
    if (outputs.length === 0 && verdict.packetIns === 0) rx.drops += 1;
    for (let i = 0; i < outputs.length; i++) {
      const out = outputs[i]!;
      const guest = this.guestByOfport.get(out);
      if (guest) this.toGuest(out, guest, verdict.packet, payload, bytes);
      else if (!fromTunnel) this.toTunnel(out, verdict, payload, bytes);
    }
  }

  /**
   * A reactive table miss: the packet waits while the controller is asked
   * for its destination's flow (one question a destination at a time,
   * rate limited), then goes through the pipeline again.
   */
  private toController(ofport: number, packet: Packet, words: PacketWords, payload: Payload, bytes: number): void {
    const segment = Number(packet[METADATA]!);
    const dst = formatMac(packet[DL_DST]!);
    const key = `${segment}/${dst}`;
    const waiting = this.awaitingFlow.get(key);
    const held = { ofport, words: words.slice(), payload, bytes };
    if (waiting) {
      if (waiting.length < packetInBufferMax) waiting.push(held);
      else this.packetInsDropped += 1;
      return;
    }
    const now = this.options.clock.nowMs();
    this.packetInTokens = Math.min(packetInRatePerS, this.packetInTokens + ((now - this.packetInRefilledMs) / 1_000) * packetInRatePerS);
    this.packetInRefilledMs = now;
    if (this.packetInTokens < 1) {
      this.packetInsDropped += 1;
      return;
    }
    this.packetInTokens -= 1;
    this.centralPacketIns += 1;
    this.awaitingFlow.set(key, [held]);
    const release = (flows: string[]): void => {
      const packets = this.awaitingFlow.get(key) ?? [];
      this.awaitingFlow.delete(key);
      let installed = 0;
      for (const line of flows) {
        try {
          this.vswitch.addFlow(parseFlow(line));
          installed += 1;
        } catch (err) {
          this.options.logger.warn({ flow: line, err: String(err) }, "the controller answered a packet-in with a flow that does not parse");
        }
      }
      this.flowMods += installed;
      if (installed) this.watchTimeouts();
      // With the flow in place the packets go on; with none (an unknown destination, no controller) they are dropped.
      if (!installed) this.packetInsDropped += packets.length;
      else for (const p of packets) this.forward(p.ofport, p.words, p.payload, p.bytes, false);
    };
    this.options.packetIn(segment, formatMac(packet[DL_SRC]!), dst).then(release, () => release([]));
  }

  /** Hands a packet to a guest once this turn's forwarding is done, so an answer never nests inside what it answers. */
  private toGuest(ofport: number, guest: GuestNic, packet: Packet, payload: Payload, bytes: number): void {
    const tx = this.countersOf(ofport);
    tx.txPackets += 1;
    tx.txBytes += bytes;
    this.deliveries.push({ guest, packet, payload, bytes });
    if (this.deliveries.length === 1) queueMicrotask(() => this.deliver());
  }

  private deliver(): void {
    // Guests' answers may queue more; they are delivered in this same drain.
    for (let i = 0; i < this.deliveries.length; i++) {
      const d = this.deliveries[i]!;
      try {
        d.guest.receive(d.packet, d.payload, d.bytes);
      } catch (err) {
        // A fault in one simulated guest must not take the host's other guests (or its agent) down.
        this.options.logger.error({ err: String(err), stack: (err as Error).stack }, "a guest failed on a packet");
      }
    }
    this.deliveries.length = 0;
  }

  /**
   * Out by a tunnel, VXLAN's overhead counted against the MTU. Split horizon:
   * what came over a tunnel never leaves by one (the hosts are a full mesh).
   */
  private toTunnel(ofport: number, verdict: Verdict, payload: Payload, bytes: number): void {
    const tunnel = this.tunnelPorts.get(ofport);
    if (!tunnel) return;
    if (bytes + overlayOverheadBytes > underlayMtuBytes) {
      this.mtuDrops += 1;
      return;
    }
    // Verdicts come from the vswitch's cache: the encapsulated form is made once a verdict.
    let words = this.encapsulated.get(verdict);
    if (!words) {
      const copy = [...verdict.packet];
      copy[IN_PORT] = 0n;
      for (const f of scratchFields) copy[f] = 0n;
      this.encapsulated.set(verdict, (words = toWords(copy)));
    }
    const wire = bytes + overlayOverheadBytes;
    const uplink = this.uplinkOf(verdict.packet[TUN_ID]!);
    const delayMs = uplink.transmit(wire);
    if (delayMs < 0) return;
    // Most packets cross at once: only a queue or a latency of a millisecond or more costs a deferred send.
    if (delayMs < 1) {
      if (!this.options.tunnel(tunnel, words, payload, wire)) {
        this.underlayThrottled += 1;
        return;
      }
    } else {
      const headers = words;
      uplink.later(delayMs, () => {
        if (!this.options.tunnel(tunnel, headers, payload, wire)) this.underlayThrottled += 1;
      });
    }
    const tx = this.countersOf(ofport);
    tx.txPackets += 1;
    tx.txBytes += wire;
  }

  /** A local packet-in: DHCP and ARP answered from what the controller pushed, back out of the port they came in by. */
  private localService(ofport: number, packet: Packet, payload: Payload): void {
    const port = this.nicPorts.get(ofport);
    const guest = this.guestByOfport.get(ofport);
    if (!port || !guest) return;
    const segment = packet[METADATA]!;
    if (packet[NW_PROTO] === PROTO_UDP && packet[TP_SRC] === DHCP_CLIENT_PORT && packet[TP_DST] === DHCP_SERVER_PORT && payload.dhcp) {
      const reply = this.dhcpReply(port, payload.dhcp);
      const answer = ipv4(serverMac(port.segment), port.mac, port.gateway, port.ip, PROTO_UDP, DHCP_SERVER_PORT, DHCP_CLIENT_PORT);
      this.toGuest(ofport, guest, answer, { dhcp: reply }, dhcpBytes);
      return;
    }
    if (packet[DL_TYPE] === ETH_ARP && packet[NW_PROTO] === ARP_REQUEST) {
      const mac = this.section.neighbors.get(segment)?.get(packet[NW_DST]!);
      if (mac === undefined) return;
      this.toGuest(ofport, guest, arp(ARP_REPLY, mac, packet[DL_SRC]!, packet[NW_DST]!, packet[NW_SRC]!), {}, arpBytes);
    }
  }

  /** The vswitch's DHCP server: it offers and grants exactly the port's address. */
  private dhcpReply(port: NicPort, request: DhcpMessage): DhcpMessage {
    const grant = { xid: request.xid, address: port.ip, serverId: port.gateway, leaseS: port.leaseS, prefixLength: port.prefixLength, router: port.gateway };
    if (request.type === DhcpType.Discover) return { type: DhcpType.Offer, ...grant };
    if (request.type === DhcpType.Request && request.address === port.ip) return { type: DhcpType.Ack, ...grant };
    return { type: DhcpType.Nak, ...grant, address: 0n };
  }

  /**
   * The VM pings `target` from its NIC on the target's subnet: ARP, then
   * `count` echoes `intervalMs` apart, each waiting `timeoutMs`.
   * @throws SimdcError NOT_FOUND (no such NIC here), FAILED_PRECONDITION (not
   * running, no address yet, target off every subnet of the VM).
   */
  async ping(vmId: string, target: bigint, count: number, intervalMs: number, timeoutMs: number): Promise<v1.PingResponse.$Properties> {
    const guest = this.sender(vmId, target);
    const id = this.nextEchoId++ & 0xffff;
    const replies: Promise<v1.PingReply.$Properties>[] = [];
    for (let seq = 1; seq <= count; seq++) {
      if (seq > 1) await this.options.clock.sleep(intervalMs);
      const mac = await guest.resolve(target, timeoutMs);
      replies.push(
        mac === undefined
          ? Promise.resolve({ seq, received: false, rttMs: 0 })
          : guest.echo(mac, target, id, seq, timeoutMs).then((rtt) => ({ seq, received: rtt !== undefined, rttMs: rtt ?? 0 })),
      );
    }
    const done = await Promise.all(replies);
    const rtts = done.filter((r) => r.received).map((r) => r.rttMs ?? 0);
    return {
      sourceIp: formatIp(guest.ip),
      sent: count,
      received: rtts.length,
      rttMinMs: rtts.length ? Math.min(...rtts) : 0,
      rttAvgMs: rtts.length ? rtts.reduce((a, b) => a + b, 0) / rtts.length : 0,
      rttMaxMs: rtts.length ? Math.max(...rtts) : 0,
      replies: done,
    };
  }

  /**
   * ofproto/trace on the live tables: what the vswitch would do with
   * `packet` (ovs-ofctl field syntax), changing no counter, cache or MAC.
   * With `fromHost`, the packet came over that host's tunnel.
   * @throws SimdcError INVALID_ARGUMENT for a bad packet, NOT_FOUND for a host with no tunnel here.
   */
  trace(packetText: string, fromHost: string): v1.TraceResponse.$Properties {
    const packet = parsePacket(packetText);
    if (fromHost) {
      const tunnel = this.tunnelByHost.get(fromHost);
      if (!tunnel) throw notFound(`host ${this.options.hostId} has no tunnel from ${fromHost}`);
      packet[IN_PORT] = BigInt(tunnel.ofport);
      for (const f of scratchFields) packet[f] = 0n;
    }
    const verdict = this.vswitch.trace(packet);
    const outputs = verdict.outputs.map((ofport) => {
      const nic = this.nicPorts.get(ofport);
      const tunnel = this.tunnelPorts.get(ofport);
      return { ofport, name: nic ? nicName(nic) : tunnel ? tunnelName(tunnel) : "", hostId: tunnel?.hostId ?? "", agentId: tunnel?.agentId ?? "" };
    });
    const fields = packetFields(verdict.packet);
    return {
      hostId: this.options.hostId,
      flows: verdict.matched.map(formatFlow),
      outputs,
      packet: Object.entries(fields).map(([k, v]) => `${k}=${v}`).join(","),
      localPacketIns: verdict.controllerIds.filter((id) => id === 0).length,
      controllerPacketIns: verdict.controllerIds.filter((id) => id !== 0).length,
    };
  }

  /**
   * A fault reshapes one of the host's physical NICs (a slower line, a
   * shorter queue), for `durationMs` (0: until changed again), after which
   * it is as configured again.
   * @throws SimdcError NOT_FOUND for a NIC the host does not have, INVALID_ARGUMENT for nothing to change.
   */
  setNic(name: string, change: { bandwidthMbps?: number; queueBytes?: number }, durationMs: number): Uplink {
    const nic = this.uplinks.find((u) => u.spec.name === name);
    if (!nic) throw notFound(`host ${this.options.hostId} has no NIC ${name} (it has ${this.uplinks.map((u) => u.spec.name).join(", ")})`);
    if (change.bandwidthMbps === undefined && change.queueBytes === undefined) throw invalidArgument("give a bandwidth or a queue size to change");
    this.nicRestores.get(nic)?.cancel();
    this.nicRestores.delete(nic);
    nic.reshape(change);
    this.options.logger.warn({ nic: name, ...change, durationMs }, "NIC reshaped");
    if (durationMs > 0) {
      this.nicRestores.set(
        nic,
        this.options.clock.after(durationMs, () => {
          this.nicRestores.delete(nic);
          nic.reshape(nic.configured);
          this.options.logger.info({ nic: name }, "NIC as configured again");
        }),
      );
    }
    return nic;
  }

  /** The physical NICs' figures, for dump-ports. */
  nicStats(): v1.INicStats[] {
    return this.uplinks.map((u) => ({
      name: u.spec.name,
      bandwidthMbps: u.spec.bandwidthMbps,
      queueBytes: u.spec.queueBytes,
      txPackets: u.txPackets,
      txBytes: u.txBytes,
      drops: u.drops,
      backlogBytes: Math.round(u.backlogBytes()),
      backlogBytesMax: u.backlogBytesMax,
      storageBytes: u.storageBytes,
    }));
  }

  /** ovs-ofctl dump-flows: every flow, or one table's (table >= 0). */
  /**
   * The NIC a running VM reaches `target` from: on the target's subnet, with an address.
   * @throws SimdcError NOT_FOUND (no NIC here), FAILED_PRECONDITION (not running, no address yet, no subnet of the target).
   */
  private sender(vmId: string, target: bigint): GuestNic {
    const ports = this.section.ports.filter((p) => p.vmId === vmId);
    if (ports.length === 0) throw notFound(`vm ${vmId} has no NIC on host ${this.options.hostId}`);
    if (!this.running.has(vmId)) throw failedPrecondition(`vm ${vmId} is not running`);
    // On one of its subnets, the NIC there; else the first NIC with a router (its default route).
    const port = ports.find((p) => sameSubnet(p.ip, target, p.prefixLength)) ?? ports.find((p) => p.gateway !== 0n);
    if (!port) throw failedPrecondition(`vm ${vmId} has no route to ${formatIp(target)}: it is on none of its NICs' subnets, and no NIC has a router (host-only networks have none)`);
    const guest = this.guests.get(nicName(port))!;
    if (guest.ip === 0n) throw failedPrecondition(`vm ${vmId}'s eth${port.nicIndex} has no address yet (DHCP ${guest.lease})`);
    return guest;
  }

  /**
   * A VM starts a traffic flow to `target`: constant-rate UDP, or TCP-like
   * request/response.
   * @throws SimdcError as ping, and INVALID_ARGUMENT for a rate, size or kind out of range.
   */
  startTraffic(flow: { vmId: string; target: bigint; kind: v1.TrafficKind; ratePps: number; bytes: number; responseBytes: number; dstPort: number; durationMs: number }): { flowId: number; sourceIp: string } {
    const guest = this.sender(flow.vmId, flow.target);
    for (const [name, size] of [["size_bytes", flow.bytes], ["response_bytes", flow.responseBytes]] as const) {
      if (size + overlayOverheadBytes > underlayMtuBytes) throw invalidArgument(`${name} ${size} does not fit the underlay's ${underlayMtuBytes}-byte MTU with ${overlayOverheadBytes} bytes of VXLAN (at most ${underlayMtuBytes - overlayOverheadBytes})`);
    }
    if (flow.ratePps < 1 || flow.ratePps > ratePpsMax) throw invalidArgument(`rate_pps must be 1-${ratePpsMax}`);
    if (flow.kind !== v1.TrafficKind.TRAFFIC_KIND_UDP_STREAM && flow.kind !== v1.TrafficKind.TRAFFIC_KIND_TCP_RR) throw invalidArgument(`kind ${flow.kind} is not a known TrafficKind`);
    const flowId = this.traffic.start({ ...flow, guest });
    return { flowId, sourceIp: formatIp(guest.ip) };
  }

  dumpFlows(table: number): string[] {
    return this.vswitch.dumpFlows(table < 0 ? undefined : table);
  }

  dumpPorts(): v1.VswitchPortStats.$Properties[] {
    const out: v1.VswitchPortStats.$Properties[] = [];
    const stats = (name: string) => {
      const c = this.counters.get(name);
      return { rxPackets: c?.rxPackets ?? 0, txPackets: c?.txPackets ?? 0, rxBytes: c?.rxBytes ?? 0, txBytes: c?.txBytes ?? 0, drops: c?.drops ?? 0 };
    };
    for (const port of this.section.ports) {
      const guest = this.guestByOfport.get(port.ofport);
      out.push({
        ofport: port.ofport,
        name: nicName(port),
        mac: guest ? formatMac(port.mac) : "",
        ip: guest && guest.ip !== 0n ? formatIp(guest.ip) : "",
        up: this.running.has(port.vmId),
        dhcp: guest?.lease ?? "down",
        ...stats(nicName(port)),
      });
    }
    for (const tunnel of this.section.tunnels) out.push({ ofport: tunnel.ofport, name: tunnelName(tunnel), up: true, ...stats(tunnelName(tunnel)) });
    return out;
  }

  /**
   * add-flow or del-flows by hand. Tables the controller owns are refused
   * unless forced; every line is checked before anything changes.
   * @throws SimdcError INVALID_ARGUMENT (bad syntax), PERMISSION_DENIED (a controller table, not forced).
   */
  modFlows(lines: string[], remove: boolean, force: boolean): number {
    this.tablesAsSection = false;
    const owned = (table: number): void => {
      if (!force && table < this.controllerTables) {
        throw new SimdcError("PERMISSION_DENIED", `table ${table} is the controller's (tables 0-${this.controllerTables - 1}); use --force, and expect the next document to put it back`);
      }
    };
    if (!remove) {
      const flows = lines.map((line, i) => {
        try {
          return parseFlow(line);
        } catch (err) {
          throw invalidArgument(`flow ${i + 1}: ${(err as Error).message}`);
        }
      });
      for (const flow of flows) owned(flow.table);
      for (const flow of flows) this.vswitch.addFlow(flow);
      // Connections a hand-added ct flow commits must age too (until the next install recomputes this).
      if (flows.some(sendsToConntrack)) this.tracksConnections = true;
      this.watchTimeouts();
      return flows.length;
    }
    const filters = (lines.length ? lines : [""]).map(parseDeleteFilter);
    for (const f of filters) if (f.table !== undefined) owned(f.table);
    let removed = 0;
    for (const f of filters) {
      if (f.table !== undefined) removed += this.vswitch.deleteFlows(f);
      // With no table named, only the tables open to hand edits, unless forced.
      else for (const flow of this.vswitch.flows()) if ((force || flow.table >= this.controllerTables) && matchesCookie(flow.cookie, f)) removed += Number(this.vswitch.deleteFlowStrict(flow));
    }
    return removed;
  }
}

interface DeleteFilter {
  table?: number;
  cookie?: bigint;
  cookieMask?: bigint;
}

function matchesCookie(cookie: bigint, f: DeleteFilter): boolean {
  if (f.cookie === undefined) return true;
  const mask = f.cookieMask ?? -1n;
  return (cookie & mask) === (f.cookie & mask);
}

/** "", "table=N", "cookie=V/M" or both, comma-separated. @throws SimdcError INVALID_ARGUMENT. */
function parseDeleteFilter(text: string): DeleteFilter {
  const out: DeleteFilter = {};
  for (const item of text.split(",").map((s) => s.trim()).filter(Boolean)) {
    const [key, value = ""] = item.split("=");
    if (key === "table" && /^\d+$/.test(value) && Number(value) <= 254) out.table = Number(value);
    else if (key === "cookie" && /^(0x[0-9a-f]+|\d+)(\/(0x[0-9a-f]+|\d+))?$/i.test(value)) {
      const [v, m] = value.split("/");
      out.cookie = BigInt(v!);
      if (m) out.cookieMask = BigInt(m);
    } else throw invalidArgument(`del-flows filter ${JSON.stringify(item)}: write table=N or cookie=VALUE/MASK`);
  }
  return out;
}
