// Generates gen/simdc.js and gen/simdc.d.ts from proto/simdc/v1/*.proto with
// pbjs/pbts. Skips the work when the output is newer than every .proto file,
// so `npm run build` stays fast; the output is never edited or committed.
import { execFileSync } from "node:child_process";
import { mkdirSync, readdirSync, statSync, existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..", "..", "..");
const protoDir = join(root, "proto", "simdc", "v1");
const genDir = join(here, "..", "gen");
const outJs = join(genDir, "simdc.js");
const outDts = join(genDir, "simdc.d.ts");

const protos = readdirSync(protoDir).filter((f) => f.endsWith(".proto")).sort().map((f) => join(protoDir, f));
const newestProtoMs = Math.max(statSync(here + "/codegen.mjs").mtimeMs, ...protos.map((p) => statSync(p).mtimeMs));
const upToDate = existsSync(outJs) && existsSync(outDts) && statSync(outDts).mtimeMs >= newestProtoMs;
if (upToDate && !process.argv.includes("--force")) process.exit(0);

mkdirSync(genDir, { recursive: true });
const require = createRequire(import.meta.url);
const cliDir = dirname(require.resolve("protobufjs-cli/package.json"));
const run = (script, args) => execFileSync(process.execPath, [join(cliDir, "bin", script), ...args], { stdio: "inherit" });
run("pbjs", ["-t", "static-module", "-w", "es6", "--es6", "-p", join(root, "proto"), "-o", outJs, ...protos]);
run("pbts", ["-o", outDts, outJs]);
console.log(`codegen: ${protos.length} proto files -> ${genDir}`);
