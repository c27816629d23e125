#!/usr/bin/env bash
# modelport as a user runs it with the secure defaults, for the peer harness in ../shared/bench
# (contract: servers/_common.sh there). Same model, body and single worker as modelport.sh, but:
#   - an API key is required: a consumer key is created once in this script's own registry home and its
#     token kept in $ROOT/run/modelport-keyed.token (mode 0600); --spec prints it as the header line
#     `Authorization: Bearer <token>`, which bench.py sends with every request;
#   - metrics on and the access log on (both defaults; the log goes to the harness's server log);
#   - the model's prediction log samples 10 % of requests (`modelport log-policy MODEL --sample 0.1`).
# Its registry home ($ROOT/run/modelport-keyed-home) is separate from modelport.sh's, so the log policy
# and the key do not leak into the --insecure-dev figures.
#   modelport-keyed.sh --spec MODEL : registers MODEL, sets its log policy and creates the key, each
#                                     only once; prints the path, the V2 JSON body and the header
#   modelport-keyed.sh PORT MODEL   : serves every registered model on 127.0.0.1:PORT, one worker
# Use:  cd ../shared/bench && python3 bench.py --servers $PWD/../../main/bench/servers/modelport-keyed.sh
HERE=$(cd "$(dirname "$0")" && pwd)
HARNESS_DIR=${MODELPORT_BENCH_HARNESS:-$HERE/../../../shared/bench}
source "$HARNESS_DIR/servers/_common.sh"
MP=$HERE/../../.venv/bin/modelport
PY=$HERE/../../.venv/bin/python
export MODELPORT_HOME=$ROOT/run/modelport-keyed-home
TOKEN_FILE=$ROOT/run/modelport-keyed.token
# The secure defaults, stated so that a stray override in the caller's environment cannot change them.
export MODELPORT_INSECURE_DEV=false MODELPORT_METRICS=true MODELPORT_ACCESS_LOG=true \
       MODELPORT_PREDICTION_LOG=true MODELPORT_WORKERS=1
unset MODELPORT_METRICS_PUBLIC

if [ $SPEC = 1 ]; then
  exec 3>&1 1>&2   # only the spec lines below go to stdout; everything the CLI prints goes to stderr
  if ! "$MP" show "$MODEL@production" >/dev/null 2>&1; then
    head -n 2001 "$ROOT/data/batch_1m.csv" > "$ROOT/run/modelport-keyed-sample.csv"
    "$MP" init  # only `init` creates a registry
    "$MP" register "$MODEL" "$ROOT/models/$MODEL.onnx" --sample "$ROOT/run/modelport-keyed-sample.csv" \
      --alias production
  fi
  # Prediction-log policy, once per model (a marker in the home). The command takes the whole model as
  # NAME today; should its grammar move to NAME@ALIAS, the second form is tried.
  MARK=$MODELPORT_HOME/.bench-log-policy-$MODEL
  if [ ! -e "$MARK" ]; then
    if ! err1=$("$MP" log-policy "$MODEL" --sample 0.1 2>&1); then
      if ! err2=$("$MP" log-policy "$MODEL@production" --sample 0.1 2>&1); then
        echo "log-policy failed as NAME: $err1"; echo "and as NAME@ALIAS: $err2"; exit 1
      fi
    fi
    touch "$MARK"
  fi
  # The consumer key, once: reuse the stored token while its key is still active in this home.
  token=""
  if [ -s "$TOKEN_FILE" ]; then
    token=$(cat "$TOKEN_FILE")
    id=$(printf '%s' "$token" | cut -d_ -f2)
    if ! "$MP" keys list --json | "$PY" -c 'import json,sys; sys.exit(0 if any(k["id"] == sys.argv[1] and k["status"] == "active" for k in json.load(sys.stdin)) else 1)' "$id"; then
      token=""
    fi
  fi
  if [ -z "$token" ]; then
    token=$("$MP" keys create --name peer-bench --role consumer --json |
            "$PY" -c 'import json,sys; print(json.load(sys.stdin)["token"])')
    [ -n "$token" ] || { echo "keys create gave no token"; exit 1; }
    (umask 077; printf '%s\n' "$token" > "$TOKEN_FILE.tmp")
    chmod 600 "$TOKEN_FILE.tmp"; mv -f "$TOKEN_FILE.tmp" "$TOKEN_FILE"
  fi
  chmod 600 "$TOKEN_FILE"
  exec 1>&3 3>&-
  echo "/v2/models/$MODEL/infer"
  echo "{\"inputs\": [{\"name\": \"input\", \"shape\": [1, 12], \"datatype\": \"FP64\", \"data\": $ROW}]}"
  echo "Authorization: Bearer $token"
  exit
fi
exec "$MP" serve --port "$PORT" --workers 1  # keys required (no --insecure-dev); access log on stderr
