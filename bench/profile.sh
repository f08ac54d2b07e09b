#!/usr/bin/env bash
# bench/profile.sh: where the CPU of a loaded stack goes, inside the processes.
#
# Starts a stack of its own as bench/scale.sh does (bench/stack.sh: web=2,
# worker=$WORKERS, scheduler=1, here with WARREN_PPROF=true), offers $RATE jobs/s for $DURATION with warren-bench's
# latency phase and, from $WARMUP in, records for $SECONDS_PROFILED s:
#   - a CPU profile of one api and one workers process (Go's pprof), printed as
#     the top functions by cumulative time;
#   - with perf installed (Debian package linux-perf), every Postgres backend:
#     the split between Postgres's own code, libc and the kernel, and the
#     functions with the most time under them (commit's WAL flush, index
#     inserts, ...).
# Nothing is asserted; the figures in docs/BENCHMARKS.md come from this.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "bench-profile: $*" >&2; }
RATE=${RATE:-500}
DURATION=${DURATION:-30s}
WARMUP=${WARMUP:-8}
SECONDS_PROFILED=${SECONDS_PROFILED:-12}
WORKERS=${WORKERS:-2}
. bench/stack.sh
start_stack "$WORKERS" "$DIR/profile-run.log" WARREN_PPROF=true

out="$DIR/profile-bench.txt"
WARREN_URL="$URL" "$DIR/warren-bench" -env "$DIR/env" \
  -phases latency -rate "$RATE" -duration "$DURATION" -out "$DIR/profile-bench.json" >"$out" 2>&1 &
bench_pid=$!
sleep "$WARMUP" # let the offered load settle before recording

api="http://127.0.0.1:$((BASE + 100))/debug/pprof/profile?seconds=$SECONDS_PROFILED"
worker="http://127.0.0.1:$((BASE + 200))/debug/pprof/profile?seconds=$SECONDS_PROFILED"
curl -fsS -o "$DIR/api.pprof" "$api" &
curl -fsS -o "$DIR/workers.pprof" "$worker" &
perf_ok=
if command -v perf >/dev/null; then
  pids=$(pgrep -d, -f '^postgres: warren ' || true)
  if [ -n "$pids" ] && perf record -q -F 499 -g -p "$pids" -o "$DIR/postgres.perf" -- sleep "$SECONDS_PROFILED" 2>/dev/null; then
    perf_ok=1
  fi
else
  say "perf is not installed (apt-get install linux-perf): no Postgres profile"
fi
wait %2 %3
wait "$bench_pid" || true
cat "$out"
set +o pipefail # head closes the pipes of the reports below early

echo
echo "== api: top functions by cumulative CPU ($SECONDS_PROFILED s at $RATE jobs/s offered)"
go tool pprof -top -cum -nodecount=25 bin/api "$DIR/api.pprof" 2>/dev/null | sed -n '4,31p'
echo
echo "== workers: top functions by cumulative CPU"
go tool pprof -top -cum -nodecount=25 bin/workers "$DIR/workers.pprof" 2>/dev/null | sed -n '4,31p'
if [ -n "$perf_ok" ]; then
  echo
  echo "== postgres backends: CPU by where the code lives"
  perf report -i "$DIR/postgres.perf" --no-children --sort dso --stdio -g none 2>/dev/null | grep -E '^ +[0-9]' | head -6
  echo
  echo "== postgres backends: functions with the most CPU under them"
  perf report -i "$DIR/postgres.perf" --children --sort symbol --stdio -g none 2>/dev/null |
    grep -E '^ +[0-9]' | grep -vE '0x0000|PostmasterMain|__libc_start|\] main |PostgresMain' | head -25
fi
