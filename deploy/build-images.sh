#!/usr/bin/env bash
# Builds simdc's container images on this machine without a registry: the base
# image (node, nats-server and busybox copied from the host, made with
# `docker import`) and the service image (the built repository plus its
# production node_modules). It does not compile TypeScript (run `npm run build`
# first) and does not start the Docker engine (scripts/setup.sh --docker does).
# Idempotent and quick when nothing changed: the base is made only when missing
# or made from another node/nats-server than the host's, node_modules are
# staged only when a manifest changed, and the image build reuses its cache.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  cat <<'EOF'
usage: deploy/build-images.sh [--rebuild-base]
  --rebuild-base   make the base image again even if it is up to date
environment:
  BASE_IMAGE   base of the service image (default simdc-base:local, made here;
               anything else, e.g. node:20-slim, is used as given)
  SIMDC_IMAGE  tag of the service image (default simdc:local)
EOF
}

rebuild_base=false
for arg in "$@"; do
  case "$arg" in
    --rebuild-base) rebuild_base=true ;;
    -h | --help) usage; exit 0 ;;
    *) echo "build-images: unknown option $arg" >&2; usage >&2; exit 2 ;;
  esac
done

local_base=simdc-base:local
base_image=${BASE_IMAGE:-$local_base}
service_image=${SIMDC_IMAGE:-simdc:local}
stage=deploy/.stage

say() { echo "build-images: $*"; }
die() { echo "build-images: $*" >&2; exit 1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else die "need root for: $*"; fi; }

# The base copies its tools from the host; a fresh CI machine lacks some.
need_tool() {
  local tool=$1 package=$2
  command -v "$tool" >/dev/null && return
  command -v apt-get >/dev/null || die "$tool is missing and this is not a Debian-like system; install $package"
  say "installing $package from the OS packages"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null
}

docker info >/dev/null 2>&1 || die "the Docker engine does not answer; run scripts/setup.sh --docker"
command -v nats-server >/dev/null || die "nats-server is not installed; run scripts/setup.sh"
if [ ! -f packages/proto/gen/simdc.js ] || [ ! -d packages/bus/dist ]; then
  die "no build output; run npm run build first"
fi

# --- base image ---------------------------------------------------------------

# What the base is made of; stored as a label, so a host upgrade of node or
# nats-server makes a new base instead of leaving a stale one.
base_fingerprint() {
  echo "node $(node --version); $(nats-server --version)"
}

# The absolute paths of the shared libraries (and the loader) a binary needs;
# nothing for a static binary.
libs_of() {
  ldd "$1" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' || true
}

make_base() {
  local node_bin nats_bin busybox_bin root started_s
  need_tool busybox busybox-static
  need_tool strip binutils
  started_s=$(date +%s.%N)
  node_bin=$(readlink -f "$(command -v node)")
  nats_bin=$(command -v nats-server)
  busybox_bin=$(command -v busybox)

  root=$(mktemp -d /tmp/simdc-base-XXXXXX)
  # shellcheck disable=SC2064 # expand now: the path is local to this function
  trap "rm -rf '$root'" EXIT
  mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,usr/local/bin,etc,root,home/node,tmp,data}
  chmod 1777 "$root/tmp"
  chmod 700 "$root/root"

  # The node binary carries ~99 MB of debug info; strip keeps .dynsym, which
  # native addons link against.
  strip -o "$root/usr/local/bin/node" "$node_bin"
  cp "$nats_bin" "$root/usr/local/bin/nats-server"
  cp "$busybox_bin" "$root/bin/busybox"
  local applet
  for applet in $("$busybox_bin" --list-full); do
    [ -e "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
  done

  # Libraries go where ldd found them, so the loader path baked into each
  # binary and glibc's default search path both hold.
  local lib
  for lib in $({ libs_of "$node_bin"; libs_of "$nats_bin"; libs_of "$busybox_bin"; } | sort -u); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done

  # uid 1000 "node" matches the official node images, so the service image can
  # use either base. Every file is owned by root (tar below); the service
  # image gives node its own directories.
  cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
node:x:1000:1000:node:/home/node:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
  cat >"$root/etc/group" <<'EOF'
root:x:0:
node:x:1000:
nogroup:x:65534:
EOF
  # glibc 2.34+ has files and dns built in, so no libnss modules are needed.
  cat >"$root/etc/nsswitch.conf" <<'EOF'
passwd: files
group: files
hosts: files dns
EOF

  tar -C "$root" --numeric-owner --owner=0 --group=0 -cf - . |
    docker import \
      -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      -c "LABEL org.simdc.base.fingerprint=\"$(base_fingerprint)\"" \
      -c 'CMD ["node"]' \
      - "$local_base" >/dev/null
  rm -rf "$root"
  trap - EXIT
  say "made $local_base ($(base_fingerprint)) in $(awk -v s="$started_s" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }') s"
}

if [ "$base_image" = "$local_base" ]; then
  current=$(docker image inspect -f '{{ index .Config.Labels "org.simdc.base.fingerprint" }}' "$local_base" 2>/dev/null || true)
  if [ "$rebuild_base" = true ] || [ "$current" != "$(base_fingerprint)" ]; then
    make_base
  fi
fi

# --- production node_modules --------------------------------------------------

# npm ci runs on a copy of the manifests, so the repo's own node_modules (with
# dev tools) stay as they are; it runs again only when a manifest changed.
manifests=(package.json package-lock.json packages/*/package.json)
manifests_sum=$(sha256sum "${manifests[@]}" | sha256sum | cut -d' ' -f1)
if [ ! -d "$stage/deps/node_modules" ] || [ "$(cat "$stage/deps.sha256" 2>/dev/null)" != "$manifests_sum" ]; then
  say "staging production node_modules in $stage/deps"
  rm -rf "$stage/deps" "$stage/deps.sha256"
  mkdir -p "$stage/deps"
  cp --parents "${manifests[@]}" "$stage/deps/"
  (cd "$stage/deps" && npm ci --omit=dev --prefer-offline --ignore-scripts --no-audit --no-fund --loglevel=error)
  echo "$manifests_sum" >"$stage/deps.sha256"
fi

# --- service image ------------------------------------------------------------

log=$(mktemp /tmp/simdc-build-XXXXXX.log)
if ! DOCKER_BUILDKIT=0 docker build -f deploy/Dockerfile --build-arg BASE_IMAGE="$base_image" -t "$service_image" . >"$log" 2>&1; then
  cat "$log" >&2
  rm -f "$log"
  die "docker build of $service_image failed"
fi
rm -f "$log"
# The image this build replaced is left untagged; drop it (only ours: label).
docker image prune -f --filter label=org.simdc.image=service >/dev/null
size_mb=$(docker image inspect -f '{{ .Size }}' "$service_image" | awk '{ printf "%.0f", $1 / 1e6 }')
say "$service_image is up to date (${size_mb} MB, from $base_image)"
