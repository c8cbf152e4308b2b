#!/usr/bin/env bash
# Real-server test rig: a source and a target Milvus for each tier.
#
#   deploy/testenv/testenv.sh up      install (once) and start every tier
#   deploy/testenv/testenv.sh down    stop every server by its saved pid, delete its data
#   deploy/testenv/testenv.sh status  show what runs
#
# Everything lives under $ZDM_TESTENV_DIR (default .testenv/ in the repo):
# one Python venv per tier, data/, logs/, pids/, and env, a file of shell
# `export` lines with every address. `up` is idempotent: running servers are
# left alone, missing ones are started, empty, and health-waited: a server's
# data lasts as long as it runs.
#
# Tiers (see docs/testing.md):
#   milvus  milvus==2.3.5 standalone (embedded etcd, local storage); the
#           primary tier. PyPI's milvus==2.3.9 ships only a macOS arm64
#           wheel, so 2.3.5 is the newest full standalone that runs on Linux.
#   lite3   milvus-lite==3.2.2 Python gRPC server.
#   lite2   milvus-lite==2.5.1 C++ server binary.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
dir=${ZDM_TESTENV_DIR:-$repo/.testenv}
python=${ZDM_TESTENV_PYTHON:-python3}
host=127.0.0.1
start_timeout=${ZDM_TESTENV_START_TIMEOUT:-240}

MILVUS_PKG="milvus==2.3.5"
LITE3_PKGS="milvus-lite==3.2.2 pymilvus==3.0.2"
LITE2_PKG="milvus-lite==2.5.1"

# role -> proxy port and the other ports a standalone Milvus binds.
# Order: proxy proxy-internal root-coord query-coord query-node index-coord
#        index-node data-coord data-node etcd-client etcd-peer
MILVUS_PORTS_source="19530 19529 53100 19531 21123 31000 21121 13333 21124 2379 2380"
MILVUS_PORTS_target="19630 19629 53200 19631 21223 31100 21221 13433 21224 2479 2480"
LITE3_PORT_source=19560
LITE3_PORT_target=19570
LITE2_PORT_source=19580
LITE2_PORT_target=19590

