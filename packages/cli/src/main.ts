#!/usr/bin/env node
// The simdc command. Global flags may stand anywhere; every failure is one
// line on stderr and a non-zero exit (2 for usage, 1 for everything else).

import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { SimdcError, invalidArgument } from "@simdc/common";
import type { Bus } from "@simdc/bus";
import { connectCli, defaultDataDir, type GlobalOptions } from "./context.js";
import { downCommand, faultCommand, logsCommand, statusCommand } from "./commands/ops.js";
import { hostCommand, syncCommand, vmCommand, volumeCommand, type CommandContext } from "./commands/resources.js";
import { upCommand } from "./commands/up.js";
import { eventsCommand, waitCommand } from "./commands/watch.js";
import { experimentCommand } from "./commands/experiment.js";
import { composeCommand } from "./commands/compose.js";
import { ofctlCommand } from "./commands/ofctl.js";
import { securityGroupCommand } from "./commands/security-group.js";
import { externalCommand } from "./commands/external.js";
import { routerCommand } from "./commands/router.js";
import { traceCommand, trafficCommand } from "./commands/vswitch.js";
import { networkCommand } from "./commands/network.js";
import { topCommand } from "./commands/hypervisor.js";
import { flushStdout, out, quietOnClosedPipe, type OutputFormat } from "./output.js";
import { bashCompletion, helpFor } from "./help.js";

