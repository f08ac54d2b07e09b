package autoscale

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/warrenhq/warren/pkg/proctest"
)

func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type localRun struct {
	l    *Local
	out  *proctest.Buffer
	dir  string
	reg  *prometheus.Registry
	stop func() error
}

// startLocal runs a Local over fake workers (this test binary) in mode.
func startLocal(t *testing.T, mode string, cfg LocalConfig) *localRun {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	r := &localRun{out: &proctest.Buffer{}, dir: t.TempDir(), reg: prometheus.NewRegistry()}
	cfg.Command = exe
	cfg.Env = []string{"WARREN_FAKE_WORKER=1", "FAKE_MODE=" + mode, "FAKE_DRAIN_MS=300", "FAKE_DIR=" + r.dir, "PORT=1", "PS=scheduler.1"}
	cfg.Output = r.out
	if r.l, err = NewLocal(cfg, r.reg, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.l.Run(ctx) }()
	var once sync.Once
	var runErr error
	r.stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(30 * time.Second):
				runErr = errors.New("Run did not return within 30s of its context's end")
			}
		})
		return runErr
	}
	t.Cleanup(func() {
		if err := r.stop(); err != nil {
			t.Error(err)
		}
		for _, pid := range r.pids() {
			if syscall.Kill(pid, 0) == nil {
				t.Errorf("worker process %d left running", pid)
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	return r
}

var upLine = regexp.MustCompile(`(?m)^(\S+)\s*\| up port=(\d*) ps=(\S+) pid=(\d+)$`)

func (r *localRun) pids() []int {
	var out []int
	for _, m := range upLine.FindAllStringSubmatch(r.out.String(), -1) {
		pid, _ := strconv.Atoi(m[4])
		out = append(out, pid)
	}
	return out
}

func (r *localRun) processes(state string) int {
	return int(value(r.l.m.processes.WithLabelValues(state)))
}

func TestLocalScalesUpAndDownGracefully(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := startLocal(t, "graceful", LocalConfig{BasePort: 40100, StopTimeout: 20 * time.Second})
	if err := r.l.Scale(ctx, 3); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "three workers up", func() bool { return len(r.pids()) == 3 })
	// Each has its own PORT and name, its output prefixed with the name.
	var got []string
	for _, m := range upLine.FindAllStringSubmatch(r.out.String(), -1) {
		if m[1] != m[3] {
			t.Errorf("line of %s prefixed %s", m[3], m[1])
		}
		got = append(got, m[3]+":"+m[2])
	}
	slices.Sort(got)
	if want := []string{"worker.1:40100", "worker.2:40101", "worker.3:40102"}; !slices.Equal(got, want) {
		t.Fatalf("workers %v, want %v", got, want)
	}
	if !strings.Contains(r.out.String(), "worker.1  | a line on stderr") {
		t.Errorf("stderr not prefixed:\n%s", r.out.String())
	}
	if n, _ := r.l.Workers(ctx); n != 3 {
		t.Fatalf("workers %d", n)
	}
	// Down to one: the two highest get SIGTERM and finish their jobs.
	if err := r.l.Scale(ctx, 1); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "worker.2 and worker.3 drained and gone", func() bool {
		return r.processes("running") == 1 && r.processes("stopping") == 0
	})
	for _, name := range []string{"worker.2", "worker.3"} {
		if b, err := os.ReadFile(filepath.Join(r.dir, name+".done")); err != nil || string(b) != "drained" {
			t.Errorf("%s did not drain: %q %v", name, b, err)
		}
	}
	if _, err := os.Stat(filepath.Join(r.dir, "worker.1.done")); err == nil {
		t.Error("worker.1 was stopped")
	}
	// Shutdown stops the last one the same way, and Run waits for it.
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(r.dir, "worker.1.done")); err != nil {
		t.Errorf("worker.1 not drained at shutdown: %v", err)
	}
}

