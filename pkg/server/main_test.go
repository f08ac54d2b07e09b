package server_test

import (
	"testing"

	"go.uber.org/goleak"
)

// The server starts goroutines for ?wait (a Redis subscription and a health
// watcher); Close must stop them.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// http.DefaultClient's idle keep-alive connections close on their own.
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
	)
}
