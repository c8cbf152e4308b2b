#!/usr/bin/env bash
# Real-server test rig: a source and a target Milvus for each tier.
#
#   deploy/testenv/testenv.sh up      install (once) and start every tier
#   deploy/testenv/testenv.sh down    stop every server by its saved pid, delete its data
#   deploy/testenv/testenv.sh status  show what runs
#   deploy/testenv/testenv.sh ports   every port each server binds
#
# Everything lives under $ZDM_TESTENV_DIR (default .testenv/ in the repo):
# one Python venv per tier, data/, logs/, pids/, and env, a file of shell
# `export` lines with every address. `up` is idempotent: servers that answer
# on their ports are left alone; missing ones, and ones whose process lives
# on with the server inside it gone, are started, empty, and health-waited:
# a server's data lasts as long as it runs. A port that another process
# holds makes `up` fail, naming the holder: a server never moves to another
# port. `down` returns once every process has exited and its ports are free.
#
# For the rig's own test: ZDM_TESTENV_TIERS (default "milvus lite3 lite2")
# picks tiers, ZDM_TESTENV_PORT_OFFSET shifts every port, and
# ZDM_TESTENV_VENVS points at another rig's venvs to reuse them.
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
venvs=${ZDM_TESTENV_VENVS:-$dir}
python=${ZDM_TESTENV_PYTHON:-python3}
tiers=${ZDM_TESTENV_TIERS:-milvus lite3 lite2}
offset=${ZDM_TESTENV_PORT_OFFSET:-0}
# How long up waits for a port still held by a server that is stopping.
port_wait=${ZDM_TESTENV_PORT_WAIT:-30}
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
if ((offset != 0)); then
  for v in MILVUS_PORTS_source MILVUS_PORTS_target; do
    shifted=""
    for p in ${!v}; do shifted+="$((p + offset)) "; done
    printf -v "$v" '%s' "${shifted% }"
  done
  for v in LITE3_PORT_source LITE3_PORT_target LITE2_PORT_source LITE2_PORT_target; do
    printf -v "$v" '%s' "$((${!v} + offset))"
  done
fi

log() { printf 'testenv: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

pidfile() { echo "$dir/pids/$1.pid"; }

# alive NAME: the process started for NAME (or one in its process group)
# still exists. For the standalone tier that is a Python wrapper, which
# outlives the Milvus binary inside it.
alive() {
  local f pid; f=$(pidfile "$1")
  [[ -f $f ]] || return 1
  pid=$(cat "$f")
  # The process itself, or its group: just after the fork the process has
  # not yet made its group (setsid), and later the group may outlive it.
  kill -0 "$pid" 2>/dev/null || kill -0 -- "-$pid" 2>/dev/null
}

# serving NAME: alive, and its server answers on its address.
serving() { alive "$1" && port_open "$(port_of "$1")"; }

# port_of NAME: the address port NAME serves on (the proxy, for standalone).
port_of() {
  local tier=${1%-*} role=${1#*-} var
  case $tier in
  milvus) var="MILVUS_PORTS_$role"; set -- ${!var}; echo "$1" ;;
  lite3) var="LITE3_PORT_$role"; echo "${!var}" ;;
  lite2) var="LITE2_PORT_$role"; echo "${!var}" ;;
  esac
}

# ports_of NAME: every port NAME binds.
ports_of() {
  local var
  if [[ $1 == milvus-* ]]; then var="MILVUS_PORTS_${1#*-}"; echo "${!var}"; else port_of "$1"; fi
}

port_open() { (exec 3<>"/dev/tcp/$host/$1") 2>/dev/null; }

# holder PORT: who listens on PORT, for error messages.
holder() { ss -Hltnp "sport = :$1" 2>/dev/null | sed -n 's/.*users:((\(.*\)))/\1/p' | head -n 1; }

# ports_free NAME: waits up to port_wait seconds for every port of NAME to
# be free (a server that was just stopped may still hold them), then fails
# naming the holder: a standalone server whose port is taken would
# silently move to another one.
ports_free() {
  local name=$1 p t0=$SECONDS
  for p in $(ports_of "$name"); do
    while port_open "$p"; do
      ((SECONDS - t0 < port_wait)) ||
        die "port $p for $name is taken by another process (${port_holder:-$(holder "$p")}); stop it, or run make testenv-down if it is an old rig"
      sleep 0.5
    done
  done
}

# ensure NAME: true when NAME already serves; otherwise stops what is left
# of it (saying so) and returns false, so the caller starts it.
ensure() {
  local name=$1
  serving "$name" && return 0
  if alive "$name"; then
    log "$name: its process $(cat "$(pidfile "$name")") is alive but no server answers on $host:$(port_of "$name"); restarting it"
    stop_one "$name"
  fi
  return 1
}

