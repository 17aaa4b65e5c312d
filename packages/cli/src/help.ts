// `--help` (or -h) on any command or subcommand: what it does and every
// flag it takes, in the CLI's own words (not the parser's).

const changing = `
  --wait none|controller|hosts   return once stored (none, the default), once the hosts'
                                 documents carry it (controller), or once every live host
                                 realized it (hosts)
  --wait-timeout-ms T            give up waiting after T ms (DEADLINE_EXCEEDED; the change stays)
  --request-id ID                a retry with the same id acts once and gets the first answer`;

const global = `
Global flags (anywhere): --server URL, --data-dir DIR, --prefix P, --user U, -o table|json`;

export const help: Record<string, string> = {
  up: `simdc up: a local datacenter in the foreground (Ctrl-C stops it)

  --hosts N                  simulated hosts (default 3, at most 10,000)
  --hosts-per-agent K        hosts per agent process (default 1, at most 1,000)
  --san M                    SAN storage nodes (default 2)
  --controllers C            controllers, one active and the rest standby (default 1, at most 3)
  --nats-port P              NATS client port (default 4222)
  --seed S                   the run's seed (default: a fresh one, printed)
  --time-scale X             simulated time runs X times faster (default 1)
  --demo                     create a volume and three VMs once ready
  --pcpus C                  physical CPUs of each host (default 16)
  --memory-mib M             memory of each host (default 65536)
  --san-capacity-mib S       capacity of each SAN node (default 102400)
  --heartbeat-interval-ms I  heartbeat interval (default 1000)
  --heartbeat-misses-max N   missed heartbeats before a host is disconnected (default 3)
  --cpu-overcommit R         vCPUs per pCPU placement allows (default 4)
  --memory-overcommit R      memory overcommit placement allows (default 1.5)
  --ready-timeout-ms T       give up if not ready by then (default 120000)
  --test-faults              agents serve test-only faults (experiments that prove their checkers)
  --fail-mode M              what vswitches do when the controller is lost: secure (default: keep
                             flows, install nothing new) or standalone (flush, learn MACs after 3 probes)
  --inactivity-probe-ms P    how often a vswitch probes its controller (default 5000)
  --nic-mbps B               each host NIC's bandwidth, Mbit/s (default 10000)
  --nic-queue-kib Q          each host NIC's transmit queue (default 1024 KiB)
  --threads-per-core T       2: hyperthreading (logical CPUs = pcpus x 2; capacity stays the cores')
  --core-mhz F               each core's speed; CPU reservations and limits are MHz of it (default 2000)
  --coscheduling M           multi-vCPU VMs: relaxed (default: only leading vCPUs stop) or strict
                             (the whole VM stops until all its vCPUs can run together)
  --share-salting S          page sharing between VMs: per-vm (default, vSphere's: only VMs with
                             equal --share-salt share) or off (every VM shares)
  --hosted-overhead-pct P    a hosted (type 2) hypervisor: P% of every vCPU's run time does no
                             guest work (default 0: bare metal)`,
  down: "simdc down: stop the datacenter 'simdc up' runs from --data-dir",
  status: "simdc status: seed, controllers, processes, hosts, SAN nodes, VMs and documents",
  logs: `simdc logs [process]: pretty-printed logs of one process, or of all merged by time
(the compose deployment's: docker-compose logs; pipe through npx pino-pretty to read them)

  -f, --follow     keep printing new lines
  -n, --lines N    the last N lines (default 200; 0 with -f: only new ones)
  --since T        only lines since a duration back (5m), an ISO time or Unix ms
  --level L        only this level and worse: trace, debug, info, warn, error, fatal
  --grep TEXT      only lines that contain TEXT`,
  host: `simdc host list | get <host>: the hosts as the controller has them`,
  sync: `simdc sync: how far the hosts realized their documents

  --wait               until every live host has realized the newest generation
  --wait-timeout-ms T  give up after T ms`,
  vm: `simdc vm create <name> --boot-volume V [--vcpus N] [--memory-mib M] [--off] [--nic NET[,mac=M][,ip=A][,sg=G+G] ...]
simdc vm list [--host H] | get <vm> | delete <vm> | start <vm> | stop <vm>
simdc vm ping <vm> <address> [-c N] [-i 1s] [-W 1s]: ICMP echo from the VM, through its vswitch
simdc vm nic add <vm> NET[,mac=M][,ip=A][,sg=G+G] | remove <vm> <index>: attach or detach a NIC (a new generation)
simdc vm nic set <vm> <index> --sg G+G: put a NIC in other security groups in place (--sg '' for none)
simdc vm nic set <vm> <index> [--network NET] [--mac M] [--ip A]: move a NIC to another network or give it other addresses, in place (its port and groups stay; the guest asks DHCP again)
simdc vm resources <vm> [--cpu-* ...] [--mem-* ...] [--workload ...] [--phase ...]: change a VM's
  allocation or workload in place (a new generation; only what the flags name changes)

  --boot-volume V   the volume it boots from (create)
  --vcpus N         virtual CPUs (create, default 1)
  --memory-mib M    memory (create, default 512)
  --off             create it powered off
  --nic NET,...     a NIC on network NET (eth0 first; repeat for more); mac= and ip= fix its
                    addresses, else the controller picks them; the VM gets its address by DHCP;
                    sg=G1+G2 puts it in security groups (see simdc help sg)
  --host H          only the VMs of host H (list); ping: the VM's host, without asking the controller
  --agent A         ping: the host's agent, without asking the controller
  -c, --count N     ping: echoes (default 4)
  -i, --interval D  ping: between echoes (default 1s, simulated time)
  -W, --timeout D   ping: how long each echo waits for its reply (default 1s)
  --cpu-shares S    high, normal or low (2000/1000/500 a vCPU), or the VM's shares in all;
                    they divide contended CPU among the host's VMs
  --cpu-reservation-mhz R   CPU the host guarantees (MHz of its cores); a power-on whose
                    reservation does not fit the host is refused
  --cpu-limit-mhz L at most this much CPU, even on an idle host (the rest shows as %MLMTD)
  --mem-shares S    high, normal or low (20/10/5 a MB), or a number: who gives memory up
                    first under pressure (idle memory counts 4x: the idle tax)
  --mem-reservation-mib R   memory never reclaimed
  --workload K[,name=value...]   what the guest does: idle, web (bursty), batch (CPU-bound),
                    database (memory-heavy, writes) or vdi (a desktop); parameters cpuMean,
                    peakCpu, burstFraction, burstMeanMs, jitter, activeFraction, usedFraction,
                    dirtyFractionPerSec (fractions of a core per vCPU, of memory)
  --phase K:D[,name=value...]   a phase first, for D (simulated): boot (a boot storm's
                    share), or a kind; repeat for more, in order
  --image I         the OS image the guest runs: VMs of one image have identical pages that
                    page sharing can merge (if their salts allow: --share-salt)
  --share-salt S    sched.mem.pshare.salt: VMs share pages with each other only with equal
                    salts (the host's default salting; --share-salting off shares them all)${changing}`,
  top: `simdc top: esxtop for the datacenter, asked of every host's agent (so it works while
the controller is away). Hosts: cores, logical CPUs, vCPUs and their ratio, utilization,
memory state (high, clear, soft, hard, low) and free memory against minFree, what sharing
saved, ballooned, compressed and swapped memory. VMs (sums over their vCPUs, as esxtop:
a 4-vCPU VM's %RDY can reach 400): %USED %RUN %RDY %CSTP %MLMTD %SWPWT, the work their
workload lost to contention, and memory granted, active, shared, ballooned, compressed, swapped.
Each figure is the host's last sample (5 s of simulated time).

  --hosts H,...     only these hosts
  --sort K          ready (default), used, cstp, mlmtd, swpwt, lost, granted, balloon, swapped
  --rows N          VMs shown at most (default 40)
  --delay D         between refreshes, real time (default 5s)
  --iterations N    refresh N times, then exit (default: until Ctrl-C on a terminal, once
                    into a pipe or with -o json)
  --history         with --hosts H: the host's ring of past samples (ten minutes), oldest first
  --vm VM           one VM's ring of past samples (five minutes), oldest first`,
  volume: `simdc volume create <name> [--size-mib N] | list | get <volume> | delete <volume>

  --size-mib N      size (create, default 1024)${changing}`,
  fault: `simdc fault kill|pause|resume|restart <process>     process faults on what 'up' started
simdc fault add <id> --action drop|delay|duplicate|partition [flags]
simdc fault list | clear [id] [--wait]
simdc fault nic <host> [--nic nic0|nic1] [--mbps M] [--queue-kib Q] [--for D]: one of the host's
  physical NICs gets a slower line or a shorter queue (what overflows it is dropped and counted,
  nic-drops events), for D on the simulated clock, then is as configured again
simdc fault memory <host> --pressure-mib N: N MiB of the host's memory taken by something
  outside its VMs, until set back to 0: drives its memory states (high, clear, soft, hard,
  low) and so page sharing, ballooning, compression and swapping (memory-state events)

  --action A        drop, delay, duplicate or partition (add)
  --subject S       NATS subject pattern the message's subject must match (* and >)
  --from ID         sender: a host or node id, a process, or a role (controller, host-agent, ...)
  --to ID           receiver, the same way (a partition cuts both ways)
  --percent P       share of matching messages, 1-100 (drawn from the seed)
  --delay-ms D      delay (delay)
  --jitter-ms J     up to J ms more (delay)
  --copies N        extra copies (duplicate)
  --after D         start D from now (500ms, 30s, 2m), on the simulated clock
  --duration D      end D after it starts
  --wait            return once every process has applied the new rule set`,
  events: `simdc events: what happened (kept a day), and with -w what happens next

  -w, --watch        keep following (Ctrl-C ends it)
  --kind K,...       only these kinds (host-disconnected, vm-state-changed, ...) or object kinds (host, vm, ...)
  --id ID,...        only events about these objects (a host id also takes its VMs' reports)
  --since T          all, a duration back from now (5m), an ISO time or Unix ms
  --record FILE      also write the events shown as JSON lines`,
  wait: `simdc wait vm|host|volume <id> --for STATE [--timeout 30s]: until the controller shows it so

  --for STATE        vm: defined, starting, running, stopping, stopped, failed, unknown, deleted;
                     host: connected, disconnected; volume: creating, ready, deleting, failed, deleted
  --timeout D        give up after D (default 30s): exit 1, DEADLINE_EXCEEDED`,
  net: `simdc net create <name> --mode bridge|host-only|nat --subnet CIDR [--subnet CIDR ...] [--vlan N] [--tenant T]
simdc net list | get <net> | delete <net>: logical networks (VMs attach with vm create --nic)
simdc net reachability [--timeout 300ms]: every running VM pings every other VM's addresses;
  the matrix against the policy (same network and admitted by the target's security groups:
  allowed; else denied); exit 1 on a difference

  --mode M          bridge (reachable from outside), host-only (from nothing outside) or nat
  --subnet CIDR     an IPv4 subnet, /8 to /30, overlapping no other network's; repeat for more
  --vlan N          ride VLAN N (1-4094) of the physical segment; without it, an overlay with its own VNI
  --tenant T        whose network it is (default: default); a router joins only one tenant's networks
  --flow-setup F    proactive (default: every flow pushed ahead) or reactive (a table miss asks the
                    controller, which answers with the flow; rate limited, counted in dump-ports)
  --uplink U        converged (default: the host's first NIC, shared with storage) or dedicated
                    (its second NIC, for dedicated networks only)${changing}`,
  router: `simdc router create <name> --network NET --network NET [...]: a logical router between networks of
one tenant (each network on at most one router); every host routes what its own VMs send to
their network's gateway straight to the destination's network, as OVN distributes a router
simdc router list | delete <router>

A network on a router gives its VMs a default route (its gateway), host-only ones too; a VM's
default route is its first NIC with one.

  --network NET     a network to join; two or more${changing}`,
  ext: `simdc ext create <name> [--ip A] [--host H]: an external endpoint, an address of the outside world
on the simulated external network 198.18.0.0/16 (its router at .0.1), played by one host's vswitch
simdc ext list | delete <name>
simdc ext ping <name> <address> [-c N] [-i D] [-W D]: ICMP echo from the endpoint

What reaches what: a bridge network's VMs reach the endpoints and are reached from them; a NAT
network's VMs reach them as their host's uplink address (simdc host get), and nothing outside
can start a connection to them; a host-only network's VMs neither reach nor are reached.

  --ip A            its address (default: the lowest free from 198.18.128.1)
  --host H          the host that plays it (default: the connected host playing the fewest)${changing}`,
  sg: `simdc sg create <name> [--rule RULE ...] | update <sg> [--rule RULE ...]: a security group and its
inbound allow rules (update replaces them all; every host with a NIC in the group gets new flows)
simdc sg list | get <sg> | delete <sg> (refused while a NIC is in it)

A NIC joins groups at vm create --nic NET,sg=G1+G2 (or vm nic add). A NIC in a group admits a new
inbound connection only when a rule of one of its groups matches it (default deny inbound);
replies to what the VM started, and the rest of an admitted connection, pass (conntrack on the
VM's host, per NIC). Outbound traffic is not filtered; a NIC in no group admits everything.

  --rule RULE       any, icmp, tcp[:PORT[-PORT]] or udp[:PORT[-PORT]], with ,from=CIDR to admit
                    only sources in CIDR (tcp:80,from=10.0.0.0/8); repeat for more${changing}`,
  ofctl: `simdc ofctl trace --flows FILE --packets FILE [--ports P,...]: what a vswitch does with each packet,
offline, like ovs-appctl ofproto/trace (flows in ovs-ofctl syntax, one a line; packets in
ovs-ofctl field syntax, one a line; -o json: one object a packet with outputs and the
final header fields)

simdc ofctl dump-flows <host> [--table N]: the flows of a live host's vswitch, with counters
simdc ofctl dump-ports <host>: its ports with counters, fail mode and controller connection
simdc ofctl dump-conntrack <host>: its connection tracker (security groups, NAT translations)
simdc ofctl add-flow <host> <flow> [--force]: add a flow (ovs-ofctl syntax)
simdc ofctl del-flows <host> [table=N|cookie=V/M] [--force]: delete flows
  (tables the controller owns are refused without --force; its next document puts them back)

  --flows FILE      the flow table
  --packets FILE    the packets
  --ports P,...     the switch's ports, where normal floods (default: the ports the flows name)
  --agent A         the host's agent (default: asked of the controller)
  --table N         only table N (dump-flows)
  --force           also the controller's tables (add-flow, del-flows)`,
  trace: `simdc trace <host> <packet> [--agent A] [--hops N]: what a live host's vswitch does with a
packet (ofproto/trace on its tables, changing nothing), then the same on every host a tunnel
output leads to, as ovn-trace follows a packet across chassis. The packet is in ovs-ofctl
field syntax: in_port=1,dl_src=02:...,dl_dst=02:...,ip,nw_src=10.0.0.2,nw_dst=10.0.0.3
(simdc ofctl dump-ports shows the ports, MACs and addresses). -o json: one object a hop.

  --agent A         the first host's agent (default: asked of the controller)
  --hops N          hosts at most (default 8)`,
  traffic: `simdc traffic start <vm> <address> [--kind udp|rr] [--rate PPS] [--size B] [--response-size B] [--port P] [--duration D]
simdc traffic stop <vm> <flow> | stats <vm>: traffic flows from a VM's guest

  --kind K          udp (default): a constant-rate stream, none answered; rr: TCP-like
                    request/response (netperf's TCP_RR): one request out at a time, the next
                    when its response is back or after 1 s, at most --rate a second
  --rate PPS        packets (rr: transactions) a second (default 100, at most 100,000; simulated time)
  --size B          bytes a packet (rr: a request), 64-1450 (the underlay's MTU less VXLAN's 50; default 1000)
  --response-size B rr: bytes a response (default: --size)
  --port P          destination port (default 5001); security groups see it as the TCP/UDP port
  --duration D      stop by itself after D (default: until stopped)
  --host H          the VM's host, without asking the controller
  --agent A         the host's agent, without asking the controller
stats: per flow sent, received (udp: where its target runs; rr: requests answered), loss
(rr: requests timed out), throughput and latency (udp: one way; rr: the round trip)`,
  compose: `simdc compose: the compose deployment of a topology, written into a directory
(docker-compose.yml, deploy/prometheus.yml, and the NATS users in deploy/.auth)

  --hosts N                simulated hosts (default 3)
  --hosts-per-agent K      hosts per agent container (default 1)
  --san M                  SAN node containers (default 2)
  --controllers C          controller containers, one active (default 2)
  --dir DIR                where to write (default: here); then docker-compose up -d there
  --force                  new passwords (they are kept otherwise)`,
  experiment: `simdc experiment list | show <name|file> | schema
simdc experiment run <name|file> [--seed N] [--short] [--repeat K] [--out DIR] [--plan] [--docker]
simdc experiment compare <dir> <dir>
simdc experiment swarm [--runs N] [--seed S] [--out DIR] [--docker]

  --seed N          the schedule's seed (default: the file's, else a fresh one, printed)
  --short           the scenario's short form (what the tests run)
  --repeat K        K runs with seeds N, N+1, ...; each metric aggregated (median, p95, spread)
  --out DIR         where history.jsonl, summary.md, report.html, result.json and logs go
                    (default <data dir>/experiments/<name>-<time>)
  --plan            print the schedule each seed gives, and run nothing
  --docker          run the datacenter as a compose project written for the scenario's
                    topology (process faults become docker kill/pause/restart, and the
                    disconnect/connect steps cut a container off the network)
  --runs N          swarm: how many random scenarios (default 10)`,
};

