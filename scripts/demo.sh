#!/usr/bin/env bash
# The one command that runs simdc's main job on a fresh machine: set-up, then
# a local datacenter (nats-server, controller, SAN nodes, host agents as
# separate processes) with a short demo, in the foreground until Ctrl-C.
# Extra arguments go to `simdc up` (e.g. --hosts 10 --hosts-per-agent 5).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec node packages/cli/dist/main.js up --demo "$@"