venv() {
  local name=$1; shift
  local v="$venvs/venv-$name"
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

# startup_report NAME LOG: what a failed start left to look at, for the
# error message (a test's rig lives in a directory deleted when it fails):
# the processes of NAME's group, which of its ports listen, the last lines
# of LOG and, for the standalone tier, of Milvus's own logs.
startup_report() {
  local name=$1 logf=$2 p open="" closed="" f
  for p in $(ports_of "$name"); do
    if port_open "$p"; then open+=" $p"; else closed+=" $p"; fi
  done
  echo "ports listening:${open:- none}; not listening:${closed:- none}"
  echo "processes: $(ps -o pid=,stat=,etimes=,args= -s "$(cat "$(pidfile "$name")")" 2>/dev/null | cut -c1-120 | tr '\n' ';')"
  echo "disk free: $(df -Pm "$dir" | awk 'NR == 2 {print $4}') MiB"
  echo "last lines of $logf:"
  tail -n 10 "$logf" | cut -c1-300
  f="$dir/data/$name/logs/milvus-stderr.log"
  [[ ! -s $f ]] || { echo "last lines of $f:"; tail -n 20 "$f"; }
  f="$dir/data/$name/logs/milvus-stdout.log"
  [[ ! -s $f ]] || {
    echo "last errors of $f:"; grep -E '\[(ERROR|FATAL)\]|panic' "$f" | tail -n 10 | cut -c1-400
    echo "last lines of $f:"; tail -n 5 "$f" | cut -c1-400
  }
}

# wait_ready NAME PORT LOG [PATTERN]: waits until PORT accepts connections
# and, when given, PATTERN appears in LOG; fails early when the process dies.
wait_ready() {
  local name=$1 port=$2 logf=$3 pattern=${4:-} t0=$SECONDS
  while ! port_open "$port" || { [[ -n $pattern ]] && ! grep -q "$pattern" "$logf"; }; do
    alive "$name" || die "$name exited during start-up; $(startup_report "$name" "$logf")"
    ((SECONDS - t0 < start_timeout)) || die "$name not ready on $port after ${start_timeout}s; $(startup_report "$name" "$logf")"
    sleep 0.5
  done
  log "$name ready on $host:$port in $((SECONDS - t0))s"
}

# check_serving NAME: the server answers the Milvus API on the address
# written to env (a port that merely accepts connections is not enough).
check_serving() {
  local name=$1 port; port=$(port_of "$1")
  "$venvs/venv-lite3/bin/python" - "$host:$port" <<'PY' || die "$name does not answer the Milvus API on $host:$port; see $dir/logs/$name.log"
import sys, grpc
from pymilvus.grpc_gen import milvus_pb2, milvus_pb2_grpc
ch = grpc.insecure_channel(sys.argv[1])
milvus_pb2_grpc.MilvusServiceStub(ch).ShowCollections(milvus_pb2.ShowCollectionsRequest(), timeout=20)
PY
}

start_milvus() {
  local role=$1 name=milvus-$1 var="MILVUS_PORTS_$1"
  # shellcheck disable=SC2206
  local p=(${!var})
  ensure "$name" && return
  ports_free "$name"
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
  ETCD_CONFIG_PATH="$data/etcd.yaml" setsid "$venvs/venv-milvus/bin/milvus-server" --data "$data" \
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
  ensure "$name" && return
  ports_free "$name"
  local data="$dir/data/$name" logf="$dir/logs/$name.log"
  rm -rf "$data" && mkdir -p "$data" # every start is an empty server
  setsid "$venvs/venv-lite3/bin/milvus-lite" server --data-dir "$data" --host "$host" --port "$port" \
    </dev/null >"$logf" 2>&1 &
  echo $! >"$(pidfile "$name")"
  wait_ready "$name" "$port" "$logf"
}

start_lite2() {
  local role=$1 name=lite2-$1 var="LITE2_PORT_$1"
  local port=${!var}
  ensure "$name" && return
  ports_free "$name"
  local data="$dir/data/$name" logf="$dir/logs/$name.log"
  rm -rf "$data" && mkdir -p "$data" # every start is an empty server
  local lib
  lib=$(echo "$venvs"/venv-lite2/lib/python3*/site-packages/milvus_lite/lib)
  [[ -x $lib/milvus ]] || die "milvus-lite 2.5.1 binary not found under $lib"
  # The C++ server takes: database file, listen address, log level.
  (cd "$data" && LD_LIBRARY_PATH="$lib" exec setsid "$lib/milvus" "$data/milvus.db" "$host:$port" ERROR \
    </dev/null >"$logf" 2>&1) &
  echo $! >"$(pidfile "$name")"
  wait_ready "$name" "$port" "$logf"
}

write_env() {
  local f="$dir/env" t
  {
    echo "# Written by deploy/testenv/testenv.sh; source it before running tests."
    for t in $tiers; do
      case $t in
      milvus)
        echo "export ZDM_TEST_MILVUS_SOURCE=$host:$(port_of milvus-source)"
        echo "export ZDM_TEST_MILVUS_TARGET=$host:$(port_of milvus-target)"
        echo "export ZDM_TEST_MILVUS_VERSION=2.3.5"
        ;;
      lite3)
        echo "export ZDM_TEST_LITE3_SOURCE=$host:$(port_of lite3-source)"
        echo "export ZDM_TEST_LITE3_TARGET=$host:$(port_of lite3-target)"
        echo "export ZDM_TEST_LITE3_VERSION=3.2.2"
        echo "# Server program, for tests that start a fresh, empty server of their own."
        echo "export ZDM_TEST_LITE3_SERVER=$venvs/venv-lite3/bin/milvus-lite"
        ;;
      lite2)
        echo "export ZDM_TEST_LITE2_SOURCE=$host:$(port_of lite2-source)"
        echo "export ZDM_TEST_LITE2_TARGET=$host:$(port_of lite2-target)"
        echo "export ZDM_TEST_LITE2_VERSION=2.5.1"
        echo "export ZDM_TEST_LITE2_SERVER=$(echo "$venvs"/venv-lite2/lib/python3*/site-packages/milvus_lite/lib/milvus)"
        ;;
      esac
    done
  } >"$f.tmp"
  mv "$f.tmp" "$f"
  log "addresses written to $f"
}

