#!/usr/bin/env bash
# make chaos: Warren's fault suite (deploy/chaos, docs/RELIABILITY.md). The Go
# test starts a stack of its own — data under .data/chaossvc, ports 17xxx, so it
# runs beside `make run` and `make test` — breaks it one fault at a time under
# load, checks the invariant after each, and stops everything it started.
#
# Arguments are passed to `go test` after the defaults, e.g. -run 'TestChaos/redis'.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v go >/dev/null && [ -x /usr/local/go/bin/go ]; then
  export PATH=/usr/local/go/bin:$PATH
fi
deploy/install.sh
exec go test -tags chaos -count=1 -v -timeout 20m ./deploy/chaos "$@"
