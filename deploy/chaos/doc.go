// Package chaos is Warren's fault suite, run by `make chaos`: it starts a
// stack of its own (two Postgres servers, one shard each, RabbitMQ, Redis,
// HAProxy in front of two api processes, two workers, a leading and a
// standby scheduler), puts a bounded mixed load through HAProxy, and breaks
// one thing at a time: it SIGKILLs a worker, an api or the leading
// scheduler, restarts RabbitMQ, stops Redis or one Postgres shard, stalls a
// service with SIGSTOP, makes Postgres read-only.
//
// After each scenario it checks the invariant against every shard: each job
// a client was told was accepted is stored on exactly one shard and ended as
// it should (or is reported pending with its state and reason), no job
// succeeded twice, and the counts add up. The scenarios live behind the
// chaos build tag (go test -tags chaos ./deploy/chaos); the invariant
// checker is plain code with a unit test that `make test` runs.
package chaos
