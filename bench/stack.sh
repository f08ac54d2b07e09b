# bench/stack.sh: sourced by bench/scale.sh and bench/profile.sh. Builds
# warren-bench and starts and stops a whole stack of the bench's own
# (deploy/run.sh with a fixed formation, its own data directory and ports, so
# it never touches `make run`'s).
#
# Settings: BENCH_DIR (.data/benchscale), BENCH_PORT_BASE (21000: HAProxy on
# base+80, web on base+100…, workers on base+200…, Postgres base+432, AMQP
# base+672…, Redis base+379). The caller defines say().

DIR=${BENCH_DIR:-.data/benchscale}
BASE=${BENCH_PORT_BASE:-21000}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
export PATH=/usr/local/go/bin:$PATH
URL="http://127.0.0.1:$((BASE + 80))"

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

# start_stack WORKERS LOG [VAR=VALUE…]: starts web=2,worker=WORKERS,scheduler=1
# with autoscaling off and the extra environment given, logging to LOG, and
# waits until it is ready (at most 240 s).
start_stack() {
  local workers=$1 log=$2
  shift 2
  say "starting a stack with $workers worker process(es) (log: $log)"
  env "$@" WARREN_DATA_DIR="$DIR/data" WARREN_ENV_FILE="$DIR/env" \
    WARREN_AUTOSCALE=off WARREN_FORMATION="web=2,worker=$workers,scheduler=1" \
    WARREN_HTTP_PORT=$((BASE + 80)) WARREN_WEB_PORT=$((BASE + 100)) \
    WARREN_PG_PORT=$((BASE + 432)) WARREN_AMQP_PORT=$((BASE + 672)) WARREN_AMQP_MGMT_PORT=$((BASE + 673)) \
    WARREN_AMQP_DIST_PORT=$((BASE + 674)) WARREN_EPMD_PORT=$((BASE + 675)) WARREN_REDIS_PORT=$((BASE + 379)) \
    setsid deploy/run.sh >"$log" 2>&1 </dev/null &
  stack_pid=$!
  local deadline=$((SECONDS + 240))
  until grep -q '^run: ready:' "$log"; do
    if ! kill -0 "$stack_pid" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
      say "the stack did not become ready; the end of $log:"
      tail -n 30 "$log" >&2
      exit 1
    fi
    sleep 0.5
  done
}
