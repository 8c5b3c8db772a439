#!/usr/bin/env bash
# The Docker engine and the trainer image's build, for CI and for developers (docs/development.md).
#
#   make/docker.sh start          install the engine if it is missing (Debian's docker.io, as root), start it
#                                 if none answers, wait until `docker info` answers
#   make/docker.sh stop           stop the engine `start` started (none other)
#   make/docker.sh base           print the base image to build FROM: the Dockerfile's pinned upstream one if
#                                 it is here or a registry serves it, else a Debian stand-in made here
#   make/docker.sh build ARGS...  docker build -f src/Dockerfile ARGS... . with BuildKit, on that base, and the
#                                 machine's CA bundle as the build secret `ca` when SSL_CERT_FILE or PIP_CERT
#                                 names one (never a layer of the image)
#
# Environment: BASE (skip the choice: build FROM this), STANDIN_IMAGE (the stand-in's name), DOCKER_STATE (where `start` notes what it started;
# default /tmp/tfk8s-docker), DOCKER_NETWORK (the build's network; default host: a RUN step reaches the
# network as this machine does).
set -euo pipefail
cd "$(dirname "$0")/.."

STATE=${DOCKER_STATE:-/tmp/tfk8s-docker}
# The stand-in for python:3.11-slim-bookworm where no registry answers: Debian 12's own python3 (3.11),
# from Debian's packages, with what the Dockerfile counts on: `python` and `pip` on PATH, `python -m venv`.
STANDIN=${STANDIN_IMAGE:-tfk8s/python-standin:3.11-bookworm}
STANDIN_PACKAGES=python3,python3-venv,python3-pip,ca-certificates

say() { echo "== docker: $*" >&2; }
die() { echo "error: $*" >&2; exit 1; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
answers() { docker info >/dev/null 2>&1; }

start() {
  local began=$SECONDS
  if answers; then say "an engine answers already: using it"; return; fi
  if ! command -v dockerd >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1; then
    say "installing Debian's docker.io and debootstrap"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null
  fi
  command -v docker >/dev/null 2>&1 || die "no docker client after installing docker.io"
  mkdir -p "$STATE"
  # --iptables=false: this machine's kernel and network are not ours to rewrite. --bridge=none: no default
  # bridge; the containers that talk to each other get a network of their own (src/tfk8s/kube/docker_run.py).
  say "starting dockerd (log: $STATE/dockerd.log)"
  rm -f "$STATE/dockerd.pid"
  as_root setsid dockerd --iptables=false --bridge=none --pidfile "$STATE/dockerd.pid" \
    >"$STATE/dockerd.log" 2>&1 </dev/null &
  local launched=$! deadline=$((SECONDS + 60))
  until answers; do
    kill -0 "$launched" 2>/dev/null || { tail -5 "$STATE/dockerd.log" >&2; die "dockerd exited"; }
    [ $SECONDS -lt $deadline ] || die "dockerd did not answer within 60 s (log: $STATE/dockerd.log)"
    sleep 0.5
  done
  say "engine $(docker info --format '{{.ServerVersion}}, storage {{.Driver}}') up in $((SECONDS - began))s"
}

stop() {
  local pid
  [ -f "$STATE/dockerd.pid" ] || { say "no engine started by this script: nothing to stop"; return; }
  pid=$(cat "$STATE/dockerd.pid")
  kill -0 "$pid" 2>/dev/null || { rm -f "$STATE/dockerd.pid"; return 0; }
  say "stopping dockerd (pid $pid)"
  as_root kill -TERM "$pid"
  local deadline=$((SECONDS + 30))
  while kill -0 "$pid" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || { as_root kill -KILL "$pid"; break; }
    sleep 0.5
  done
  rm -f "$STATE/dockerd.pid"
}

upstream_base() { sed -n 's/^ARG BASE=//p' src/Dockerfile; }

standin() {
  if docker image inspect "$STANDIN" >/dev/null 2>&1; then echo "$STANDIN"; return; fi
  command -v debootstrap >/dev/null 2>&1 || die "no registry answers and debootstrap is missing: make/docker.sh start installs it"
  local rootfs began=$SECONDS
  rootfs=$(mktemp -d /var/tmp/tfk8s-standin.XXXXXX)
  trap 'as_root rm -rf "$rootfs"; trap - RETURN' RETURN
  say "no registry answers: making the stand-in base $STANDIN from Debian's packages (about 2 minutes)"
  as_root debootstrap --variant=minbase --include="$STANDIN_PACKAGES" bookworm "$rootfs" >"$rootfs.log" 2>&1 \
    || { tail -5 "$rootfs.log" >&2; die "debootstrap failed (log: $rootfs.log)"; }
  rm -f "$rootfs.log"
  as_root ln -sf /usr/bin/python3 "$rootfs/usr/local/bin/python"
  as_root ln -sf /usr/bin/pip3 "$rootfs/usr/local/bin/pip"
  # As in the upstream image, pip may install as root: Debian's marker for a system-managed Python goes.
  as_root rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
  as_root rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  as_root tar -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$STANDIN" >/dev/null
  say "stand-in base $STANDIN made in $((SECONDS - began))s"
  echo "$STANDIN"
}

base() {
  if [ -n "${BASE:-}" ]; then echo "$BASE"; return; fi
  local upstream
  upstream=$(upstream_base)
  if docker image inspect "$upstream" >/dev/null 2>&1 || timeout 60 docker pull -q "$upstream" >/dev/null 2>&1; then
    echo "$upstream"
  else
    standin
  fi
}

# A client that builds with BuildKit (the Dockerfile's build secret and cache mounts need it): docker with
# its buildx plugin, or a client with BuildKit built in (Debian's docker.io, 20.10).
builder() {
  if docker buildx version >/dev/null 2>&1; then echo docker; return; fi
  local client
  for client in /usr/bin/docker docker; do
    if DOCKER_BUILDKIT=1 "$client" build --help 2>/dev/null | grep -q -- '--secret'; then echo "$client"; return; fi
  done
  die "no Docker client here builds with BuildKit: install the buildx plugin"
}

build() {
  answers || die "no Docker engine answers: start Docker (or, as root on Debian: make/docker.sh start)"
  local from="" client ca arg
  client=$(builder)
  local args=(--network "${DOCKER_NETWORK:-host}" -f src/Dockerfile)
  for arg in "$@"; do [[ $arg != RUNTIME=* ]] || from=$arg; done  # on the instructor's base: BASE is not used
  if [ -z "$from" ]; then
    from=$(base)
    [ "$from" = "$(upstream_base)" ] || args+=(--build-arg "BASE=$from")
  fi
  ca=${SSL_CERT_FILE:-${PIP_CERT:-}}
  if [ -n "$ca" ]; then
    [ -f "$ca" ] || die "the CA bundle $ca (SSL_CERT_FILE or PIP_CERT) does not exist"
    args+=(--secret "id=ca,src=$ca")
    say "CA bundle $ca: given to the build as the secret ca"
  fi
  say "building on ${from#RUNTIME=}"
  DOCKER_BUILDKIT=1 "$client" build "${args[@]}" "$@" .
}

case "${1:-}" in
  start|stop|base|build) command=$1; shift; "$command" "$@" ;;
  *) echo "usage: make/docker.sh start | stop | base | build DOCKER_BUILD_ARGS..." >&2; exit 2 ;;
esac
