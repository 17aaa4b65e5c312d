// simdc ext create|list|delete|ping: external endpoints, the outside world's
// addresses on the simulated external network, each played by one host's
// vswitch. Bridge networks' VMs reach them and are reached from them; NAT
// networks' VMs reach them as their host's uplink address; host-only ones
// neither.

import { networkService } from "@simdc/bus";
import { listAllEndpoints } from "../paging.js";
import { invalidArgument } from "@simdc/common";
import { simdc } from "@simdc/proto";
import { parse, positionals, stringFlag } from "../args.js";
import { out, plain, printJson, printTable } from "../output.js";
import { mutationFlags, mutationOf, type CommandContext } from "./resources.js";
import { vmPing } from "./vswitch.js";

import v1 = simdc.v1;

const usage = "usage: simdc ext create <name> [--ip A] [--host H] | list | delete <name> | ping <name> <address> [-c N] [-i D] [-W D]";

export async function externalCommand(ctx: CommandContext, verb: string | undefined, argv: string[]): Promise<void> {
  const bus = await ctx.bus();
  switch (verb) {
    case "create": {
      const parsed = parse(argv, { ip: { type: "string" }, host: { type: "string" }, ...mutationFlags });
      const [name] = positionals(parsed, ["name"]);
      const { endpoint } = await bus.call(networkService.CreateExternalEndpoint, { name: name!, ip: stringFlag(parsed.flags, "ip") ?? "", hostId: stringFlag(parsed.flags, "host") ?? "", mutation: mutationOf(parsed.flags) });
      if (ctx.output === "json") return printJson(plain(v1.ExternalEndpoint, endpoint));
      out(`external endpoint ${endpoint?.id}: ${endpoint?.ip} (${endpoint?.mac}), played by ${endpoint?.hostId}\n`);
      return;
    }
    case "list": {
      positionals(parse(argv, {}), []);
      const endpoints = await listAllEndpoints(bus);
      const { externalCidr, gateway } = await bus.call(networkService.ListExternalEndpoints, { pageSize: 1 });
      if (ctx.output === "json") return printJson({ externalCidr, gateway, endpoints: endpoints.map((e) => plain(v1.ExternalEndpoint, e)) });
      out(`external network ${externalCidr}, router ${gateway}\n`);
      printTable(
        ["ENDPOINT", "ADDRESS", "MAC", "HOST"],
        endpoints.map((e) => [e.id ?? "", e.ip ?? "", e.mac ?? "", e.hostId ?? ""]),
      );
      return;
    }
    case "delete": {
      const parsed = parse(argv, mutationFlags);
      const [id] = positionals(parsed, ["endpoint"]);
      await bus.call(networkService.DeleteExternalEndpoint, { endpointId: id!, mutation: mutationOf(parsed.flags) });
      out(`external endpoint ${id} deleted\n`);
      return;
    }
    case "ping": {
      // An endpoint pings from its host's vswitch like a VM; its host is where the controller placed it.
      const id = argv.find((a) => !a.startsWith("-"));
      const endpoint = (await listAllEndpoints(bus)).find((e) => e.id === id);
      if (id && !endpoint) throw invalidArgument(`no external endpoint ${id}`);
      return vmPing(ctx, [...argv, "--host", endpoint?.hostId ?? ""]);
    }
    default:
      throw invalidArgument(usage);
  }
}
