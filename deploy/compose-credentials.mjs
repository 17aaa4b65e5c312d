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
// (`simdc compose` writes the same, with the compose file, for any topology.)

import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { defaultComposeTopology, writeComposeCredentials } from "@simdc/cli";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const { values } = parseArgs({ options: { force: { type: "boolean" }, prefix: { type: "string", default: "simdc" } } });
// The topology of the repository's docker-compose.yml (simdc compose writes others).
const count = writeComposeCredentials(root, defaultComposeTopology, values.prefix, values.force === true);
console.log(`compose-credentials: wrote ${count} users to ${join(root, "deploy", ".auth")}`);
