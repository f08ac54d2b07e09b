# Warren: the two commands are `make run` and `make test`; `make help` lists the rest.
.DEFAULT_GOAL := help
BIN := bin
GO ?= go

.PHONY: help run test build lint clean autoscale-table bench

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

run: ## install what is missing, start the whole stack in the foreground (Ctrl-C stops it all)
	@deploy/run.sh

test: ## start isolated services, run all tests with the race detector, stop the services
	@deploy/test.sh $(ARGS)

build: ## build bin/api, bin/workers and bin/scheduler
	$(GO) build -o $(BIN)/ ./api ./workers ./scheduler

lint: ## gofmt, go vet and staticcheck
	@test -z "$$(gofmt -l .)" || { gofmt -l .; echo "gofmt: the files above need formatting"; exit 1; }
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

bench: ## load-test the running stack (make run): ceiling, batch, single, latency, memory; ARGS="-rate 500 -duration 30s" (docs/BENCHMARKS.md)
	$(GO) run ./bench/cmd/warren-bench $(ARGS)

clean: ## remove build output (keeps .data/ and .env)
	rm -rf $(BIN)

autoscale-table: ## print the autoscaler's simulation table against the HPA baseline (docs/AUTOSCALING.md)
	$(GO) run ./scheduler simulate