const usage = `usage: simdc [--server URL] [--data-dir DIR] [--prefix P] [--user U] [-o table|json] <command>
       simdc <command> --help     every flag of one command;  simdc --version;  simdc completion bash

  up [--hosts N] [--san M] [--hosts-per-agent K] [--controllers C] [--nats-port P]
     [--seed S] [--time-scale X] [--demo]
                         start a local datacenter in the foreground (Ctrl-C stops it)
  down                   stop the datacenter 'up' runs from --data-dir
  status                 seed, controllers, processes, hosts, SAN nodes, VMs, documents
  logs [process] [-f]    pretty-printed logs of one process or all
  host list|get <host>
  sync [--wait] [--wait-timeout-ms T]
                         how far the hosts realized their documents (--wait: until all have)
  vm create <name> --boot-volume V [--vcpus N] [--memory-mib M] [--off]
     [--cpu-shares S] [--cpu-reservation-mhz R] [--cpu-limit-mhz L] [--mem-shares S]
     [--mem-reservation-mib R] [--workload KIND[,k=v]] [--phase KIND:D[,k=v] ...] [--image I]
  vm resources <vm> [the same --cpu-*, --mem-*, --workload, --phase, --image, --share-salt]
                         a VM's shares, reservations, limit and workload, in place
  vm list [--host H] | get|delete|start|stop <vm>
  volume create <name> [--size-mib N] | list | get|delete <volume>
                         changing commands take --wait none|controller|hosts,
                         --wait-timeout-ms T and --request-id ID
  fault kill|pause|resume|restart <process>
                         process faults on what 'up' started (nats too)
  fault add <id> --action drop|delay|duplicate|partition [--subject S] [--from ID]
        [--to ID] [--percent P] [--delay-ms D] [--jitter-ms J] [--copies N]
        [--after D] [--duration D] [--wait]
  fault list | clear [id]
                         bus faults, applied by every process (ids: host-3, san-1,
                         agent-2, controller, host-agent, ...); D is 500ms, 30s, 2m
  fault nic <host> [--nic nic0|nic1] [--mbps M] [--queue-kib Q] [--for D]
                         a host's physical NIC slowed or its queue shrunk for a while
  fault memory <host> --pressure-mib N
                         memory taken on a host outside its VMs (0 gives it back)
  top [--hosts H,...] [--sort ready|used|cstp|...] [--rows N] [--delay D]
                         esxtop for the datacenter: hosts' and VMs' CPU and memory, live
  events [-w] [--kind K,...] [--id ID,...] [--since all|5m|ISO] [--record FILE]
                         what happened (kept a day), and with -w what happens next
  net create <name> --mode bridge|host-only|nat --subnet CIDR [--subnet CIDR] [--vlan N] [--tenant T]
  net list | get|delete <net> | reachability
                         logical networks; VMs attach with vm create --nic NET
  router create <name> --network NET --network NET [...] | list | delete <router>
                         logical routers between one tenant's networks
  sg create <name> [--rule any|icmp|tcp[:P[-P]]|udp[:P[-P]][,from=CIDR] ...] | update <sg> [--rule ...]
  sg list | get|delete <sg>
                         security groups: stateful inbound allow rules (vm create --nic NET,sg=G)
  ext create <name> [--ip A] [--host H] | list | delete <name> | ping <name> <address>
                         external endpoints: the outside world (198.18.0.0/16) for bridge
                         and NAT networks to reach
  vm ping <vm> <address> [-c N] [-i 1s]
                         ICMP echo from a VM's guest through its vswitch
  traffic start <vm> <address> [--kind udp|rr] [--rate PPS] [--size B] [--duration D] | stop <vm> <flow> | stats <vm>
                         UDP streams and TCP-like request/response flows: sent, received, loss, latency
  ofctl dump-flows|dump-ports|dump-conntrack <host>, add-flow <host> <flow>, del-flows <host> [FILTER]
                         a live host's vswitch (the controller's tables need --force)
  ofctl trace --flows FILE --packets FILE [--ports P,...]
                         what a vswitch does with each packet (OVS ofproto/trace, offline)
  trace <host> <packet> [--hops N]
                         a packet through a live host's tables and across its tunnels
  compose [--hosts N] [--hosts-per-agent K] [--san M] [--controllers C] [--dir DIR]
                         the compose deployment of a topology (docker-compose.yml,
                         deploy/prometheus.yml, NATS users) written into DIR
  experiment list | show <name|file> | schema
  experiment run <name|file> [--seed N] [--short] [--repeat K] [--out DIR] [--plan] [--docker]
  experiment compare <dir> <dir>
                         a fault-injection experiment on a fresh datacenter: its
                         timeline, history, checkers and summary (see scenarios/)
  wait vm|host|volume <id> --for STATE [--timeout 30s]
                         until the controller shows it in that state (vm: running,
                         stopped, failed, deleted, ...; host: connected, disconnected)

NATS is found from --server, else NATS_URL, else what 'up' recorded in --data-dir
(default ./.simdc, or SIMDC_DATA_DIR). 'up' makes a NATS user per role; the CLI
connects as --user (default operator) with the password 'up' wrote to
<data dir>/auth/<user>.json, or SIMDC_NATS_USER and SIMDC_NATS_PASSWORD.`;

/** The CLI package's version. */
function cliVersion(): string {
  const manifest = join(dirname(fileURLToPath(import.meta.url)), "..", "package.json");
  return (JSON.parse(readFileSync(manifest, "utf8")) as { version: string }).version;
}

/** Takes the global flags out of argv wherever they stand. */
function splitGlobal(argv: string[]): { global: GlobalOptions; output: OutputFormat; rest: string[] } {
  const global: GlobalOptions = { dataDir: defaultDataDir() };
  let output: OutputFormat = "table";
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const [flag, inline] = arg.startsWith("--") && arg.includes("=") ? [arg.slice(0, arg.indexOf("=")), arg.slice(arg.indexOf("=") + 1)] : [arg, undefined];
    if (!["--server", "--data-dir", "--prefix", "--user", "-o", "--output"].includes(flag)) {
      rest.push(arg);
      continue;
    }
    const value = inline ?? argv[++i];
    if (value === undefined) throw invalidArgument(`${flag} needs a value`);
    if (flag === "--server") global.server = value;
    else if (flag === "--data-dir") global.dataDir = value;
    else if (flag === "--prefix") global.prefix = value;
    else if (flag === "--user") global.user = value;
    else if (value === "table" || value === "json") output = value;
    else throw invalidArgument(`-o must be table or json, got ${JSON.stringify(value)}`);
  }
  return { global, output, rest };
}

