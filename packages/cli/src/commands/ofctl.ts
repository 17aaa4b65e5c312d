// simdc ofctl trace: the vswitch's verdict on packets through a flow table,
// offline (no cluster): flows in ovs-ofctl syntax from a file, packets one a
// line in ovs-ofctl field syntax, like `ovs-appctl ofproto/trace`.

import { readFileSync } from "node:fs";
import { invalidArgument } from "@simdc/common";
import { formatFlow, packetFields, parseFlowFile, parsePacket, Vswitch } from "@simdc/vswitch";
import { parse, positionals, stringFlag } from "../args.js";
import { out } from "../output.js";
import type { CommandContext } from "./resources.js";
import { liveOfctl } from "./vswitch.js";

const usage = "usage: simdc ofctl trace --flows FILE --packets FILE [-o json] | dump-flows HOST | dump-ports HOST | dump-conntrack HOST | add-flow HOST FLOW | del-flows HOST [FILTER]";

export async function ofctlCommand(ctx: CommandContext, verb: string | undefined, argv: string[]): Promise<void> {
  if (verb === "dump-flows" || verb === "dump-ports" || verb === "dump-conntrack" || verb === "add-flow" || verb === "del-flows") return liveOfctl(ctx, verb, argv);
  if (verb !== "trace") throw invalidArgument(usage);
  const parsed = parse(argv, { flows: { type: "string" }, packets: { type: "string" }, ports: { type: "string" } });
  positionals(parsed, []);
  const flowsFile = stringFlag(parsed.flags, "flows");
  const packetsFile = stringFlag(parsed.flags, "packets");
  if (!flowsFile || !packetsFile) throw invalidArgument(usage);
  const specs = parseFlowFile(readFileSync(flowsFile, "utf8"));
  // The ports normal floods to: those the flows name, unless given.
  const portsText = stringFlag(parsed.flags, "ports");
  const ports = portsText ? portsText.split(",").map(Number) : [...new Set(specs.flatMap((s) => [...s.match.filter((m) => m.field === 0).map((m) => Number(m.value)), ...s.actions.flatMap((a) => (a.kind === "output" ? [a.port] : []))]))].sort((a, b) => a - b);
  const vs = new Vswitch({ ports, now: () => 0 });
  for (const spec of specs) vs.addFlow(spec);
  const lines = readFileSync(packetsFile, "utf8").split("\n");
  for (const [i, raw] of lines.entries()) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    let packet;
    try {
      packet = parsePacket(line);
    } catch (err) {
      throw invalidArgument(`${packetsFile} line ${i + 1}: ${(err as Error).message}`);
    }
    const verdict = vs.trace(packet);
    if (ctx.output === "json") {
      out(`${JSON.stringify({ packet: line, outputs: verdict.outputs, ...packetFields(verdict.packet), flows: verdict.matched.map(formatFlow), packetIns: verdict.packetIns })}\n`);
      continue;
    }
    out(`${line}\n`);
    for (const flow of verdict.matched) out(`  ${formatFlow(flow)}\n`);
    out(`  => ${verdict.outputs.length ? `output ${verdict.outputs.join(", ")}` : "drop"}${verdict.packetIns ? `, ${verdict.packetIns} to the controller` : ""}\n`);
  }
}
