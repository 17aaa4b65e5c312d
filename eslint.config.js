// Lint holds the package graph in place: services meet only on the wire, the
// pure packages stay leaves, and only the bus talks to NATS in production
// code. It also keeps time and chance injectable: production code reads the
// time and sets timers only through a Clock, and draws randomness only from
// a seeded Rng (common's clock.ts and random.ts are the one exception), so a
// run can go faster than real time and be repeated from its seed. Tests and
// benchmarks may use the NATS client, timers and Math.random directly.
import tseslint from "typescript-eslint";

const services = ["@simdc/controller", "@simdc/host-agent", "@simdc/san-storage"];
const deepImports = { group: ["@simdc/*/*"], message: "import a package's public entry, not its files" };
const nats = { name: "nats", message: "only @simdc/bus talks to NATS in production code" };
const pattern = (names, message) => ({ group: names, message });
const clockOnly = "use the Clock from @simdc/common, so time can be simulated";
const rngOnly = "use an Rng from @simdc/common (or uniqueId for identities), so a run can be repeated from its seed";
const untimed = [
  { name: "node:timers", message: clockOnly },
  { name: "node:timers/promises", message: clockOnly },
  { name: "node:crypto", importNames: ["randomUUID", "randomBytes", "randomInt"], message: rngOnly },
];
const production = { files: ["packages/*/src/**/*.ts"], ignores: ["**/*.test.ts", "packages/common/src/clock.ts", "packages/common/src/random.ts"] };

/** Forbids `forbidden` packages (and NATS unless allowNats) in one package's production code. */
function boundary(pkg, forbidden, { allowNats = false } = {}) {
  return {
    files: [`packages/${pkg}/src/**/*.ts`],
    ignores: production.ignores,
    rules: {
      "no-restricted-imports": [
        "error",
        {
          paths: [...(allowNats ? [] : [nats]), ...untimed],
          patterns: [deepImports, ...(forbidden.length ? [pattern(forbidden, `${pkg} may not depend on these`)] : [])],
        },
      ],
    },
  };
}

export default tseslint.config(
  { ignores: ["**/dist/**", "**/node_modules/**", "packages/proto/gen/**", "**/*.js", "**/*.mjs"] },
  ...tseslint.configs.recommended,
  {
    rules: {
      "@typescript-eslint/no-explicit-any": "off",
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_" }],
      "no-empty": ["error", { allowEmptyCatch: false }],
    },
  },
  {
    ...production,
    rules: {
      "no-restricted-globals": [
        "error",
        ...["setTimeout", "setInterval", "setImmediate", "clearTimeout", "clearInterval"].map((name) => ({ name, message: clockOnly })),
      ],
      "no-restricted-properties": [
        "error",
        { object: "Date", property: "now", message: clockOnly },
        { object: "Math", property: "random", message: rngOnly },
      ],
    },
  },
  boundary("common", ["@simdc/*"]),
  boundary("bus", [...services, "@simdc/cli", "@simdc/testkit"], { allowNats: true }),
  boundary("controller", ["@simdc/host-agent", "@simdc/san-storage", "@simdc/cli", "@simdc/testkit"]),
  boundary("host-agent", ["@simdc/controller", "@simdc/san-storage", "@simdc/cli", "@simdc/testkit"]),
  boundary("san-storage", ["@simdc/controller", "@simdc/host-agent", "@simdc/cli", "@simdc/testkit"]),
  boundary("history", [...services, "@simdc/cli", "@simdc/testkit"]),
  boundary("vswitch", ["@simdc/bus", "@simdc/history", "@simdc/experiment", ...services, "@simdc/cli", "@simdc/testkit"]),
  boundary("hypervisor", ["@simdc/bus", "@simdc/history", "@simdc/experiment", "@simdc/vswitch", ...services, "@simdc/cli", "@simdc/testkit"]),
  boundary("experiment", [...services, "@simdc/bus", "@simdc/cli", "@simdc/testkit"]),
  boundary("cli", [...services, "@simdc/testkit"]),
  boundary("testkit", services),
  {
    files: ["**/*.test.ts"],
    rules: { "no-restricted-imports": ["error", { patterns: [deepImports] }] },
  },
);