// Run ends with the scheduler's leadership and starts again with its next
// term: the fleet stops gracefully, and the next Run starts the number last
// ordered; never two Runs at once.
func TestLocalRunsAgainAtTheNumberOrdered(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := startLocal(t, "graceful", LocalConfig{StopTimeout: 20 * time.Second})
	if err := r.l.Scale(ctx, 2); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "two workers up", func() bool { return len(r.pids()) == 2 })
	if err := r.l.Run(ctx); !errors.Is(err, ErrRunning) {
		t.Fatalf("a second Run at once: %v, want ErrRunning", err)
	}
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"worker.1", "worker.2"} {
		if b, err := os.ReadFile(filepath.Join(r.dir, name+".done")); err != nil || string(b) != "drained" {
			t.Errorf("%s did not drain when Run ended: %q %v", name, b, err)
		}
	}
	if r.processes("running")+r.processes("stopping") != 0 {
		t.Fatal("processes left after Run")
	}
	if n, _ := r.l.Workers(ctx); n != 2 {
		t.Errorf("workers ordered after Run: %d, want 2 (kept for the next Run)", n)
	}
	// An order between two Runs is for the next one.
	if err := r.l.Scale(ctx, 3); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.l.Run(rctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("second Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("the second Run did not return within 30s of its context's end")
		}
	})
	eventually(t, 20*time.Second, "three workers up again", func() bool {
		return len(r.pids()) == 5 && r.processes("running") == 3
	})
}

func TestLocalRestartsACrashedWorker(t *testing.T) {
	t.Parallel()
	r := startLocal(t, "crash", LocalConfig{RestartDelay: 10 * time.Millisecond})
	if err := r.l.Scale(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "restarted three times", func() bool { return value(r.l.m.restarts) >= 3 })
	// Always in slot 1: a restart replaces, never adds.
	for _, m := range upLine.FindAllStringSubmatch(r.out.String(), -1) {
		if m[3] != "worker.1" {
			t.Fatalf("a restart became %s", m[3])
		}
	}
}

func TestLocalKillsAWorkerThatWillNotStop(t *testing.T) {
	t.Parallel()
	r := startLocal(t, "stubborn", LocalConfig{StopTimeout: 300 * time.Millisecond})
	ctx := context.Background()
	if err := r.l.Scale(ctx, 1); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "up", func() bool { return len(r.pids()) == 1 })
	start := time.Now()
	if err := r.l.Scale(ctx, 0); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "killed", func() bool { return r.processes("running")+r.processes("stopping") == 0 })
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("killed after %v, before the stop timeout", d)
	}
	if syscall.Kill(r.pids()[0], 0) == nil {
		t.Error("still running")
	}
}

func TestCommandArgs(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		cmd  string
		want []string
	}{
		{"bin/workers", []string{"bin/workers"}},
		{"  bin/workers  --flag x ", []string{"bin/workers", "--flag", "x"}},
		{"bin/workers --port $PORT", []string{"/bin/sh", "-c", "exec bin/workers --port $PORT"}},
		{"FOO=1 bin/workers", []string{"/bin/sh", "-c", "exec FOO=1 bin/workers"}},
		{"cd app && bin/workers", []string{"/bin/sh", "-c", "cd app && bin/workers"}},
	} {
		if got := commandArgs(tc.cmd); !slices.Equal(got, tc.want) {
			t.Errorf("%q: %q, want %q", tc.cmd, got, tc.want)
		}
	}
}

func TestProcfileCommand(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "Procfile")
	if err := os.WriteFile(path, []byte("# the stack\nweb: bin/api\nworker:   bin/workers --x  \nscheduler: bin/scheduler\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := ProcfileCommand(path, "worker"); err != nil || got != "bin/workers --x" {
		t.Errorf("worker: %q %v", got, err)
	}
	if _, err := ProcfileCommand(path, "clock"); err == nil || !strings.Contains(err.Error(), `no "clock" line`) {
		t.Errorf("clock: %v", err)
	}
	if _, err := ProcfileCommand(path+".missing", "worker"); err == nil {
		t.Error("missing Procfile")
	}
}

// value reads a gauge's or a counter's value.
func value(c prometheus.Metric) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	if m.Gauge != nil {
		return m.GetGauge().GetValue()
	}
	return m.GetCounter().GetValue()
}
