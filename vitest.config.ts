import { defineConfig } from "vitest/config";

// Unit and integration tests live beside the code; e2e tests drive real
// processes and containers and run last, one file at a time.
export default defineConfig({
  test: {
    include: ["packages/*/src/**/*.test.ts", "e2e/**/*.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Two cores: files that each start servers and child processes compete.
    maxWorkers: 2,
    fileParallelism: true,
    sequence: { groupOrder: 0 },
  },
});
