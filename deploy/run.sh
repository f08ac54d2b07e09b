#!/usr/bin/env bash
# shellcheck disable=SC2317 # cleanup and on_signal are called from traps
#
# make run: the whole Warren stack on one machine, in the foreground.
#
# It installs what is missing (deploy/install.sh), builds bin/, starts Postgres,
# RabbitMQ and Redis on 127.0.0.1 with their data under $WARREN_DATA_DIR
# (deploy/services.sh), writes .env on first start, applies the migrations with
# the Procfile's release command, then runs HAProxy in front of the Procfile's
# processes (foreman). Ctrl-C or SIGTERM stops everything it started.
#
# Settings (environment), besides the service ports deploy/services.sh reads:
#   WARREN_DATA_DIR     .data                          services' data, logs, lock
#   WARREN_ENV_FILE     .env                           generated secrets and service URLs
#   WARREN_FORMATION    web=2,scheduler=1              foreman's -m
#   WARREN_AUTOSCALE    local                          the scheduler runs the workers; off: the formation does
#   WARREN_WEB_PORT     5000                           port of web.1; web.N gets 5000+N-1
#   WARREN_HTTP_PORT    8080                           HAProxy, the stack's front door
#   WARREN_SHARDS       2                              Postgres shard databases
#   WARREN_STOP_TIMEOUT 40                             seconds processes get to stop (foreman -t)
#   WARREN_READY_TIMEOUT 120                           seconds to wait for the web processes and HAProxy
#   WARREN_AUTOSCALE_MAX 20                            most workers the scheduler runs (local); their
#                                                      ports are checked free before start and after stop
#   WARREN_SERVICES     postgres,rabbitmq,redis        deploy/services.sh's; the stack needs all three
#   WARREN_PG_BIN       newest /usr/lib/postgresql/*/bin  deploy/services.sh's: Postgres's binaries
# With DATABASE_URLS, RABBITMQ_URL and REDIS_URL all set, those services are used
# and none are started. .foreman's formation is plain `foreman start`'s; this
# script passes its own (-m).
set -euo pipefail
cd "$(dirname "$0")/.."

