# Warren: the two commands are `make run` and `make test`; `make help` lists the rest.
.DEFAULT_GOAL := help
BIN := bin
GO ?= go

.PHONY: help run test chaos build lint clean autoscale-table bench bench-scale bench-profile

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

run: ## install what is missing, start the whole stack in the foreground (Ctrl-C stops it all)
	@deploy/run.sh

test: ## start isolated services, run all tests with the race detector, stop the services
	@deploy/test.sh $(ARGS)

chaos: ## the fault suite: break a stack of its own under load, check no job is lost or run twice; ARGS="-run TestChaos/redis" (docs/RELIABILITY.md)
	@deploy/chaos.sh $(ARGS)

build: ## build bin/api, bin/workers and bin/scheduler
	$(GO) build -o $(BIN)/ ./api ./workers ./scheduler

lint: ## gofmt, go vet and staticcheck
	@test -z "$$(gofmt -l .)" || { gofmt -l .; echo "gofmt: the files above need formatting"; exit 1; }
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

bench: ## load-test the running stack (make run): RabbitMQ and Postgres ceilings, batch, single, latency, the floor (the services alone), memory; ARGS="-rate 500 -duration 30s" (docs/BENCHMARKS.md)
	$(GO) run ./bench/cmd/warren-bench $(ARGS)

bench-scale: ## throughput (and latency at RATES="50 500") against worker processes: a stack per count, WORKERS="1 2 4" N=20000 (docs/BENCHMARKS.md)
	@bench/scale.sh

bench-profile: ## where a loaded stack's CPU goes: Go profiles of api and workers, perf of Postgres, at RATE=500 (docs/BENCHMARKS.md)
	@bench/profile.sh

clean: ## remove build output (keeps .data/ and .env)
	rm -rf $(BIN)

autoscale-table: ## print the autoscaler's simulation table against the HPA baseline (docs/AUTOSCALING.md)
	$(GO) run ./scheduler simulate
