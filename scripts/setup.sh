#!/usr/bin/env bash
# Brings a fresh Debian/Ubuntu machine (or an already set-up one, quickly) to
# where simdc runs and tests: nats-server, npm dependencies, the build and,
# with --docker, a running Docker engine with compose and simdc's images.
# Idempotent: each step checks before it acts.
set -euo pipefail
cd "$(dirname "$0")/.."

want_docker=false
for arg in "$@"; do
  case "$arg" in
    --docker) want_docker=true ;;
    *) echo "setup: unknown option $arg (known: --docker)" >&2; exit 2 ;;
  esac
done

say() { echo "setup: $*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else echo "setup: need root for: $*" >&2; exit 1; fi; }
apt_updated=false
apt_install() {
  if ! command -v apt-get >/dev/null; then
    echo "setup: $* missing and this is not a Debian-like system; install it and run again" >&2
    exit 1
  fi
  if [ "$apt_updated" = false ]; then as_root apt-get update -qq; apt_updated=true; fi
  say "installing $* from the OS packages"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ]; then
  echo "setup: simdc needs Node.js 20 or newer (found: $(node --version 2>/dev/null || echo none))" >&2
  exit 1
fi

if ! command -v nats-server >/dev/null && [ ! -x /usr/sbin/nats-server ]; then
  apt_install nats-server
fi

# The Python client in e2e/python needs protoc and python3-protobuf; Debian's
# package serves /usr/bin/python3, which is why that interpreter is checked.
command -v protoc >/dev/null || apt_install protobuf-compiler
/usr/bin/python3 -c 'import google.protobuf' 2>/dev/null || apt_install python3 python3-protobuf

# The SAN tests trace the process's system calls (strace) to check its
# fdatasyncs, and fail a loop-mounted ext4 (mkfs.ext4) to make a read-only disk.
command -v strace >/dev/null || apt_install strace
command -v mkfs.ext4 >/dev/null || [ -x /usr/sbin/mkfs.ext4 ] || apt_install e2fsprogs

# The tests open experiment reports in a real headless browser, and check
# the vswitch against Open vSwitch (run in user space: no kernel module).
if [ "$want_docker" = true ]; then
  command -v chromium >/dev/null || apt_install chromium
  [ -x /usr/sbin/ovs-vswitchd ] || apt_install openvswitch-switch
fi

if [ "$want_docker" = true ]; then
  command -v dockerd >/dev/null || apt_install docker.io
  command -v docker-compose >/dev/null || apt_install docker-compose
  if ! docker info >/dev/null 2>&1; then
    # A daemon that is still starting (its pid file names a live process)
    # is waited for, not doubled: a second one would fail on the same socket.
    if as_root sh -c 'test -f /var/run/docker.pid && kill -0 "$(cat /var/run/docker.pid)"' 2>/dev/null; then
      say "waiting for the Docker engine that is starting"
    else
      say "starting the Docker engine (log: /var/log/simdc-dockerd.log)"
      as_root sh -c 'nohup dockerd >/var/log/simdc-dockerd.log 2>&1 &'
    fi
    for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    if ! docker info >/dev/null 2>&1; then
      echo "setup: the Docker engine does not answer after 60 s; the end of /var/log/simdc-dockerd.log:" >&2
      tail -n 20 /var/log/simdc-dockerd.log >&2 || true
      exit 1
    fi
  fi
fi

# npm ci only when the lock file changed since the last install.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  say "installing npm dependencies"
  npm ci --no-audit --no-fund --loglevel=error
fi

say "building"
npm run --silent build

# simdc on the PATH (for this checkout), with bash completion.
repo=$(pwd)
wrapper=$(printf '#!/bin/sh\n# simdc of %s (written by its scripts/setup.sh)\nexec node "%s/packages/cli/dist/main.js" "$@"\n' "$repo" "$repo")
if [ "$(cat /usr/local/bin/simdc 2>/dev/null)" != "$wrapper" ]; then
  printf '%s\n' "$wrapper" | as_root tee /usr/local/bin/simdc >/dev/null && as_root chmod 755 /usr/local/bin/simdc
  say "simdc is on the PATH: /usr/local/bin/simdc runs $repo"
fi
if [ -d /etc/bash_completion.d ]; then
  node packages/cli/dist/main.js completion bash | as_root tee /etc/bash_completion.d/simdc >/dev/null
fi

if [ "$want_docker" = true ]; then
  bash deploy/build-images.sh
  # The compose datacenter's NATS users (kept when they exist).
  node deploy/compose-credentials.mjs
fi
say "ready"
