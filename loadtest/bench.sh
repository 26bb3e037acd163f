#!/usr/bin/env bash
# `make bench`: the real-time voice sweep on this machine, written to docs/benchmarks.md.
#
# 1. One worker pinned to CPU $SERVER_CPU (taskset), the load generator pinned to
#    $GEN_CPU: callers ramp through $STEPS_ONE until a step misses the budget.
# 2. `--workers 2`, not pinned (on a 2-core machine the generator shares the cores with
#    the workers: read that table as a lower bound).
# 3. One worker pinned as in 1, with sessions in Redis (if reachable), at $STEPS_REDIS.
# 4. WebRTC: one worker pinned as in 1, a pool of aiortc callers at $STEPS_WEBRTC
#    (loadtest/bench_webrtc.py; its own section of the document; empty = skip).
# 5. Cloud providers: $CLOUD_TURNS push-to-talk and as many hands-free turns through
#    Deepgram -> Anthropic -> Deepgram Aura, each a loopback fake with the providers'
#    published timing
#    (loadtest/cloud_turns.py; its own section of the document; 0 = skip).
#
# Bounded: every step has a fixed length and the whole run stops at $MAX_SECONDS. Only
# 127.0.0.1. Override any variable below from the environment, e.g.
#     STEPS_ONE=1,100,200 MEASURE=10 make bench
set -euo pipefail

cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PORT=${PORT:-18780}
SERVER_CPU=${SERVER_CPU:-0}
GEN_CPU=${GEN_CPU:-1}
STEPS_ONE=${STEPS_ONE:-1,50,100,200,300,350,400,450,500}
STEPS_TWO=${STEPS_TWO:-1,100,200,300,400,500,600}
STEPS_REDIS=${STEPS_REDIS:-1,300}
STEPS_WEBRTC=${STEPS_WEBRTC:-1,10,20,30,40}
CLOUD_TURNS=${CLOUD_TURNS:-40}
MEASURE=${MEASURE:-20}
MEASURE_FIRST=${MEASURE_FIRST:-40}
MAX_SECONDS=${MAX_SECONDS:-380}
TWO_WORKERS=${TWO_WORKERS:-1}
NOTES=${NOTES:-}
OUT=${OUT:-loadtest/results}
DOC=${DOC:-docs/benchmarks.md}
REDIS_URL_BENCH=${REDIS_URL_BENCH:-redis://127.0.0.1:6379/0}
# Scheduling priority of the server and the generator: on a shared machine other work on
# the same cores otherwise shows up as "server latency". 0 = as everything else.
NICE=${NICE:--10}

# Every caller of the load generator comes from 127.0.0.1: the per-address connection limits
# (docs/security.md#limits) are raised to let one address hold the whole sweep. Every other
# limit (per learner, per message, audio speed) is at its default and on the hot path.
BENCH_SOCKETS=${BENCH_SOCKETS:-100000}
NOTES="per-address connection limits raised for the generator's one address (MAX_SOCKETS_PER_ADDRESS, CONNECTIONS_PER_SECOND and CONNECTIONS_BURST=$BENCH_SOCKETS); every other limit at its default. ${NOTES}"

# The benchmark defines the server's storage itself (SQLite; Redis only in sweep 3).
unset REDIS_URL REDIS_KEY_PREFIX DATABASE_URL
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/lva-bench.XXXXXX)
SERVER_PID=""

cleanup() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

pinned() {  # pinned CPU-LIST: the nice and taskset prefix (no taskset without a CPU list)
  local prefix=""
  if [[ "$NICE" != 0 ]] && nice -n "$NICE" true 2>/dev/null; then
    prefix="nice -n $NICE"
  fi
  if command -v taskset >/dev/null && [[ $(nproc) -gt 1 && -n "$1" ]]; then
    prefix="$prefix taskset -c $1"
  fi
  echo "$prefix"
}