# A shell cannot trap a signal that was ignored when it started, as SIGINT is for
# `make run &` in a script. Start again with the default actions, so that Ctrl-C,
# kill -INT and kill -TERM always stop the stack cleanly.
if [ -z "${WARREN_RUN_SIGNALS_RESET:-}" ]; then
  ignored=$(sed -n 's/^SigIgn:[[:space:]]*//p' /proc/$$/status 2>/dev/null || true)
  if [ -n "$ignored" ] && (((16#$ignored & 0x4003) != 0)); then # HUP, INT, TERM
    WARREN_RUN_SIGNALS_RESET=1 exec env --default-signal=HUP,INT,TERM "$0" "$@"
  fi
fi
unset WARREN_RUN_SIGNALS_RESET

say() { echo "run: $*" >&2; }
die() { say "error: $*"; exit 1; }

is_port() { [[ $1 =~ ^[0-9]{1,5}$ ]] && [ "$1" -ge 1 ] && [ "$1" -le 65535 ]; }
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

DATA=${WARREN_DATA_DIR:-.data}
ENV_FILE=${WARREN_ENV_FILE:-.env}
FORMATION=${WARREN_FORMATION:-web=2,scheduler=1}
# The scheduler runs and sizes the worker fleet itself (its local autoscaler);
# WARREN_AUTOSCALE=off runs the formation's fixed workers instead.
AUTOSCALE=${WARREN_AUTOSCALE:-local}
WEB_PORT=${WARREN_WEB_PORT:-5000}
HTTP_PORT=${WARREN_HTTP_PORT:-8080}
# The scheduler needs up to the workers' grace (25 s) and a margin to stop its fleet.
STOP_TIMEOUT=${WARREN_STOP_TIMEOUT:-40}
export WARREN_SHARDS=${WARREN_SHARDS:-2}

for v in WARREN_WEB_PORT:$WEB_PORT WARREN_HTTP_PORT:$HTTP_PORT; do
  is_port "${v#*:}" || die "${v%%:*}=${v#*:} is not a port number"
done
[[ $STOP_TIMEOUT =~ ^[0-9]+$ ]] || die "WARREN_STOP_TIMEOUT=$STOP_TIMEOUT is not a number of seconds"
READY_TIMEOUT=${WARREN_READY_TIMEOUT:-120}
[[ $READY_TIMEOUT =~ ^[0-9]+$ ]] || die "WARREN_READY_TIMEOUT=$READY_TIMEOUT is not a number of seconds"
AUTOSCALE_MAX=${WARREN_AUTOSCALE_MAX:-20}
[[ $AUTOSCALE_MAX =~ ^[0-9]+$ ]] || die "WARREN_AUTOSCALE_MAX=$AUTOSCALE_MAX is not a whole number"
# deploy/services.sh can start a subset of the services (WARREN_SERVICES); a
# stack it starts the services for needs all three.
if [ -z "${DATABASE_URLS:-}" ] || [ -z "${RABBITMQ_URL:-}" ] || [ -z "${REDIS_URL:-}" ]; then
  for s in postgres rabbitmq redis; do
    [[ ,${WARREN_SERVICES:-postgres,rabbitmq,redis}, == *,$s,* ]] ||
      die "WARREN_SERVICES=$WARREN_SERVICES leaves out $s, which the stack needs; unset it (to use services of your own, set DATABASE_URLS, RABBITMQ_URL and REDIS_URL)"
  done
fi

mkdir -p "$DATA"
DATA=$(cd "$DATA" && pwd)
export WARREN_DATA_DIR=$DATA # deploy/services.sh must see the same directory
ENV_FILE=$(realpath -m "$ENV_FILE")
# foreman takes its env files as a comma-separated list
[[ $ENV_FILE$DATA != *,* ]] || die "WARREN_ENV_FILE and WARREN_DATA_DIR must not contain commas"

# One stack per data directory. Every child gets fd 9 closed (9>&-): a service
# that outlived us must not hold the lock.
exec 9>>"$DATA/run.lock"
if ! flock -n 9; then
  pid=$(cat "$DATA/run.pid" 2>/dev/null || true)
  die "a stack is already running with data in $DATA (pid ${pid:-unknown}); stop it with Ctrl-C in its terminal or kill -TERM ${pid:-<pid>}"
fi
echo $$ >"$DATA/run.pid"

# --- the Procfile and the formation ------------------------------------------

# Process types in Procfile order, parsed as foreman does; foreman gives type i
# (from 0) the ports base+100*i+(n-1), so web.1's port follows from web's position.
mapfile -t TYPES < <(sed -nE 's/^([A-Za-z0-9_-]+):[[:space:]]*.+$/\1/p' Procfile)
web_index=-1
for i in "${!TYPES[@]}"; do [ "${TYPES[$i]}" != web ] || web_index=$i; done
[ "$web_index" -ge 0 ] || die "Procfile has no web process"
BASE_PORT=$((WEB_PORT - 100 * web_index))
[ "$BASE_PORT" -ge 1 ] || die "WARREN_WEB_PORT=$WEB_PORT is too low for web's position in the Procfile"

# Every process gets a PORT from foreman (web listens on it; the others may serve
# metrics there): remember them all, to check they are free before and after.
WEB_COUNT=0
WEB_PORTS=()
PROC_PORTS=()
IFS=, read -ra entries <<<"${FORMATION// /}"
for e in "${entries[@]}"; do
  [[ $e =~ ^([A-Za-z0-9_-]+)=([0-9]+)$ ]] || die "WARREN_FORMATION: \"$e\" is not type=count (e.g. web=2,worker=2,scheduler=1)"
  name=${BASH_REMATCH[1]} count=$((10#${BASH_REMATCH[2]}))
  index=-1
  for i in "${!TYPES[@]}"; do [ "${TYPES[$i]}" != "$name" ] || index=$i; done
  [ "$index" -ge 0 ] || die "WARREN_FORMATION: the Procfile has no process type \"$name\" (it has ${TYPES[*]})"
  # release runs once, before the stack; under foreman start its exit would stop everything
  [ "$name" != release ] || die "WARREN_FORMATION: leave out release; make run applies it before starting the processes"
  [ "$count" -le 100 ] || die "WARREN_FORMATION: at most $name=100 (foreman spaces process types 100 ports apart)"
  for ((n = 0; n < count; n++)); do
    port=$((BASE_PORT + 100 * index + n))
    is_port "$port" || die "WARREN_WEB_PORT=$WEB_PORT leaves no room for $name.$((n + 1))'s port ($port)"
    PROC_PORTS+=("$port")
    [ "$name" != web ] || WEB_PORTS+=("$port")
  done
  [ "$name" != web ] || WEB_COUNT=$count
done
worker_index=-1
for i in "${!TYPES[@]}"; do [ "${TYPES[$i]}" != worker ] || worker_index=$i; done
if [ "$AUTOSCALE" = local ]; then
  [[ ",${FORMATION// /}," != *,worker=[1-9]* ]] ||
    die "WARREN_FORMATION=$FORMATION runs workers while WARREN_AUTOSCALE=local has the scheduler run them; use worker=0, or WARREN_AUTOSCALE=off"
  [ "$worker_index" -ge 0 ] || die "WARREN_AUTOSCALE=local needs a worker line in the Procfile"
  # The scheduler gives its workers the ports foreman would have: worker.1 first.
  AUTOSCALE_PORT=$((BASE_PORT + 100 * worker_index))
  for ((n = 0; n < 10#$AUTOSCALE_MAX; n++)); do PROC_PORTS+=($((AUTOSCALE_PORT + n))); done
fi

# --- stopping -----------------------------------------------------------------

SERVICES_STARTED=false
FOREMAN_PID=""
HAPROXY_PID=""
CLEANED=""

# stop_group PID NAME SECONDS: SIGTERM to the process (the leader of its own
# process group), wait for it, then SIGKILL whatever is left in its group.
stop_group() {
  local pid=$1 deadline=$((SECONDS + $3))
  if kill -0 "$pid" 2>/dev/null; then
    say "stopping $2 (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
  fi
  if kill -0 -- "-$pid" 2>/dev/null; then
    say "$2 left processes behind after ${3}s: killing them"
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
}

# step CMD...: runs a startup step in the background and waits for it, so a
# signal is handled at once rather than when the step ends (cleanup stops it).
STEP_PID=""
step() {
  "$@" 9>&- &
  STEP_PID=$!
  local rc=0
  wait "$STEP_PID" || rc=$?
  STEP_PID=""
  return $rc
}

cleanup() {
  [ -z "$CLEANED" ] || return 0
  CLEANED=1
  # A second Ctrl-C must not cut the shutdown short (children inherit the ignore).
  trap '' INT TERM HUP
  set +e
  if [ -z "$STEP_PID$FOREMAN_PID$HAPROXY_PID" ] && ! $SERVICES_STARTED; then
    rm -f "$DATA/run.pid"
    return 0
  fi
  say "stopping the stack"
  if [ -n "$STEP_PID" ] && kill -0 "$STEP_PID" 2>/dev/null; then
    kill -TERM "$STEP_PID" 2>/dev/null
    wait "$STEP_PID" 2>/dev/null
  fi
  # Stop taking requests (soft stop: open connections finish) while the processes stop.
  [ -z "$HAPROXY_PID" ] || kill -USR1 "$HAPROXY_PID" 2>/dev/null
  [ -z "$FOREMAN_PID" ] || stop_group "$FOREMAN_PID" "foreman and the Procfile processes" $((STOP_TIMEOUT + 10))
  [ -z "$HAPROXY_PID" ] || stop_group "$HAPROXY_PID" HAProxy 15
  if $SERVICES_STARTED; then
    deploy/services.sh stop 9>&-
  fi
  local p ports=() deadline=$((SECONDS + 15))
  [ -z "$HAPROXY_PID" ] || ports+=("$HTTP_PORT")
  [ -z "$FOREMAN_PID" ] || ports+=("${PROC_PORTS[@]}")
  for p in "${ports[@]}"; do
    while port_busy "$p" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
    port_busy "$p" && say "warning: port $p is still in use"
  done
  rm -f "$DATA/run.pid" "$DATA/foreman.pid" "$DATA/haproxy.pid"
  say "stopped"
}

on_signal() {
  say "$1 received"
  cleanup
  # Die of the same signal, so make and shells see an interrupted command.
  trap - "$1" EXIT
  kill -"$1" $$
  exit $((128 + $(kill -l "$1")))
}
trap 'on_signal INT' INT
trap 'on_signal TERM' TERM
trap 'on_signal HUP' HUP
trap cleanup EXIT

# A run killed with SIGKILL leaves its foreman and HAProxy behind; we hold the
# lock, so any still recorded belong to no running stack.
stop_stale() { # stop_stale PIDFILE NAME COMMAND
  local f=$DATA/$1 pid
  [ -s "$f" ] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$3"; then
    say "$2 (pid $pid) was left running by an earlier run"
    stop_group "$pid" "$2" 15
  fi
  rm -f "$f"
}
stop_stale foreman.pid foreman foreman
stop_stale haproxy.pid HAProxy haproxy

port_busy "$HTTP_PORT" && die "port $HTTP_PORT (WARREN_HTTP_PORT) is already in use"
for p in "${PROC_PORTS[@]}"; do
  port_busy "$p" && die "port $p is already in use; foreman gives it to a process of WARREN_FORMATION=$FORMATION counting from WARREN_WEB_PORT=$WEB_PORT"
done

# --- packages and build --------------------------------------------------------

say "checking the Debian packages the stack needs (deploy/install.sh)"
step deploy/install.sh || die "deploy/install.sh failed"
if ! command -v go >/dev/null && [ -x /usr/local/go/bin/go ]; then
  export PATH=/usr/local/go/bin:$PATH
fi
say "building bin/ (make build)"
step make --no-print-directory build || die "make build failed"

# --- services -------------------------------------------------------------------

SERVICE_VARS=(DATABASE_URLS RABBITMQ_URL REDIS_URL)
declare -A SVC=()
if [ -n "${DATABASE_URLS:-}" ] && [ -n "${RABBITMQ_URL:-}" ] && [ -n "${REDIS_URL:-}" ]; then
  say "DATABASE_URLS, RABBITMQ_URL and REDIS_URL are set: using those services, starting none"
  for v in "${SERVICE_VARS[@]}"; do SVC[$v]=${!v}; done
  EXTERNAL=true
else
  for v in "${SERVICE_VARS[@]}"; do
    if [ -n "${!v:-}" ]; then
      say "note: ignoring $v from the environment; set all of ${SERVICE_VARS[*]} to use your own services"
      unset "$v"
    fi
  done
  SERVICES_STARTED=true # from here on, stop them on exit even if start fails halfway
  say "starting Postgres ($WARREN_SHARDS shards), RabbitMQ and Redis under $DATA (deploy/services.sh)"
  step deploy/services.sh start || die "deploy/services.sh start failed (logs under $DATA)"
  while IFS= read -r line; do
    [[ $line =~ ^([A-Z_]+)=(.*)$ ]] && SVC[${BASH_REMATCH[1]}]=${BASH_REMATCH[2]}
  done <"$DATA/services.env"
  EXTERNAL=false
fi

# --- .env -------------------------------------------------------------------------

# env_get KEY FILE: KEY's value as foreman reads it (the last line wins, quotes removed).
env_get() {
  local line v
  line=$(grep -E "^$1=" "$2" 2>/dev/null | tail -n 1) || return 0
  v=${line#*=}
  if [[ $v =~ ^\'(.*)\'$ ]] || [[ $v =~ ^\"(.*)\"$ ]]; then v=${BASH_REMATCH[1]}; fi
  printf '%s' "$v"
}

# env_line KEY VALUE: a line both bash's `source` and foreman read as KEY=VALUE.
env_line() {
  if [[ $2 =~ ^[A-Za-z0-9_.:/?=,@%+~-]*$ ]]; then
    printf '%s=%s\n' "$1" "$2"
  elif [[ $2 != *"'"* ]]; then
    printf "%s='%s'\n" "$1" "$2"
  else
    die "$1 contains a single quote; .env cannot hold it"
  fi
}

new_token() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

if [ -e "$ENV_FILE" ]; then
  say "reusing $ENV_FILE"
else
  say "writing $ENV_FILE with new API tokens and the service URLs"
  (umask 077 && printf '# Written by make run on first start; later runs keep it. "source %s" sets WARREN_TOKEN for curl.\n' \
    "$(basename "$ENV_FILE")" >"$ENV_FILE")
fi
added=()
for v in "${SERVICE_VARS[@]}"; do
  cur=$(env_get "$v" "$ENV_FILE")
  if [ -z "$cur" ]; then
    env_line "$v" "${SVC[$v]}" >>"$ENV_FILE"
    added+=("$v")
  elif [ "$cur" != "${SVC[$v]}" ] && ! $EXTERNAL; then
    say "warning: $ENV_FILE sets its own $v, different from the services started now; using the file's (delete that line to have it rewritten)"
  fi
done
tokens=$(env_get WARREN_API_TOKENS "$ENV_FILE")
token=$(env_get WARREN_TOKEN "$ENV_FILE")
if [ -z "$tokens" ]; then
  tokens=default:${token:-$(new_token)}
  env_line WARREN_API_TOKENS "$tokens" >>"$ENV_FILE"
  added+=(WARREN_API_TOKENS)
fi
if [ -z "$token" ]; then
  # the default tenant's token, else the first one listed
  token=$(tr ',' '\n' <<<"$tokens" | sed -n 's/^default://p' | head -n 1)
  [ -n "$token" ] || token=$(tr ',' '\n' <<<"$tokens" | head -n 1 | cut -d: -f2-)
  env_line WARREN_TOKEN "$token" >>"$ENV_FILE"
  added+=(WARREN_TOKEN)
fi
if [ -z "$(env_get WARREN_SIGNING_SECRETS "$ENV_FILE")" ]; then
  # the default tenant's secret for signing job callbacks
  env_line WARREN_SIGNING_SECRETS "default:$(new_token)" >>"$ENV_FILE"
  added+=(WARREN_SIGNING_SECRETS)
fi
[ ${#added[@]} -eq 0 ] || say "$ENV_FILE: added ${added[*]}"

# foreman reads .env, then this file; with services of your own, their URLs
# from the environment win over the ones in .env.
RUN_ENV=$DATA/run.env
(umask 077 && : >"$RUN_ENV")
if $EXTERNAL; then
  for v in "${SERVICE_VARS[@]}"; do env_line "$v" "${SVC[$v]}" >>"$RUN_ENV"; done
fi
if [ "$AUTOSCALE" = local ]; then
  env_line WARREN_AUTOSCALE local >>"$RUN_ENV"
  env_line WARREN_AUTOSCALE_PORT "$AUTOSCALE_PORT" >>"$RUN_ENV"
  say "the scheduler runs the worker fleet and sizes it to the load (WARREN_AUTOSCALE=local)"
fi
FOREMAN_ENV=$ENV_FILE,$RUN_ENV

# --- release: migrations on every shard --------------------------------------------

say "applying migrations to every shard (foreman run release)"
step foreman run -e "$FOREMAN_ENV" release || die "the release command (migrations) failed"

# --- HAProxy ----------------------------------------------------------------------

HAPROXY_CFG=$DATA/haproxy.cfg
{
  cat <<CFG
# Generated by deploy/run.sh for formation $FORMATION; rewritten on every start.
global
    log stdout format raw local0 info
    hard-stop-after 15s

defaults
    mode http
    log global
    option httplog
    option dontlog-normal           # log errors and failed requests only
    option forwardfor
    timeout connect 2s
    timeout client 100s             # the api's write timeout is 90s (waiting GETs)
    timeout server 100s
    timeout http-request 10s
    timeout http-keep-alive 10s
    timeout queue 10s
    timeout check 2s
    retries 3
    retry-on conn-failure           # only where the request cannot have reached the api
    option redispatch 1             # and retry on another web process

frontend http
    bind 127.0.0.1:$HTTP_PORT
    default_backend web

backend web
    balance roundrobin
    option httpchk
    http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host localhost
    http-check expect status 200
    default-server check inter 2s fastinter 500ms downinter 1s rise 2 fall 2
CFG
  for ((n = 0; n < WEB_COUNT; n++)); do
    echo "    server web.$((n + 1)) 127.0.0.1:${WEB_PORTS[$n]}"
  done
} >"$HAPROXY_CFG"
haproxy -c -q -f "$HAPROXY_CFG" 9>&- || die "HAProxy rejected $HAPROXY_CFG"

# --- the Procfile, then HAProxy in front of it ----------------------------------------

# Each long-lived process leads its own process group: Ctrl-C reaches only this
# script, which stops them in order, and a group kill leaves nothing behind.
say "starting the Procfile with foreman: $FORMATION, web.1 on port $WEB_PORT"
setsid foreman start -e "$FOREMAN_ENV" -m "$FORMATION" -p "$BASE_PORT" -t "$STOP_TIMEOUT" 9>&- &
FOREMAN_PID=$!
echo "$FOREMAN_PID" >"$DATA/foreman.pid"

# http_ok PORT PATH: true when 127.0.0.1:PORT answers GET PATH with 200.
http_ok() {
  (
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    printf 'GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n' "$2" >&3
    read -r -t 5 _ status _ <&3 && [ "$status" = 200 ]
  ) 2>/dev/null
}

alive() { kill -0 "$FOREMAN_PID" 2>/dev/null && { [ -z "$HAPROXY_PID" ] || kill -0 "$HAPROXY_PID" 2>/dev/null; }; }

# wait_ready PORT...: true once every port answers /readyz with 200; false when
# foreman ends or the deadline passes first. PENDING is left with the ports that did not.
wait_ready() {
  PENDING=("$@")
  local p left
  while [ ${#PENDING[@]} -gt 0 ]; do
    alive && [ $SECONDS -lt $READY_DEADLINE ] || return 1
    left=()
    for p in "${PENDING[@]}"; do http_ok "$p" /readyz || left+=("$p"); done
    PENDING=("${left[@]}")
    [ ${#PENDING[@]} -eq 0 ] || sleep 0.3
  done
}

READY_DEADLINE=$((SECONDS + 10#$READY_TIMEOUT))
ready=true
# HAProxy starts once the web processes answer, so its first health checks pass.
wait_ready "${WEB_PORTS[@]}" || ready=false
alive || die "foreman stopped during startup (its output is above)"

say "starting HAProxy on 127.0.0.1:$HTTP_PORT in front of the web processes (ports: ${WEB_PORTS[*]:-none})"
# Its log (failed requests, servers going up and down) comes on stdout; stderr repeats
# the warnings among them, so those are dropped there.
setsid haproxy -db -f "$HAPROXY_CFG" 9>&- \
  > >(exec 9>&- sed -u 's/^/haproxy     | /') \
  2> >(exec 9>&- sed -u -e '/^\[WARNING\]/d' -e 's/^/haproxy     | /' >&2) &
HAPROXY_PID=$!
echo "$HAPROXY_PID" >"$DATA/haproxy.pid"
if $ready && [ "$WEB_COUNT" -gt 0 ]; then
  wait_ready "$HTTP_PORT" || ready=false
fi

env_hint=$ENV_FILE
[ "$env_hint" != "$PWD/.env" ] || env_hint=.env
if ! alive; then
  : # reported below
elif [ "$WEB_COUNT" -eq 0 ]; then
  say "running without web processes (WARREN_FORMATION=$FORMATION): HAProxy on $HTTP_PORT answers 503"
elif $ready; then
  cat >&2 <<READY

run: ready: http://localhost:$HTTP_PORT (HAProxy → web ×$WEB_COUNT; $FORMATION)
     source $env_hint
     curl -s -H "Authorization: Bearer \$WARREN_TOKEN" -d '{"type":"echo","payload":{"hello":"world"}}' http://localhost:$HTTP_PORT/v1/jobs
     curl -s -H "Authorization: Bearer \$WARREN_TOKEN" http://localhost:$HTTP_PORT/v1/jobs/<id>
     Ctrl-C stops everything.

READY
else
  say "warning: not ready after ${READY_TIMEOUT}s (still waiting on ports ${PENDING[*]}); see the output above. Still running; Ctrl-C stops everything"
fi

# Run until stopped; if foreman (one of its processes ended) or HAProxy exits, stop it all.
status=0
wait -n "$FOREMAN_PID" "$HAPROXY_PID" || status=$?
if ! kill -0 "$FOREMAN_PID" 2>/dev/null; then
  say "foreman exited (status $status): a Procfile process ended, so the whole stack stops"
else
  say "HAProxy exited (status $status), so the whole stack stops"
fi
exit 1
