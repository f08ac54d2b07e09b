// Package runtest tests `make run` (deploy/run.sh) from the outside, the way a
// developer uses it, on free ports with its own data directory and env file.
//
// The default stack: run.sh starts its own services, a job submitted through
// HAProxy runs, Ctrl-C and SIGTERM stop everything, and the data and the
// generated tokens survive a restart.
//
// A fixed formation (WARREN_AUTOSCALE=off, two workers of foreman's) on services
// that already run, those `make test` starts, with shards, RabbitMQ names and
// Redis keys of its own: run.sh starts no service, HAProxy's /readyz checks take
// a frozen web process out and back in, and a Procfile process killed with
// SIGKILL stops the stack but not the services.
package runtest