start_server() {  # start_server CPU-LIST extra-args...
  local cpus=$1; shift
  # shellcheck disable=SC2046  # the prefix is meant to split into words
  STT_PROVIDERS=simulated LLM_PROVIDERS=simulated TTS_PROVIDERS=simulated \
  ENDPOINT_SILENCE_MS=200 DATABASE_PATH="$WORK/captures.db" LOG_FORMAT=json \
  PROMETHEUS_MULTIPROC_DIR="" \
  MAX_SOCKETS_PER_ADDRESS="$BENCH_SOCKETS" CONNECTIONS_PER_SECOND="$BENCH_SOCKETS" \
  CONNECTIONS_BURST="$BENCH_SOCKETS" \
    $(pinned "$cpus") "$PY" -m server --host 127.0.0.1 --port "$PORT" "$@" \
    >"$WORK/server.log" 2>&1 &
  SERVER_PID=$!  # nice and taskset exec the server: the same pid
  for _ in $(seq 1 150); do
    if curl -fsS "http://127.0.0.1:$PORT/health/ready" >/dev/null 2>&1; then
      sleep 1  # workers: let every one of them come up
      return 0
    fi
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log"; exit 1; }
    sleep 0.2
  done
  echo "server not ready"; cat "$WORK/server.log"; exit 1
}

stop_server() {
  kill -TERM "$SERVER_PID"
  for _ in $(seq 1 150); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.2; done
  SERVER_PID=""
}

sweep() {  # sweep CPU-LIST STEPS LABEL JSON
  "$PY" -c "pass"  # warm the interpreter's caches before timing anything
  # shellcheck disable=SC2046
  $(pinned "$1") "$PY" -m loadtest.voice_load --url "ws://127.0.0.1:$PORT" --steps "$2" \
    --measure "$MEASURE" --measure-first "$MEASURE_FIRST" --server-pid "$SERVER_PID" \
    --max-seconds "$MAX_SECONDS" --label "$3" --json "$4" --markdown "${4%.json}.md"
}

echo "== one worker on CPU $SERVER_CPU, load generator on CPU $GEN_CPU"
start_server "$SERVER_CPU"
sweep "$GEN_CPU" "$STEPS_ONE" "One worker, one core (server on CPU $SERVER_CPU)" "$OUT/one-worker.json"
stop_server

EXTRA=()
if [[ "$TWO_WORKERS" == 1 ]]; then
  echo "== two workers (--workers 2), not pinned"
  start_server "" --workers 2
  sweep "" "$STEPS_TWO" "Two workers (--workers 2), not pinned" "$OUT/two-workers.json"
  stop_server
  EXTRA+=(--two "$OUT/two-workers.json")
fi

if [[ -n "$STEPS_REDIS" ]] &&
  "$PY" -c "import redis; redis.Redis.from_url('$REDIS_URL_BENCH').ping()" 2>/dev/null; then
  echo "== one worker on CPU $SERVER_CPU, sessions in Redis"
  export REDIS_URL="$REDIS_URL_BENCH" REDIS_KEY_PREFIX="lva-bench-$$:"
  start_server "$SERVER_CPU"
  sweep "$GEN_CPU" "$STEPS_REDIS" "One worker, one core, sessions in Redis" \
    "$OUT/one-worker-redis.json"
  stop_server
  "$PY" -c "
import redis; r = redis.Redis.from_url('$REDIS_URL_BENCH')
keys = list(r.scan_iter('$REDIS_KEY_PREFIX*'))
r.delete(*keys) if keys else None"
  unset REDIS_URL REDIS_KEY_PREFIX
  EXTRA+=(--redis "$OUT/one-worker-redis.json")
fi

if [[ "$NICE" != 0 ]]; then
  NOTES="server and load generator at nice $NICE (a shared machine). $NOTES"
fi
"$PY" -m loadtest.benchdoc --one "$OUT/one-worker.json" "${EXTRA[@]}" --out "$DOC" \
  --notes "$NOTES"

if [[ -n "$STEPS_WEBRTC" ]] && "$PY" -c "import aiortc" 2>/dev/null; then
  echo "== WebRTC: one worker on CPU $SERVER_CPU, aiortc callers on CPU $GEN_CPU"
  "$PY" -m loadtest.bench_webrtc --steps "$STEPS_WEBRTC" --measure "$MEASURE" \
    --server-cpu "$SERVER_CPU" --gen-cpu "$GEN_CPU" --port "$PORT" --nice "$NICE" \
    --json "$OUT/webrtc.json" --write "$DOC"
fi

if [[ "$CLOUD_TURNS" != 0 ]]; then
  echo "== Cloud providers: $CLOUD_TURNS push-to-talk and $CLOUD_TURNS hands-free turns on the fakes' published timing"
  timeout 1500 "$PY" -m loadtest.cloud_turns --turns "$CLOUD_TURNS" \
    --json "$OUT/cloud-turns.json" --markdown "$DOC"
fi
