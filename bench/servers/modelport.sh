#!/usr/bin/env bash
# modelport for the peer harness in ../shared/bench (contract: servers/_common.sh there).
#   modelport.sh --spec MODEL : registers MODEL once in $ROOT/run/modelport-home, then prints the path
#                               and the V2 JSON body. It registers the harness's ONNX file: the joblib
#                               pickles were written by scikit-learn 1.7.2 and the gbm one no longer
#                               loads under 1.9 — the upgrade breakage modelport exists to prevent.
#   modelport.sh PORT MODEL   : serves every registered model on 127.0.0.1:PORT, one worker, without
#                               API keys (--insecure-dev) like every peer; key cost: docs/performance.md
# Use:  cd ../shared/bench && python3 bench.py --servers $PWD/../../main/bench/servers/modelport.sh
HERE=$(cd "$(dirname "$0")" && pwd)
HARNESS_DIR=${MODELPORT_BENCH_HARNESS:-$HERE/../../../shared/bench}
source "$HARNESS_DIR/servers/_common.sh"
MP=$HERE/../../.venv/bin/modelport
export MODELPORT_HOME=$ROOT/run/modelport-home
if [ $SPEC = 1 ]; then
  if ! "$MP" show "$MODEL@production" >/dev/null 2>&1; then
    head -n 2001 "$ROOT/data/batch_1m.csv" > "$ROOT/run/modelport-sample.csv"
    "$MP" init >&2  # only `init` creates a registry
    "$MP" register "$MODEL" "$ROOT/models/$MODEL.onnx" --sample "$ROOT/run/modelport-sample.csv" \
      --alias production >&2
  fi
  echo "/v2/models/$MODEL/infer"
  echo "{\"inputs\": [{\"name\": \"input\", \"shape\": [1, 12], \"datatype\": \"FP64\", \"data\": $ROW}]}"
  exit
fi
exec "$MP" serve --port "$PORT" --insecure-dev  # the peers run without authentication too
