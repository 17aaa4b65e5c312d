// Lint holds the package graph in place: services meet only on the wire, the
// pure packages stay leaves, and only the bus talks to NATS in production
// code. Tests and benchmarks may use the NATS client directly.
import tseslint from "typescript-eslint";

const services = ["@simdc/controller", "@simdc/host-agent", "@simdc/san-storage"];
const deepImports = { group: ["@simdc/*/*"], message: "import a package's public entry, not its files" };
const nats = { name: "nats", message: "only @simdc/bus talks to NATS in production code" };
const pattern = (names, message) => ({ group: names, message });

/** Forbids `forbidden` packages (and NATS unless allowNats) in one package's production code. */
function boundary(pkg, forbidden, { allowNats = false } = {}) {
  return {
    files: [`packages/${pkg}/src/**/*.ts`],
    ignores: ["**/*.test.ts"],
    rules: {
      "no-restricted-imports": [
        "error",
        {
          paths: allowNats ? [] : [nats],
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
  boundary("common", ["@simdc/*"]),
  boundary("bus", [...services, "@simdc/cli", "@simdc/testkit"], { allowNats: true }),
  boundary("controller", ["@simdc/host-agent", "@simdc/san-storage", "@simdc/cli", "@simdc/testkit"]),
  boundary("host-agent", ["@simdc/controller", "@simdc/san-storage", "@simdc/cli", "@simdc/testkit"]),
  boundary("san-storage", ["@simdc/controller", "@simdc/host-agent", "@simdc/cli", "@simdc/testkit"]),
  boundary("cli", [...services, "@simdc/testkit"]),
  boundary("testkit", services),
  {
    files: ["**/*.test.ts"],
    rules: { "no-restricted-imports": ["error", { patterns: [deepImports] }] },
  },
);