/** @returns true when the command keeps running (up supervises until a signal). */
async function main(argv: string[]): Promise<boolean> {
  const { global, output, rest } = splitGlobal(argv);
  const [command, verb, ...more] = rest;
  if (command === "completion") {
    if (verb !== "bash") throw invalidArgument("usage: simdc completion bash");
    out(bashCompletion());
    return false;
  }
  if (command === "--version" || command === "version") {
    out(`simdc ${cliVersion()}\n`);
    return false;
  }
  const help = command ? helpFor(command) : null;
  if (help && rest.slice(1).some((a) => a === "--help" || a === "-h" || a === "help")) {
    out(help);
    return false;
  }
  let bus: Bus | null = null;
  const ctx: CommandContext = { output, bus: async () => (bus ??= await connectCli(global)) };
  try {
    switch (command) {
      case "up":
        await upCommand(global, rest.slice(1));
        return true;
      case "down":
        await downCommand(global, rest.slice(1));
        return false;
      case "status":
        await statusCommand(global, ctx, rest.slice(1));
        return false;
      case "sync":
        await syncCommand(ctx, rest.slice(1));
        return false;
      case "logs":
        await logsCommand(global, rest.slice(1));
        return false;
      case "host":
        await hostCommand(ctx, verb, more);
        return false;
      case "vm":
        await vmCommand(ctx, verb, more);
        return false;
      case "volume":
        await volumeCommand(ctx, verb, more);
        return false;
      case "fault":
        await faultCommand(global, ctx, verb, more);
        return false;
      case "events":
        await eventsCommand(ctx, rest.slice(1));
        return false;
      case "wait":
        await waitCommand(ctx, verb, more);
        return false;
      case "net":
        await networkCommand(ctx, verb, more);
        return false;
      case "sg":
        await securityGroupCommand(ctx, verb, more);
        return false;
      case "ext":
        await externalCommand(ctx, verb, more);
        return false;
      case "router":
        await routerCommand(ctx, verb, more);
        return false;
      case "ofctl":
        await ofctlCommand(ctx, verb, more);
        return false;
      case "traffic":
        await trafficCommand(ctx, verb, more);
        return false;
      case "top":
        await topCommand(ctx, rest.slice(1));
        return false;
      case "trace":
        await traceCommand(ctx, rest.slice(1));
        return false;
      case "compose":
        await composeCommand(global, rest.slice(1));
        return false;
      case "experiment":
        await experimentCommand(global, ctx, verb, more);
        return false;
      case undefined:
      case "help":
      case "--help":
      case "-h":
        out(`${usage}\n`);
        return false;
      default:
        throw invalidArgument(`unknown command ${JSON.stringify(command)}; 'simdc help' lists them`);
    }
  } finally {
    if (command !== "up") await (bus as Bus | null)?.close();
  }
}

/** Exits once stdout has taken everything written, so piped output is never cut short. */
async function exit(code: number): Promise<never> {
  await flushStdout();
  process.exit(code);
}

quietOnClosedPipe();
main(process.argv.slice(2)).then(
  async (keepRunning) => {
    // 'up' keeps running on its children and timers; every other command is done.
    if (!keepRunning) await exit(typeof process.exitCode === "number" ? process.exitCode : 0);
  },
  async (err: unknown) => {
    if (err instanceof SimdcError) {
      process.stderr.write(`simdc: ${err.toString()}\n`);
      await exit(err.code === "INVALID_ARGUMENT" ? 2 : 1);
    }
    process.stderr.write(`simdc: INTERNAL: ${err instanceof Error ? err.stack : String(err)}\n`);
    await exit(1);
  },
);
