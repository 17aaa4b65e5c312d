// Creates VMs in a running datacenter as fast as 64 in flight go, as the
// operator, and prints the rate: node bench/create-load.mjs <data dir> <count> [prefix]
// (a helper for measuring by hand; bench/run.mjs does the same inside its runs).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { computeService, storageService } from "@simdc/bus";
import { connectTestBus } from "@simdc/testkit";
import { SimdcError } from "@simdc/common";

const [dataDir, countText, prefix = "vm"] = process.argv.slice(2);
const count = Number(countText);
const record = JSON.parse(readFileSync(join(dataDir, "up.json"), "utf8"));
const operator = JSON.parse(readFileSync(join(dataDir, "auth", "operator.json"), "utf8"));
const bus = await connectTestBus(record.natsUrl, { user: operator.user, password: operator.password, processId: "load" });
await bus.call(storageService.CreateVolume, { name: "boot", sizeMib: 64 }).catch((err) => {
  if (!(err instanceof SimdcError && err.code === "ALREADY_EXISTS")) throw err;
});
let next = 0;
const started = performance.now();
await Promise.all(
  Array.from({ length: 64 }, async () => {
    for (let i = next++; i < count; i = next++) {
      await bus.call(computeService.CreateVm, { name: `${prefix}-${i}`, spec: { vcpus: 1, memoryMib: 128, bootVolume: "boot" } }, { timeoutMs: 60_000 });
    }
  }),
);
const s = (performance.now() - started) / 1000;
console.log(`${count} VMs in ${s.toFixed(1)} s: ${(count / s).toFixed(0)}/s`);
await bus.close();
