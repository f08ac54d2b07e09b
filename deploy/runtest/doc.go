// Package runtest tests `make run` (deploy/run.sh) from the outside, the way a
// developer uses it: it starts the whole local stack on free ports with its own
// data directory and env file, submits a job through HAProxy, stops the stack
// with Ctrl-C and SIGTERM, and checks that nothing is left running and that the
// data and the generated tokens survive a restart.
//
// The test starts its own services; it does not use the ones `make test` starts.
package runtest
