#!/usr/bin/env bash
# make demo: a zero-downtime migration between two local Milvus servers,
# from nothing to a verified switchover.
#
#   deploy/demo/demo.sh        run the demo; stop everything at the end
#   KEEP=1 deploy/demo/demo.sh run it and leave zdm, Milvus and Jaeger up
#   deploy/demo/demo.sh down   stop what a KEEP=1 run left
#
# The two Milvus servers are a rig of the demo's own (.demo/rig), on the
# test rig's ports shifted by 1000 (source 127.0.0.1:20530, target
# 127.0.0.1:20630), sharing the test rig's Python environments, so the
# demo and a running test rig leave each other alone.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
export ZDM_TESTENV_DIR=$repo/.demo/rig ZDM_TESTENV_VENVS=$repo/.testenv ZDM_TESTENV_TIERS=milvus ZDM_TESTENV_PORT_OFFSET=1000
export JAEGER=${JAEGER:-$repo/.bin/jaeger}

down() {
  if [[ -f .demo/zdm.pid ]]; then
    pid=$(cat .demo/zdm.pid)
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid"
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      echo "demo: zdm stopped"
    fi
    rm -f .demo/zdm.pid
  fi
  deploy/jaeger/jaeger.sh down
  deploy/testenv/testenv.sh down
  echo "demo: Milvus servers stopped"
}

if [[ ${1:-} == down ]]; then
  down
  exit 0
fi

start=$SECONDS
if [[ ${KEEP:-0} != 1 ]]; then
  trap down EXIT
fi
mkdir -p .demo
echo "demo: starting a source and a target Milvus (installed from PyPI on first use)"
deploy/testenv/testenv.sh up
# Traces go to Jaeger when it is built (make jaeger-bin, or make test,
# build it once in about five minutes, more than the demo itself).
tracing=()
if [[ -x $JAEGER ]]; then
  deploy/jaeger/jaeger.sh up
  tracing=(-jaeger-otlp 127.0.0.1:4317 -jaeger-ui 127.0.0.1:16686)
else
  echo "demo: no Jaeger at $JAEGER: the migration's trace is not sent (make jaeger-bin builds it, once, in about five minutes)"
fi
set -a
. .demo/rig/env
set +a
go run ./cmd/zdm/tools/demo -zdm bin/zdm -dir .demo -source "$ZDM_TEST_MILVUS_SOURCE" -target "$ZDM_TEST_MILVUS_TARGET" \
  "${tracing[@]}" -keep="${KEEP:-0}"
echo "demo: done in $((SECONDS - start))s"
if [[ ${KEEP:-0} == 1 ]]; then
  echo "demo: zdm, Milvus and Jaeger keep running; make demo-down stops them"
fi