/** The subcommands (first words after the command) each command takes, for completion. */
const subcommands: Record<string, string[]> = {
  host: ["list", "get"],
  vm: ["create", "list", "get", "delete", "start", "stop", "ping", "nic"],
  volume: ["create", "list", "get", "delete"],
  fault: ["kill", "pause", "resume", "restart", "add", "list", "clear", "nic"],
  wait: ["vm", "host", "volume"],
  experiment: ["list", "show", "schema", "run", "compare", "swarm"],
  ofctl: ["trace", "dump-flows", "dump-ports", "dump-conntrack", "add-flow", "del-flows"],
  sg: ["create", "update", "list", "get", "delete"],
  ext: ["create", "list", "delete", "ping"],
  router: ["create", "list", "delete"],
  net: ["create", "list", "get", "delete", "reachability"],
  traffic: ["start", "stop", "stats"],
};

/** A bash completion script for simdc: commands, subcommands and each command's flags (from its help). */
export function bashCompletion(): string {
  const commands = Object.keys(help).sort();
  const cases = commands
    .map((c) => {
      const flags = [...new Set([...(help[c] ?? "").matchAll(/(?<![\w-])(--[a-z][a-z-]*|-[a-z])\b/g)].map((m) => m[1]))].sort();
      return `    ${c}) words="${[...(subcommands[c] ?? []), ...flags].join(" ")}" ;;`;
    })
    .join("\n");
  return `# bash completion for simdc (simdc completion bash > /etc/bash_completion.d/simdc)
_simdc() {
  local cur=\${COMP_WORDS[COMP_CWORD]} command="" i words
  for ((i = 1; i < COMP_CWORD; i++)); do
    case \${COMP_WORDS[i]} in
      --server|--data-dir|--prefix|--user|-o) ((i++)) ;;
      -*) ;;
      *) command=\${COMP_WORDS[i]}; break ;;
    esac
  done
  if [ -z "$command" ]; then
    COMPREPLY=($(compgen -W "${commands.join(" ")} help completion --version --server --data-dir --prefix --user -o" -- "$cur"))
    return
  fi
  case $command in
${cases}
    *) words="" ;;
  esac
  COMPREPLY=($(compgen -W "$words --help" -- "$cur"))
}
complete -o default -F _simdc simdc
`;
}

/** The help for `command`, or null when there is none. */
export function helpFor(command: string): string | null {
  const text = help[command];
  return text ? `${text}\n${global}\n` : null;
}
