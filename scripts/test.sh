#!/usr/bin/env bash
# The one command that passes every test on a fresh machine: set-up (with the
# Docker engine and simdc's images, for the e2e tests on docker-compose.yml),
# then lint and every test, unit to e2e. Prints a closing
# "Tests: N passed, N failed" line; a file that failed outside its tests (an
# import or hook error) is named there too, since it counts no failed test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --docker
npm run --silent lint
results=$(mktemp /tmp/simdc-vitest-XXXXXX.json)
status=0
npx vitest run --reporter=default --reporter=json --outputFile.json="$results" "$@" || status=$?
node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  const broken = r.testResults
    .filter((f) => f.status === "failed" && f.assertionResults.every((t) => t.status !== "failed"))
    .map((f) => require("path").relative(process.cwd(), f.name));
  const files = broken.length ? `; files failed outside their tests: ${broken.join(", ")}` : "";
  console.log(`Tests: ${r.numPassedTests} passed, ${r.numFailedTests} failed, ${r.numPendingTests + r.numTodoTests} skipped${files}`);
' "$results" || true
rm -f "$results"
exit "$status"
