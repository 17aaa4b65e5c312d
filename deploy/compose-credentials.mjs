#!/usr/bin/env node
// Makes the NATS users of the datacenter docker-compose.yml runs: one per
// role, with the same subject permissions `simdc up` gives (an agent may
// publish only its own hosts' subjects, only the controllers manage hosts
// and volumes, the supervisor-less compose has an operator and an observer).
// Writes deploy/.auth/nats.conf (mounted into the NATS servers), one env file
// per service (SIMDC_NATS_USER, SIMDC_NATS_PASSWORD) and <user>.json for the
// CLI (`simdc --data-dir deploy/.auth --server nats://127.0.0.1:4222 ...`
// finds the operator's there as auth/operator.json: see the README).
// Idempotent: passwords are kept unless --force; the permissions are written
// anew each time, so they follow the code.
// Usage: node deploy/compose-credentials.mjs [--force] [--prefix simdc]

import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { authorizationConfig, newPassword, usersFor } from "@simdc/cli";

const here = dirname(fileURLToPath(import.meta.url));
const dir = join(here, ".auth");
const { values } = parseArgs({ options: { force: { type: "boolean" }, prefix: { type: "string", default: "simdc" } } });

// The compose topology, as docker-compose.yml declares it.
const plans = [
  { name: "controller-1", role: "controller", args: [], hostIds: [] },
  { name: "controller-2", role: "controller", args: [], hostIds: [] },
  { name: "san-1", role: "san-storage", args: [], hostIds: [] },
  { name: "san-2", role: "san-storage", args: [], hostIds: [] },
  { name: "agent-1", role: "host-agent", args: [], hostIds: ["host-1"] },
  { name: "agent-2", role: "host-agent", args: [], hostIds: ["host-2"] },
  { name: "agent-3", role: "host-agent", args: [], hostIds: ["host-3"] },
];

/** The password `user` has now (kept across runs unless --force), or a new one. */
function password(user) {
  const file = join(dir, "auth", `${user}.json`);
  if (values.force || !existsSync(file)) return newPassword();
  return JSON.parse(readFileSync(file, "utf8")).password;
}

mkdirSync(join(dir, "auth"), { recursive: true, mode: 0o700 });
const users = usersFor(values.prefix, plans, password);
writeFileSync(join(dir, "nats.conf"), authorizationConfig(users), { mode: 0o600 });
for (const u of users) {
  writeFileSync(join(dir, `${u.user}.env`), `SIMDC_NATS_USER=${u.user}\nSIMDC_NATS_PASSWORD=${u.password}\n`, { mode: 0o600 });
  writeFileSync(join(dir, "auth", `${u.user}.json`), `${JSON.stringify({ user: u.user, password: u.password })}\n`, { mode: 0o600 });
}
console.log(`compose-credentials: wrote ${users.length} users to ${dir}`);
