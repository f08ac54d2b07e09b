#!/usr/bin/env bash
# make test: starts an isolated set of services (own ports, own data directory,
# so it runs beside `make run`), runs the Go tests against them, stops them.
#
# Arguments are passed to `go test` (default: -race ./...). WARREN_TEST_KEEP=1 leaves
# the services running for the next run, which then reuses them.
set -euo pipefail
cd "$(dirname "$0")/.."

# Ports below Linux's ephemeral range (32768+), so no outgoing connection of the
# tests themselves can hold one when a service starts.
export WARREN_DATA_DIR=${WARREN_TEST_DATA_DIR:-.data/testsvc}
export WARREN_PG_PORT=${WARREN_TEST_PG_PORT:-16432}
export WARREN_AMQP_PORT=${WARREN_TEST_AMQP_PORT:-16672}
export WARREN_AMQP_MGMT_PORT=${WARREN_TEST_AMQP_MGMT_PORT:-16673}
export WARREN_AMQP_DIST_PORT=${WARREN_TEST_AMQP_DIST_PORT:-16674}
export WARREN_EPMD_PORT=${WARREN_TEST_EPMD_PORT:-16675}
export WARREN_REDIS_PORT=${WARREN_TEST_REDIS_PORT:-16379}
export WARREN_SHARDS=1

deploy/install.sh
if [ "${WARREN_TEST_KEEP:-}" != 1 ]; then
  trap 'deploy/services.sh stop' EXIT
fi
deploy/services.sh start

set -a
# shellcheck disable=SC1091
. "$WARREN_DATA_DIR/services.env"
set +a
export WARREN_TEST_POSTGRES_URL=$DATABASE_ADMIN_URL
export WARREN_TEST_RABBITMQ_URL=$RABBITMQ_URL
export WARREN_TEST_RABBITMQ_MGMT_URL=$WARREN_RABBITMQ_MGMT_URL
export WARREN_TEST_REDIS_URL=$REDIS_URL
unset DATABASE_URLS DATABASE_ADMIN_URL RABBITMQ_URL WARREN_RABBITMQ_MGMT_URL REDIS_URL

if [ $# -eq 0 ]; then set -- -race -count=1 -timeout 15m ./...; fi
go test "$@"