# gone PID SECONDS: waits until neither PID nor any process of its group
# is left.
gone() {
  local pid=$1 n=$(($2 * 2))
  while ((n-- > 0)); do
    kill -0 "$pid" 2>/dev/null || kill -0 -- "-$pid" 2>/dev/null || return 0
    sleep 0.5
  done
  ! { kill -0 "$pid" 2>/dev/null || kill -0 -- "-$pid" 2>/dev/null; }
}

# stop_one NAME: stops every process of NAME's group and returns once they
# have all exited and NAME's ports are free, so an `up` right after finds
# them free.
stop_one() {
  local name=$1 f pid sig=TERM p
  # milvus-server stops its child on SIGINT (its Ctrl+C path); the lite
  # servers stop on SIGTERM.
  [[ $name == milvus-* ]] && sig=INT
  f=$(pidfile "$name")
  [[ -f $f ]] || return 0
  pid=$(cat "$f")
  if alive "$name"; then
    kill "-$sig" -- "-$pid" 2>/dev/null || kill "-$sig" "$pid" 2>/dev/null || true
    if ! gone "$pid" 30; then
      log "$name did not stop on SIG$sig within 30s; killing"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
      gone "$pid" 10 || die "$name (process group $pid) is still there after SIGKILL"
    fi
    log "stopped $name"
  fi
  rm -f "$f"
  for p in $(ports_of "$name"); do
    local t0=$SECONDS
    while port_open "$p"; do
      ((SECONDS - t0 < port_wait)) || die "$name stopped, but port $p is still held ($(holder "$p"))"
      sleep 0.5
    done
  done
}

names() {
  local t r
  for t in $tiers; do for r in source target; do echo "$t-$r"; done; done
}

cmd=${1:-up}
mkdir -p "$dir/logs" "$dir/pids" "$dir/data"
case $cmd in
up)
  # A full disk shows up as odd failures deep inside pip or Milvus; say it
  # plainly first. The venvs take 0.7 GiB, the servers about 1 GiB at start.
  free_mib=$(df -Pm "$dir" | awk 'NR == 2 {print $4}')
  ((free_mib >= 2048)) || die "only $free_mib MiB free on the disk of $dir; the rig needs 2 GiB (make testenv-down frees what the servers wrote)"
  # lite3's venv is always installed: its pymilvus checks every server.
  venv lite3 $LITE3_PKGS
  [[ " $tiers " != *" milvus "* ]] || venv milvus $MILVUS_PKG
  [[ " $tiers " != *" lite2 "* ]] || venv lite2 $LITE2_PKG
  # Lite servers start in a second; the standalone servers take longer, so
  # they go first and are waited for one after the other (their start-up is
  # CPU-bound on two cores).
  # Every port is checked before anything starts, so a taken one stops
  # up before it leaves a half-started rig.
  for n in $(names); do ensure "$n" || ports_free "$n"; done
  for t in milvus lite3 lite2; do
    [[ " $tiers " == *" $t "* ]] || continue
    for r in source target; do "start_$t" "$r"; done
  done
  for n in $(names); do check_serving "$n"; done
  write_env
  ;;
down)
  for n in $(names); do stop_one "$n"; done
  rm -rf "$dir/env" "${dir:?}/data"
  ;;
status)
  for n in $(names); do
    if serving "$n"; then
      pid=$(cat "$(pidfile "$n")")
      rss=$(ps -o rss= -g "$pid" | awk '{s+=$1} END {printf "%d", s/1024}')
      echo "$n running pid=$pid port=$(port_of "$n") rss_mib=$rss"
    elif alive "$n"; then
      echo "$n dead: process $(cat "$(pidfile "$n")") is alive but no server answers on $host:$(port_of "$n") (make testenv-up restarts it)"
    else
      echo "$n stopped"
    fi
  done
  ;;
ports)
  # Every port each server binds, one server a line: what down frees.
  for n in $(names); do echo "$n $(ports_of "$n")"; done
  ;;
*)
  die "unknown command $cmd (want up, down, status or ports)"
  ;;
esac
