// simdc router create|list|delete: logical routers between one tenant's
// networks; each host routes for its own VMs.

import { networkService } from "@simdc/bus";
import { invalidArgument } from "@simdc/common";
import { simdc } from "@simdc/proto";
import { parse, positionals } from "../args.js";
import { out, plain, printJson, printTable } from "../output.js";
import { listAllRouters } from "../paging.js";
import { mutationFlags, mutationOf, type CommandContext } from "./resources.js";

import v1 = simdc.v1;

const usage = "usage: simdc router create <name> --network NET --network NET [...] | list | delete <router>";

export async function routerCommand(ctx: CommandContext, verb: string | undefined, argv: string[]): Promise<void> {
  const bus = await ctx.bus();
  switch (verb) {
    case "create": {
      const parsed = parse(argv, { network: { type: "string", multiple: true }, ...mutationFlags });
      const [name] = positionals(parsed, ["name"]);
      const networks = (parsed.flags["network"] as unknown as string[] | undefined) ?? [];
      const { router } = await bus.call(networkService.CreateRouter, { name: name!, networks, mutation: mutationOf(parsed.flags) });
      if (ctx.output === "json") return printJson(plain(v1.Router, router));
      out(`router ${router?.id}: ${(router?.networks ?? []).join(", ")} (tenant ${router?.tenant})\n`);
      return;
    }
    case "list": {
      positionals(parse(argv, {}), []);
      const routers = await listAllRouters(bus);
      if (ctx.output === "json") return printJson(routers.map((r) => plain(v1.Router, r)));
      printTable(["ROUTER", "TENANT", "NETWORKS"], routers.map((r) => [r.id ?? "", r.tenant ?? "", (r.networks ?? []).join(", ")]));
      return;
    }
    case "delete": {
      const parsed = parse(argv, mutationFlags);
      const [id] = positionals(parsed, ["router"]);
      await bus.call(networkService.DeleteRouter, { routerId: id!, mutation: mutationOf(parsed.flags) });
      out(`router ${id} deleted\n`);
      return;
    }
    default:
      throw invalidArgument(usage);
  }
}
