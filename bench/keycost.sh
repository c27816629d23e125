#!/usr/bin/env bash
# The cost of API keys: the same server and load with a key (default mode) and without (--insecure-dev),
# alternating, server pinned to CPU 0 and wrk to CPU 1.
#   bench/keycost.sh HOME MODEL BODY_FILE   (HOME: a registry with MODEL registered; run from the checkout)
set -euo pipefail
HOME_DIR=$1; MODEL=$2; BODY=$3; PORT=${PORT:-9200}
MP=.venv/bin/modelport
KEY=$(MODELPORT_HOME=$HOME_DIR $MP keys create --name keycost --role consumer --json | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["token"])')
run() {  # $1 = label, rest = serve flags
  local label=$1; shift
  MODELPORT_HOME=$HOME_DIR taskset -c 0 $MP serve --port $PORT "$@" >/dev/null 2>&1 &
  local pid=$!
  until curl -sf -o /dev/null http://127.0.0.1:$PORT/v2/health/ready; do sleep 0.1; done
  local key=""; [ "$label" = keyed ] && key=$KEY
  WRK_BODY_FILE=$BODY WRK_KEY=$key taskset -c 1 wrk -t1 -c64 -d3s -s bench/keyed.lua http://127.0.0.1:$PORT/v2/models/$MODEL/infer >/dev/null
  for _ in 1 2; do
    echo "$label $(WRK_BODY_FILE=$BODY WRK_KEY=$key taskset -c 1 wrk -t1 -c64 -d10s --latency -s bench/keyed.lua http://127.0.0.1:$PORT/v2/models/$MODEL/infer | grep RESULT)"
  done
  kill $pid; wait $pid 2>/dev/null || true
}
run keyed
run open --insecure-dev
run keyed
run open --insecure-dev
MODELPORT_HOME=$HOME_DIR $MP keys revoke "$(echo "$KEY" | cut -d_ -f2)" >/dev/null
