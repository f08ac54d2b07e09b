package autoscale

import (
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if os.Getenv("WARREN_FAKE_WORKER") != "" {
		os.Exit(fakeWorker())
	}
	goleak.VerifyTestMain(m)
}

// fakeWorker stands in for a worker process in the local backend's tests
// (the test binary runs itself): it says where it runs, then behaves as
// FAKE_MODE says.
func fakeWorker() int {
	// The handler is in place before the "up" line, which the tests take
	// as leave to send SIGTERM.
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	fmt.Printf("up port=%s ps=%s pid=%d\n", os.Getenv("PORT"), os.Getenv("PS"), os.Getpid())
	fmt.Fprintln(os.Stderr, "a line on stderr")
	switch os.Getenv("FAKE_MODE") {
	case "crash":
		return 3
	case "stubborn":
		signal.Ignore(syscall.SIGTERM)
		<-term // never: SIGTERM is ignored; only SIGKILL ends it
		return 0
	default: // graceful: on SIGTERM, finish the "running jobs", then exit
		<-term
		fmt.Println("draining")
		drain, _ := strconv.Atoi(os.Getenv("FAKE_DRAIN_MS"))
		time.Sleep(time.Duration(drain) * time.Millisecond) // the "running jobs" finishing: simulated work
		_ = os.WriteFile(filepath.Join(os.Getenv("FAKE_DIR"), os.Getenv("PS")+".done"), []byte("drained"), 0o600)
		return 0
	}
}
