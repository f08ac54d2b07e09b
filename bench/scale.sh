#!/usr/bin/env bash
# make bench-scale: how throughput grows with the number of worker processes.
#
# For each worker count it starts a whole stack of its own (deploy/run.sh with a
# fixed formation web=2,worker=N,scheduler=1, its own data directory and ports, so
# it never touches `make run`'s), runs warren-bench's ceiling, batch and single
# phases against it, stops it, and prints one summary row per count. JSON per count
# goes to $BENCH_DIR/scale-N.json.
#
# With RATES (e.g. "50 200 350 500") it then runs the latency phase against the
# same stack once per offered rate, DURATION (20s) each, and prints one row per
# worker count and rate: latency against load. PHASES (ceiling,batch,single) may
# be set empty to run only that.
#
# Settings: WORKERS ("1 2 4"), N (20000), CLIENTS (32), WARREN_CONCURRENCY (the
# workers' default), WARREN_SHARDS (2), BENCH_DIR (.data/benchscale),
# BENCH_PORT_BASE (21000: HAProxy on base+80, web on base+100…, Postgres base+432,
# AMQP base+672…, Redis base+379).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "bench-scale: $*" >&2; }
WORKERS=${WORKERS:-"1 2 4"}
N=${N:-20000}
CLIENTS=${CLIENTS:-32}
RATES=${RATES:-}
DURATION=${DURATION:-20s}
PHASES=${PHASES-ceiling,batch,single}
DIR=${BENCH_DIR:-.data/benchscale}
BASE=${BENCH_PORT_BASE:-21000}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
export PATH=/usr/local/go/bin:$PATH

go build -o "$DIR/warren-bench" ./bench/cmd/warren-bench

stack_pid=
stop_stack() {
  [ -n "$stack_pid" ] || return 0
  kill -INT -- "-$stack_pid" 2>/dev/null || true
  wait "$stack_pid" 2>/dev/null || true
  stack_pid=
}
trap stop_stack EXIT
trap 'stop_stack; exit 130' INT TERM

rows=()
lrows=()
for w in $WORKERS; do
  log="$DIR/run-$w.log"
  say "starting a stack with $w worker process(es) (log: $log)"
  WARREN_DATA_DIR="$DIR/data" WARREN_ENV_FILE="$DIR/env" \
    WARREN_AUTOSCALE=off WARREN_FORMATION="web=2,worker=$w,scheduler=1" \
    WARREN_HTTP_PORT=$((BASE + 80)) WARREN_WEB_PORT=$((BASE + 100)) \
    WARREN_PG_PORT=$((BASE + 432)) WARREN_AMQP_PORT=$((BASE + 672)) WARREN_AMQP_MGMT_PORT=$((BASE + 673)) \
    WARREN_AMQP_DIST_PORT=$((BASE + 674)) WARREN_EPMD_PORT=$((BASE + 675)) WARREN_REDIS_PORT=$((BASE + 379)) \
    setsid deploy/run.sh >"$log" 2>&1 </dev/null &
  stack_pid=$!
  deadline=$((SECONDS + 240))
  until grep -q '^run: ready:' "$log"; do
    if ! kill -0 "$stack_pid" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
      say "the stack did not become ready; the end of $log:"
      tail -n 30 "$log" >&2
      exit 1
    fi
    sleep 0.5
  done
  if [ -n "$PHASES" ]; then
    out="$DIR/scale-$w.json"
    WARREN_URL="http://127.0.0.1:$((BASE + 80))" "$DIR/warren-bench" -env "$DIR/env" \
      -phases "$PHASES" -n "$N" -clients "$CLIENTS" -out "$out" | tee "$DIR/scale-$w.txt"
    rows+=("$(printf '%-8s %s | %s | %s' "$w" \
      "$(grep -m1 '^ceiling' "$DIR/scale-$w.txt" | sed 's/  */ /g')" \
      "$(grep -m1 '^batch path' "$DIR/scale-$w.txt" | sed 's/  */ /g')" \
      "$(grep -m1 '^single path' "$DIR/scale-$w.txt" | sed 's/  */ /g')")")
  fi
  for r in $RATES; do
    txt="$DIR/latency-$w-$r.txt"
    WARREN_URL="http://127.0.0.1:$((BASE + 80))" "$DIR/warren-bench" -env "$DIR/env" \
      -phases latency -rate "$r" -duration "$DURATION" -out "$DIR/latency-$w-$r.json" | tee "$txt"
    lrows+=("$(printf '%-8s %-6s %s | %s | %s | %s' "$w" "$r" \
      "$(grep -m1 '^  submit ' "$txt" | sed 's/  */ /g')" \
      "$(grep -m1 'submit→succeeded' "$txt" | sed 's/  */ /g')" \
      "$(grep -m1 'cpu ms/job' "$txt" | sed -E 's/.*total ([0-9.]+).*\(machine ([0-9]+ %) busy\)/cpu \1 ms\/job, machine \2 busy/')" \
      "$(grep -m1 'cpu wait ms/job' "$txt" | sed -E 's/.*total ([0-9.]+).*/cpu wait \1 ms\/job/')")")
  done
  stop_stack
done

if [ ${#rows[@]} -gt 0 ]; then
  echo
  echo "workers  ceiling | batch path | single path"
  printf '%s\n' "${rows[@]}"
fi
if [ ${#lrows[@]} -gt 0 ]; then
  echo
  echo "workers  rate/s submit | submit→succeeded | cpu per job | cpu wait per job"
  printf '%s\n' "${lrows[@]}"
fi
