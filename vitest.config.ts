import { defineConfig } from "vitest/config";

// Unit and integration tests live beside the code and run two files at a time.
// e2e tests drive real processes and containers, and several assert timings (a
// host back within its heartbeat bound, a flow's packet count): on a two-core
// machine two such files at once starve each other, so they run after the rest,
// one file at a time.
export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 120_000,
    projects: [
      {
        extends: true,
        test: {
          name: "packages",
          include: ["packages/*/src/**/*.test.ts"],
          maxWorkers: 2,
          sequence: { groupOrder: 0 },
        },
      },
      {
        extends: true,
        test: {
          name: "e2e",
          include: ["e2e/**/*.test.ts"],
          maxWorkers: 1,
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
});
