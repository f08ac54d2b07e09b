#!/usr/bin/env bash
# Starts and stops the services Warren needs (Postgres, RabbitMQ, Redis) as
# ordinary processes bound to 127.0.0.1, with all their data under one directory.
#
#   deploy/services.sh start   # initialise on first use, start, wait until ready
#   deploy/services.sh stop    # stop everything this data directory started
#
# WARREN_SERVICES (default postgres,rabbitmq,redis) limits start, stop and env to
# a subset, e.g. WARREN_SERVICES=redis deploy/services.sh stop stops Redis alone.
#
# Settings (environment): WARREN_DATA_DIR (.data), WARREN_SHARDS (2),
# WARREN_PG_PORT (5432), WARREN_AMQP_PORT (5672), WARREN_AMQP_MGMT_PORT (15672),
# WARREN_AMQP_DIST_PORT (25672), WARREN_EPMD_PORT (4369), WARREN_REDIS_PORT (6379).
#
# On start it writes $WARREN_DATA_DIR/services.env with DATABASE_URLS, DATABASE_ADMIN_URL,
# RABBITMQ_URL, WARREN_RABBITMQ_MGMT_URL and REDIS_URL (those of the selected services).
set -euo pipefail

DATA=${WARREN_DATA_DIR:-.data}
mkdir -p "$DATA"
DATA=$(cd "$DATA" && pwd)
SHARDS=${WARREN_SHARDS:-2}
PG_PORT=${WARREN_PG_PORT:-5432}
AMQP_PORT=${WARREN_AMQP_PORT:-5672}
MGMT_PORT=${WARREN_AMQP_MGMT_PORT:-15672}
DIST_PORT=${WARREN_AMQP_DIST_PORT:-25672}
EPMD_PORT=${WARREN_EPMD_PORT:-4369}
REDIS_PORT=${WARREN_REDIS_PORT:-6379}
PG_BIN=${WARREN_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
PG_USER=warren-pg # the unprivileged system user Postgres runs as when we are root

declare -A WANT=()
IFS=, read -ra _selected <<<"${WARREN_SERVICES:-postgres,rabbitmq,redis}"
for _s in "${_selected[@]}"; do
  case "$_s" in
    postgres | rabbitmq | redis) WANT[$_s]=1 ;;
    "") ;;
    *) echo "services: WARREN_SERVICES: unknown service \"$_s\" (postgres, rabbitmq, redis)" >&2; exit 2 ;;
  esac
done
want() { [ -n "${WANT[$1]:-}" ]; }

say() { echo "services: $*" >&2; }
die() { say "$*"; exit 1; }

# wait_port PORT NAME SECONDS: wait until something accepts TCP connections on 127.0.0.1:PORT.
wait_port() {
  local deadline=$((SECONDS + $3))
  until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || die "$2 did not accept connections on 127.0.0.1:$1 within $3 s (log: $4)"
    sleep 0.2
  done
}

