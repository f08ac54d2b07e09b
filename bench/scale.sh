#!/usr/bin/env bash
# make bench-scale: how throughput grows with the number of worker processes.
#
# For each worker count it starts a whole stack of its own (deploy/run.sh with a
# fixed formation web=2,worker=N,scheduler=1, its own data directory and ports, so
# it never touches `make run`'s), runs warren-bench's ceiling (RabbitMQ alone),
# postgres (Postgres alone), batch and single phases against it, stops it, and
# prints one summary row per count. JSON per count goes to $BENCH_DIR/scale-N.json.
#
# With RATES (e.g. "50 200 350 500") it then runs the latency phase and the floor
# phase (the same durable steps without Warren) against the same stack once per
# offered rate, DURATION (20s) each, and prints one row per worker count and rate:
# latency against load, beside the floor's. PHASES (ceiling,postgres,batch,single)
# may be set empty to run only that.
#
# Settings: WORKERS ("1 2 4"), N (20000), CLIENTS (32), WARREN_CONCURRENCY (the
# workers' default), WARREN_SHARDS (2), and BENCH_DIR and BENCH_PORT_BASE (see
# bench/stack.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "bench-scale: $*" >&2; }
WORKERS=${WORKERS:-"1 2 4"}
N=${N:-20000}
CLIENTS=${CLIENTS:-32}
RATES=${RATES:-}
DURATION=${DURATION:-20s}
PHASES=${PHASES-ceiling,postgres,batch,single}
. bench/stack.sh

rows=()
lrows=()
for w in $WORKERS; do
  start_stack "$w" "$DIR/run-$w.log"
  if [ -n "$PHASES" ]; then
    out="$DIR/scale-$w.json"
    WARREN_URL="$URL" "$DIR/warren-bench" -env "$DIR/env" \
      -phases "$PHASES" -n "$N" -clients "$CLIENTS" -out "$out" | tee "$DIR/scale-$w.txt"
    rows+=("$(printf '%-8s %s | %s | %s | %s' "$w" \
      "$(grep -m1 '^ceiling: RabbitMQ' "$DIR/scale-$w.txt" | sed 's/  */ /g')" \
      "$(grep -m1 '^ceiling: Postgres' "$DIR/scale-$w.txt" | sed 's/  */ /g')" \
      "$(grep -m1 '^batch path' "$DIR/scale-$w.txt" | sed 's/  */ /g')" \
      "$(grep -m1 '^single path' "$DIR/scale-$w.txt" | sed 's/  */ /g')")")
  fi
  for r in $RATES; do
    txt="$DIR/latency-$w-$r.txt"
    WARREN_URL="$URL" "$DIR/warren-bench" -env "$DIR/env" \
      -phases latency,floor -rate "$r" -duration "$DURATION" -out "$DIR/latency-$w-$r.json" | tee "$txt"
    lrows+=("$(printf '%-8s %-6s %s | %s | floor: %s | %s | %s | %s' "$w" "$r" \
      "$(grep -m1 '^  submit ' "$txt" | sed 's/  */ /g')" \
      "$(grep -m1 'submit→succeeded' "$txt" | sed 's/  */ /g')" \
      "$(grep '^  submit ' "$txt" | sed -n 2p | sed 's/  */ /g')" \
      "$(grep 'submit→succeeded' "$txt" | sed -n 2p | sed 's/  */ /g')" \
      "$(grep -m1 'cpu ms/job' "$txt" | sed -E 's/.*total ([0-9.]+).*\(machine ([0-9]+ %) busy\)/cpu \1 ms\/job, machine \2 busy/')" \
      "$(grep -m1 'cpu wait ms/job' "$txt" | sed -E 's/.*total ([0-9.]+).*/cpu wait \1 ms\/job/')")")
  done
  stop_stack
done

if [ ${#rows[@]} -gt 0 ]; then
  echo
  echo "workers  ceiling: RabbitMQ alone | ceiling: Postgres alone | batch path | single path"
  printf '%s\n' "${rows[@]}"
fi
if [ ${#lrows[@]} -gt 0 ]; then
  echo
  echo "workers  rate/s submit | submit→succeeded | floor: submit | floor: submit→succeeded | cpu per job | cpu wait per job (Warren's)"
  printf '%s\n' "${lrows[@]}"
fi
