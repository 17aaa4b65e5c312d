// simdc sg create|list|get|update|delete: security groups, the stateful
// allow rules a NIC's inbound traffic must match (vm create --nic NET,sg=G).

import { networkService } from "@simdc/bus";
import { invalidArgument } from "@simdc/common";
import { simdc } from "@simdc/proto";
import { parse, positionals } from "../args.js";
import { out, plain, printJson, printTable } from "../output.js";
import { listAllSecurityGroups } from "../paging.js";
import { mutationFlags, mutationOf, type CommandContext } from "./resources.js";

import v1 = simdc.v1;

const usage = "usage: simdc sg create <name> [--rule RULE ...] | update <sg> [--rule RULE ...] | list | get <sg> | delete <sg>";
const ruleSyntax = "write any, icmp, tcp[:PORT[-PORT]] or udp[:PORT[-PORT]], then optionally ,from=CIDR";

const protocols: Record<string, v1.SecurityProtocol> = {
  any: v1.SecurityProtocol.SECURITY_PROTOCOL_ANY,
  icmp: v1.SecurityProtocol.SECURITY_PROTOCOL_ICMP,
  tcp: v1.SecurityProtocol.SECURITY_PROTOCOL_TCP,
  udp: v1.SecurityProtocol.SECURITY_PROTOCOL_UDP,
};

/** --rule tcp:80-90,from=10.0.0.0/8 (the controller checks the numbers and the CIDR). @throws SimdcError INVALID_ARGUMENT. */
export function parseRule(text: string): v1.ISecurityRule {
  const [head = "", ...options] = text.split(",");
  const [name = "", ports] = head.split(":");
  const protocol = protocols[name];
  if (protocol === undefined) throw invalidArgument(`--rule ${text}: ${ruleSyntax}`);
  const rule: v1.ISecurityRule = { protocol };
  if (ports !== undefined) {
    const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(ports);
    if (!m) throw invalidArgument(`--rule ${text}: ports are PORT or PORT-PORT`);
    rule.portMin = Number(m[1]);
    rule.portMax = Number(m[2] ?? m[1]);
  }
  for (const option of options) {
    const [key, value = ""] = option.split("=");
    if (key !== "from" || !value) throw invalidArgument(`--rule ${text}: ${ruleSyntax}`);
    rule.remoteCidr = value;
  }
  return rule;
}

/** A rule as --rule takes it. */
export function formatRule(rule: v1.ISecurityRule): string {
  const name = Object.keys(protocols).find((k) => protocols[k] === rule.protocol) ?? "?";
  const ports = rule.portMin ? `:${rule.portMin}${rule.portMax !== rule.portMin ? `-${rule.portMax}` : ""}` : "";
  return `${name}${ports}${rule.remoteCidr ? `,from=${rule.remoteCidr}` : ""}`;
}

const rulesOf = (argv: string[]) => {
  const parsed = parse(argv, { rule: { type: "string", multiple: true }, ...mutationFlags });
  const rules = ((parsed.flags["rule"] as unknown as string[] | undefined) ?? []).map(parseRule);
  return { parsed, rules };
};

function show(ctx: CommandContext, groups: v1.ISecurityGroup[]): void {
  if (ctx.output === "json") return printJson(groups.map((g) => plain(v1.SecurityGroup, g)));
  printTable(
    ["SECURITY GROUP", "REVISION", "INBOUND ALLOWED"],
    groups.map((g) => [g.id ?? "", String(g.revision ?? 0), (g.rules ?? []).map(formatRule).join(" ") || "(nothing)"]),
  );
}

export async function securityGroupCommand(ctx: CommandContext, verb: string | undefined, argv: string[]): Promise<void> {
  const bus = await ctx.bus();
  switch (verb) {
    case "create": {
      const { parsed, rules } = rulesOf(argv);
      const [name] = positionals(parsed, ["name"]);
      const { securityGroup } = await bus.call(networkService.CreateSecurityGroup, { name: name!, rules, mutation: mutationOf(parsed.flags) });
      return show(ctx, [securityGroup ?? {}]);
    }
    case "update": {
      const { parsed, rules } = rulesOf(argv);
      const [id] = positionals(parsed, ["sg"]);
      const { securityGroup } = await bus.call(networkService.UpdateSecurityGroup, { securityGroupId: id!, rules, mutation: mutationOf(parsed.flags) });
      return show(ctx, [securityGroup ?? {}]);
    }
    case "list": {
      positionals(parse(argv, {}), []);
      return show(ctx, await listAllSecurityGroups(bus));
    }
    case "get": {
      const [id] = positionals(parse(argv, {}), ["sg"]);
      const { securityGroup } = await bus.call(networkService.GetSecurityGroup, { securityGroupId: id! });
      return show(ctx, [securityGroup ?? {}]);
    }
    case "delete": {
      const parsed = parse(argv, mutationFlags);
      const [id] = positionals(parsed, ["sg"]);
      await bus.call(networkService.DeleteSecurityGroup, { securityGroupId: id!, mutation: mutationOf(parsed.flags) });
      out(`security group ${id} deleted\n`);
      return;
    }
    default:
      throw invalidArgument(usage);
  }
}