# wait_closed PORT SECONDS: wait until nothing listens on 127.0.0.1:PORT.
wait_closed() {
  local deadline=$((SECONDS + $2))
  while (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || { say "port $1 still bound after $2 s"; return 1; }
    sleep 0.2
  done
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

secret() {
  # a new random secret, or the one stored on first start so restarts reuse it
  local f="$DATA/secrets/$1"
  if [ ! -s "$f" ]; then
    mkdir -p "$DATA/secrets" && chmod 700 "$DATA/secrets"
    head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$f"
  fi
  cat "$f"
}

# as_pg runs a command as the user that owns the Postgres data directory.
as_pg() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u "$PG_USER" -- "$@"
  else
    "$@"
  fi
}

start_postgres() {
  local dir="$DATA/postgres"
  [ -x "$PG_BIN/postgres" ] || die "Postgres binaries not found under /usr/lib/postgresql (run deploy/install.sh)"
  if [ "$(id -u)" = 0 ] && ! id "$PG_USER" >/dev/null 2>&1; then
    say "creating system user $PG_USER to run Postgres (it refuses to run as root)"
    useradd --system --no-create-home --shell /usr/sbin/nologin "$PG_USER"
  fi
  local pw; pw=$(secret postgres)
  if [ ! -s "$dir/PG_VERSION" ]; then
    say "initialising Postgres in $dir"
    mkdir -p "$dir"
    local pwfile="$DATA/postgres.pw"
    (umask 077 && printf '%s\n' "$pw" >"$pwfile")
    if [ "$(id -u)" = 0 ]; then
      chown "$PG_USER" "$dir" "$pwfile"
      chmod 755 "$DATA" # the Postgres user must reach its directory
    fi
    chmod 700 "$dir"
    as_pg "$PG_BIN/initdb" -D "$dir" -U warren --pwfile="$pwfile" \
      --auth=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$DATA/postgres-init.log" 2>&1 ||
      die "initdb failed: see $DATA/postgres-init.log"
    rm -f "$pwfile"
    cat >>"$dir/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
max_connections = 300
shared_buffers = 128MB
fsync = on
synchronous_commit = on
CONF
  fi
  if [ -s "$dir/postmaster.pid" ] && as_pg "$PG_BIN/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
    say "Postgres already running on $PG_PORT"
  else
    port_free "$PG_PORT" || die "port $PG_PORT (WARREN_PG_PORT) is already in use"
    say "starting Postgres on 127.0.0.1:$PG_PORT"
    as_pg "$PG_BIN/pg_ctl" -D "$dir" -l "$dir/server.log" -o "-p $PG_PORT" -w -t 60 start >/dev/null ||
      die "Postgres did not start: see $dir/server.log"
  fi
  local i db
  for ((i = 0; i < SHARDS; i++)); do
    db="warren_$i"
    if ! PGPASSWORD=$pw psql -h 127.0.0.1 -p "$PG_PORT" -U warren -d postgres -Atqc \
      "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1; then
      say "creating shard database $db"
      PGPASSWORD=$pw psql -h 127.0.0.1 -p "$PG_PORT" -U warren -d postgres -qc "CREATE DATABASE $db" >/dev/null
    fi
  done
}

rabbit_env() {
  export RABBITMQ_NODENAME="warren-$AMQP_PORT@localhost"
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_NODE_PORT=$AMQP_PORT
  export RABBITMQ_DIST_PORT=$DIST_PORT
  export ERL_EPMD_PORT=$EPMD_PORT
  export ERL_EPMD_ADDRESS=127.0.0.1
  # Erlang distribution (node-to-node) on loopback too, not on every interface.
  export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
  export RABBITMQ_MNESIA_BASE="$DATA/rabbitmq/mnesia"
  export RABBITMQ_LOG_BASE="$DATA/rabbitmq/log"
  export RABBITMQ_ENABLED_PLUGINS_FILE="$DATA/rabbitmq/enabled_plugins"
  export RABBITMQ_CONFIG_FILE="$DATA/rabbitmq/rabbitmq"
  export RABBITMQ_PID_FILE="$DATA/rabbitmq/rabbitmq.pid"
  export HOME="$DATA/rabbitmq"
}

start_rabbitmq() {
  local pw; pw=$(secret rabbitmq)
  (
    rabbit_env
    mkdir -p "$RABBITMQ_MNESIA_BASE" "$RABBITMQ_LOG_BASE"
    echo '[rabbitmq_management].' >"$RABBITMQ_ENABLED_PLUGINS_FILE"
    # default_user/default_pass only seed an empty database, so the password stays stable.
    cat >"$RABBITMQ_CONFIG_FILE.conf" <<CONF
listeners.tcp.1 = 127.0.0.1:$AMQP_PORT
management.tcp.ip = 127.0.0.1
management.tcp.port = $MGMT_PORT
default_user = warren
default_pass = $pw
loopback_users = none
# Warren does not hold a delivery for a job's length: a worker acks it once the job is
# claimed in Postgres, and hands back a prefetched one within a minute. This is a margin.
consumer_timeout = 86400000
disk_free_limit.absolute = 200MB
CONF
    if [ -s "$RABBITMQ_PID_FILE" ] && kill -0 "$(cat "$RABBITMQ_PID_FILE")" 2>/dev/null; then
      say "RabbitMQ already running on $AMQP_PORT"
      exit 0
    fi
    port_free "$AMQP_PORT" || die "port $AMQP_PORT (WARREN_AMQP_PORT) is already in use"
    say "starting RabbitMQ on 127.0.0.1:$AMQP_PORT (management on $MGMT_PORT)"
    setsid /usr/lib/rabbitmq/bin/rabbitmq-server >"$RABBITMQ_LOG_BASE/stdout.log" 2>&1 </dev/null &
    # RabbitMQ writes its pid file late; remember the launcher's pid now.
    echo $! >"$DATA/rabbitmq/launcher.pid"
  )
}

start_redis() {
  local pw; pw=$(secret redis)
  local dir="$DATA/redis"
  mkdir -p "$dir"
  if [ -s "$dir/redis.pid" ] && kill -0 "$(cat "$dir/redis.pid")" 2>/dev/null; then
    say "Redis already running on $REDIS_PORT"
    return
  fi
  port_free "$REDIS_PORT" || die "port $REDIS_PORT (WARREN_REDIS_PORT) is already in use"
  local maxmem=${WARREN_REDIS_MAXMEMORY:-256mb}
  [[ ${maxmem,,} =~ ^[0-9]+(k|kb|m|mb|g|gb)?$ ]] ||
    die "WARREN_REDIS_MAXMEMORY=$maxmem is not a size such as 256mb"
  say "starting Redis on 127.0.0.1:$REDIS_PORT"
  cat >"$dir/redis.conf" <<CONF
bind 127.0.0.1
port $REDIS_PORT
dir $dir
pidfile $dir/redis.pid
logfile $dir/redis.log
daemonize yes
requirepass $pw
# Redis holds nothing Postgres does not (cached finished jobs, done events,
# heartbeats, rate-limit counters), and Warren serves from Postgres while it is
# empty or down; so it keeps no files. With an append-only file, its rewrite
# forked a 220 MB Redis mid-benchmark: Redis stalled for seconds and the
# rewrite ran for 23 s beside the stack.
appendonly no
save ""
# Redis holds a cache of finished jobs (each for WARREN_RESULT_TTL) besides
# the worker heartbeats: at a thousand jobs a second a day's results would
# not fit in memory. Past the cap, the least recently used keys that expire
# anyway make room (the heartbeats are rewritten every few seconds); reads of
# an evicted job fall back to Postgres.
maxmemory $maxmem
maxmemory-policy volatile-lru
CONF
  redis-server "$dir/redis.conf" || die "Redis did not start: see $dir/redis.log"
}

write_env() {
  local i urls=""
  for ((i = 0; i < SHARDS; i++)); do
    urls+="${urls:+,}postgres://warren:$(secret postgres)@127.0.0.1:$PG_PORT/warren_$i?sslmode=disable"
  done
  # Keep the lines of the services not selected (started by another call).
  local keep=""
  if [ -s "$DATA/services.env" ]; then
    local drop=()
    ! want postgres || drop+=(DATABASE_URLS DATABASE_ADMIN_URL)
    ! want rabbitmq || drop+=(RABBITMQ_URL WARREN_RABBITMQ_MGMT_URL)
    ! want redis || drop+=(REDIS_URL)
    keep=$(grep -vE "^($(IFS='|'; echo "${drop[*]:-NONE}"))=" "$DATA/services.env" || true)
  fi
  {
    [ -z "$keep" ] || printf '%s\n' "$keep"
    if want postgres; then
      echo "DATABASE_URLS=$urls"
      echo "DATABASE_ADMIN_URL=postgres://warren:$(secret postgres)@127.0.0.1:$PG_PORT/postgres?sslmode=disable"
    fi
    if want rabbitmq; then
      echo "RABBITMQ_URL=amqp://warren:$(secret rabbitmq)@127.0.0.1:$AMQP_PORT/"
      echo "WARREN_RABBITMQ_MGMT_URL=http://warren:$(secret rabbitmq)@127.0.0.1:$MGMT_PORT/"
    fi
    if want redis; then
      echo "REDIS_URL=redis://:$(secret redis)@127.0.0.1:$REDIS_PORT/0"
    fi
  } >"$DATA/services.env"
  chmod 600 "$DATA/services.env"
}

start() {
  ! want rabbitmq || start_rabbitmq # slowest to boot: start it first, wait for it last
  ! want redis || start_redis
  ! want postgres || start_postgres
  ! want redis || wait_port "$REDIS_PORT" Redis 20 "$DATA/redis/redis.log"
  if want rabbitmq; then
    wait_port "$AMQP_PORT" RabbitMQ 90 "$DATA/rabbitmq/log"
    wait_port "$MGMT_PORT" "RabbitMQ management" 60 "$DATA/rabbitmq/log"
  fi
  write_env
  say "ready: $DATA/services.env"
}

stop_pidfile() { # stop_pidfile FILE NAME
  [ -s "$1" ] || return 0
  local pid; pid=$(cat "$1")
  if kill -0 "$pid" 2>/dev/null; then
    say "stopping $2 (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 30))
    while kill -0 "$pid" 2>/dev/null; do
      if [ $SECONDS -ge $deadline ]; then kill -KILL "$pid" 2>/dev/null || true; fi
      sleep 0.2
    done
  fi
  rm -f "$1"
}

stop() {
  local ports=()
  if want postgres; then
    if [ -s "$DATA/postgres/postmaster.pid" ]; then
      say "stopping Postgres"
      as_pg "$PG_BIN/pg_ctl" -D "$DATA/postgres" -m fast -w -t 60 stop >/dev/null 2>&1 || true
    fi
    ports+=("$PG_PORT")
  fi
  if want redis; then
    stop_pidfile "$DATA/redis/redis.pid" Redis
    ports+=("$REDIS_PORT")
  fi
  if want rabbitmq; then
    (
      rabbit_env
      stop_pidfile "$RABBITMQ_PID_FILE" RabbitMQ
      stop_pidfile "$DATA/rabbitmq/launcher.pid" "RabbitMQ launcher"
      # RabbitMQ leaves its own epmd behind; it was started on our private port.
      epmd -port "$EPMD_PORT" -kill >/dev/null 2>&1 || true
    )
    ports+=("$AMQP_PORT" "$MGMT_PORT" "$DIST_PORT" "$EPMD_PORT")
  fi
  local p
  for p in "${ports[@]}"; do
    wait_closed "$p" 30 || true
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  env) write_env && cat "$DATA/services.env" ;;
  *) echo "usage: $0 start|stop|env" >&2; exit 2 ;;
esac
