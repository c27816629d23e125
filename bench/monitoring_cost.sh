#!/usr/bin/env bash
# The cost of monitoring: the same server and load with metrics, access logs and the prediction log on
# (the default; MODEL's log policy decides the sampling — set it first, e.g. `modelport log-policy MODEL
# --sample 0.1`), with metrics only, and with everything off; alternating, server pinned to CPU 0, wrk
# to CPU 1, logs to a file.
#   bench/monitoring_cost.sh HOME MODEL BODY_FILE   (HOME: a registry with MODEL registered)
set -euo pipefail
HOME_DIR=$1; MODEL=$2; BODY=$3; PORT=${PORT:-9210}
MP=.venv/bin/modelport
LOG=$(mktemp)
run() {  # $1 = label, then environment assignments
  local label=$1; shift
  env "$@" MODELPORT_HOME=$HOME_DIR taskset -c 0 $MP serve --port $PORT --insecure-dev >/dev/null 2>>"$LOG" &
  local pid=$!
  until curl -sf -o /dev/null http://127.0.0.1:$PORT/v2/health/ready; do sleep 0.1; done
  WRK_BODY_FILE=$BODY taskset -c 1 wrk -t1 -c64 -d3s -s bench/keyed.lua http://127.0.0.1:$PORT/v2/models/$MODEL/infer >/dev/null
  echo "$label $(WRK_BODY_FILE=$BODY taskset -c 1 wrk -t1 -c64 -d10s --latency -s bench/keyed.lua http://127.0.0.1:$PORT/v2/models/$MODEL/infer | grep RESULT)"
  kill $pid; wait $pid 2>/dev/null || true
}
for _ in 1 2; do
  run all-on MODELPORT_METRICS=true MODELPORT_ACCESS_LOG=true MODELPORT_PREDICTION_LOG=true
  run metrics-only MODELPORT_METRICS=true MODELPORT_ACCESS_LOG=false MODELPORT_PREDICTION_LOG=false
  run all-off MODELPORT_METRICS=false MODELPORT_ACCESS_LOG=false MODELPORT_PREDICTION_LOG=false
done
echo "access log: $(wc -l < "$LOG") lines"; rm -f "$LOG"
