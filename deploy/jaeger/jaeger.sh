#!/usr/bin/env bash
# A local Jaeger for make jaeger and make demo: spans in memory, loopback
# only, configured by deploy/jaeger/config.yaml.
#
#   deploy/jaeger/jaeger.sh up     start it in the background (idempotent)
#   deploy/jaeger/jaeger.sh down   stop it (its spans are lost)
#
# JAEGER is the binary (make jaeger-bin builds .bin/jaeger); its pid and
# log live in .jaeger/.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
bin=${JAEGER:-$repo/.bin/jaeger}
dir=$repo/.jaeger
ui=${ZDM_JAEGER_UI:-127.0.0.1:16686}

running() { [[ -f $dir/pid ]] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; }
answers() { curl -sf "http://$ui/api/services" >/dev/null; }

case ${1:-} in
up)
  mkdir -p "$dir"
  if running; then
    echo "jaeger: already running (pid $(cat "$dir/pid"))"
  else
    # Jaeger's own telemetry off: it would trace itself into itself. Not
    # under setsid, which forks when it runs as a group leader, and then
    # $! would not be Jaeger's pid.
    OTEL_SDK_DISABLED=true "$bin" --config "$repo/deploy/jaeger/config.yaml" >"$dir/log" 2>&1 </dev/null &
    echo $! >"$dir/pid"
    for _ in $(seq 1 150); do answers && break; sleep 0.2; done
    answers || { echo "jaeger: did not start; see $dir/log" >&2; exit 1; }
    echo "jaeger: running (pid $(cat "$dir/pid")), log $dir/log"
  fi
  echo "  send spans:  OTEL_EXPORTER_OTLP_ENDPOINT=http://${ZDM_JAEGER_OTLP:-127.0.0.1:4317} bin/zdm"
  echo "  a trace:     curl -s http://$ui/api/traces/<trace_id>   (zdm migrate show <id> prints the ID)"
  ;;
down)
  if running; then
    pid=$(cat "$dir/pid")
    kill "$pid"
    # It takes a few seconds to shut down; the ports are free once it has.
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    echo "jaeger: stopped"
  fi
  rm -f "$dir/pid"
  ;;
*)
  echo "usage: $0 up|down" >&2
  exit 2
  ;;
esac