log() { printf 'testenv: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

pidfile() { echo "$dir/pids/$1.pid"; }

running() {
  local f; f=$(pidfile "$1")
  [[ -f $f ]] && kill -0 "$(cat "$f")" 2>/dev/null
}

port_open() { (exec 3<>"/dev/tcp/$host/$1") 2>/dev/null; }

venv() {
  local name=$1; shift
  local v="$dir/venv-$name"
  if [[ -f $v/.installed ]] && [[ $(cat "$v/.installed") == "$*" ]]; then
    return
  fi
  log "installing $* into $v"
  rm -rf "$v"
  "$python" -m venv "$v"
  "$v/bin/pip" install --quiet --disable-pip-version-check "$@" >"$dir/logs/pip-$name.log" 2>&1 ||
    die "pip install $* failed; last lines of $dir/logs/pip-$name.log:
$(tail -n 20 "$dir/logs/pip-$name.log")"
  echo "$*" >"$v/.installed"
}

# wait_ready NAME PORT LOG [PATTERN]: waits until PORT accepts connections
# and, when given, PATTERN appears in LOG; fails early when the process dies.
wait_ready() {
  local name=$1 port=$2 logf=$3 pattern=${4:-} t0=$SECONDS
  while ! port_open "$port" || { [[ -n $pattern ]] && ! grep -q "$pattern" "$logf"; }; do
    running "$name" || die "$name exited during start-up; last lines of $logf:
$(tail -n 20 "$logf")"
    ((SECONDS - t0 < start_timeout)) || die "$name not listening on $port after ${start_timeout}s; see $logf"
    sleep 0.5
  done
  log "$name ready on $host:$port in $((SECONDS - t0))s"
}

start_milvus() {
  local role=$1 name=milvus-$1 var="MILVUS_PORTS_$1"
  # shellcheck disable=SC2206
  local p=(${!var})
  running "$name" && return
  port_open "${p[0]}" && die "port ${p[0]} for $name is taken by another process"
  local data="$dir/data/$name" logf="$dir/logs/$name.log"
  rm -rf "$data" && mkdir -p "$data" # every start is an empty server
  # The embedded etcd ignores --etcd-port; its listen addresses come from
  # the file named by ETCD_CONFIG_PATH, so two instances can coexist.
  cat >"$data/etcd.yaml" <<EOF
name: $name
data-dir: $data/data/etcd.data
listen-client-urls: http://$host:${p[9]}
advertise-client-urls: http://$host:${p[9]}
listen-peer-urls: http://$host:${p[10]}
initial-advertise-peer-urls: http://$host:${p[10]}
initial-cluster: $name=http://$host:${p[10]}
EOF
  ETCD_CONFIG_PATH="$data/etcd.yaml" setsid "$dir/venv-milvus/bin/milvus-server" --data "$data" \
    --proxy-port "${p[0]}" --proxy-internal-port "${p[1]}" --root-coord-port "${p[2]}" \
    --query-coord-port "${p[3]}" --query-node-port "${p[4]}" --index-coord-port "${p[5]}" \
    --index-node-port "${p[6]}" --data-coord-port "${p[7]}" --data-node-port "${p[8]}" \
    --etcd-port "${p[9]}" </dev/null >"$logf" 2>&1 &
  echo $! >"$(pidfile "$name")"
  # milvus-server prints its banner only after /healthz answers OK.
  wait_ready "$name" "${p[0]}" "$logf" "Ctrl+C to exit"
}

start_lite3() {
  local role=$1 name=lite3-$1 var="LITE3_PORT_$1"
  local port=${!var}
  running "$name" && return
  port_open "$port" && die "port $port for $name is taken by another process"
  local data="$dir/data/$name" logf="$dir/logs/$name.log"
  rm -rf "$data" && mkdir -p "$data" # every start is an empty server
  setsid "$dir/venv-lite3/bin/milvus-lite" server --data-dir "$data" --host "$host" --port "$port" \
    </dev/null >"$logf" 2>&1 &
  echo $! >"$(pidfile "$name")"
  wait_ready "$name" "$port" "$logf"
}

start_lite2() {
  local role=$1 name=lite2-$1 var="LITE2_PORT_$1"
  local port=${!var}
  running "$name" && return
  port_open "$port" && die "port $port for $name is taken by another process"
  local data="$dir/data/$name" logf="$dir/logs/$name.log"
  rm -rf "$data" && mkdir -p "$data" # every start is an empty server
  local lib
  lib=$(echo "$dir"/venv-lite2/lib/python3*/site-packages/milvus_lite/lib)
  [[ -x $lib/milvus ]] || die "milvus-lite 2.5.1 binary not found under $lib"
  # The C++ server takes: database file, listen address, log level.
  (cd "$data" && LD_LIBRARY_PATH="$lib" exec setsid "$lib/milvus" "$data/milvus.db" "$host:$port" ERROR \
    </dev/null >"$logf" 2>&1) &
  echo $! >"$(pidfile "$name")"
  wait_ready "$name" "$port" "$logf"
}

write_env() {
  local f="$dir/env"
  local m_src m_tgt
  m_src=$(echo "$MILVUS_PORTS_source" | cut -d' ' -f1)
  m_tgt=$(echo "$MILVUS_PORTS_target" | cut -d' ' -f1)
  cat >"$f.tmp" <<EOF
# Written by deploy/testenv/testenv.sh; source it before running tests.
export ZDM_TEST_MILVUS_SOURCE=$host:$m_src
export ZDM_TEST_MILVUS_TARGET=$host:$m_tgt
export ZDM_TEST_MILVUS_VERSION=2.3.5
export ZDM_TEST_LITE3_SOURCE=$host:$LITE3_PORT_source
export ZDM_TEST_LITE3_TARGET=$host:$LITE3_PORT_target
export ZDM_TEST_LITE3_VERSION=3.2.2
export ZDM_TEST_LITE2_SOURCE=$host:$LITE2_PORT_source
export ZDM_TEST_LITE2_TARGET=$host:$LITE2_PORT_target
export ZDM_TEST_LITE2_VERSION=2.5.1
# Server programs, for tests that start a fresh, empty server of their own.
export ZDM_TEST_LITE2_SERVER=$(echo "$dir"/venv-lite2/lib/python3*/site-packages/milvus_lite/lib/milvus)
export ZDM_TEST_LITE3_SERVER=$dir/venv-lite3/bin/milvus-lite
EOF
  mv "$f.tmp" "$f"
  log "addresses written to $f"
}

stop_one() {
  local name=$1 f pid sig=TERM
  # milvus-server stops its child on SIGINT (its Ctrl+C path); the lite
  # servers stop on SIGTERM.
  [[ $name == milvus-* ]] && sig=INT
  f=$(pidfile "$name")
  [[ -f $f ]] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill "-$sig" -- "-$pid" 2>/dev/null || kill "-$sig" "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "$name did not stop on SIG$sig within 30s; killing"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
    log "stopped $name"
  fi
  rm -f "$f"
}

names() {
  local t r
  for t in milvus lite3 lite2; do for r in source target; do echo "$t-$r"; done; done
}

cmd=${1:-up}
mkdir -p "$dir/logs" "$dir/pids" "$dir/data"
case $cmd in
up)
  # A full disk shows up as odd failures deep inside pip or Milvus; say it
  # plainly first. The venvs take 0.7 GiB, the servers about 1 GiB at start.
  free_mib=$(df -Pm "$dir" | awk 'NR == 2 {print $4}')
  ((free_mib >= 2048)) || die "only $free_mib MiB free on the disk of $dir; the rig needs 2 GiB (make testenv-down frees what the servers wrote)"
  venv milvus $MILVUS_PKG
  venv lite3 $LITE3_PKGS
  venv lite2 $LITE2_PKG
  # Lite servers start in a second; the standalone servers take longer, so
  # they go first and are waited for one after the other (their start-up is
  # CPU-bound on two cores).
  for r in source target; do start_milvus $r; done
  for r in source target; do start_lite3 $r; start_lite2 $r; done
  write_env
  ;;
down)
  for n in $(names); do stop_one "$n"; done
  rm -rf "$dir/env" "${dir:?}/data"
  ;;
status)
  for n in $(names); do
    if running "$n"; then
      pid=$(cat "$(pidfile "$n")")
      rss=$(ps -o rss= --ppid "$pid" -p "$pid" | awk '{s+=$1} END {printf "%d", s/1024}')
      echo "$n running pid=$pid rss_mib=$rss"
    else
      echo "$n stopped"
    fi
  done
  ;;
*)
  die "unknown command $cmd (want up, down or status)"
  ;;
esac
