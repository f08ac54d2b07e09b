package bench_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/warrenhq/warren/bench"
	"github.com/warrenhq/warren/pkg/proctest"
	"github.com/warrenhq/warren/pkg/servicetest"
	"github.com/warrenhq/warren/pkg/stacktest"
	"github.com/warrenhq/warren/pkg/store/storetest"
)

func TestMain(m *testing.M) { proctest.Main(m) }

const token = "bench-token-0123456789abcdef"

// TestSmoke runs every phase with a tiny load against an api and a workers
// process it starts, and checks only that a table and JSON come out, with
// where each phase's time went: speed is never asserted.
func TestSmoke(t *testing.T) {
	t.Parallel()
	dbs := storetest.Blank(t, 1)
	rmq := servicetest.URL(t, servicetest.RabbitMQVar)
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"DATABASE_URLS=" + strings.Join(dbs, ","),
		"RABBITMQ_URL=" + rmq,
		"REDIS_URL=" + servicetest.URL(t, servicetest.RedisVar),
		"WARREN_NAMESPACE=" + servicetest.Name("bench"),
		"WARREN_API_TOKENS=default:" + token,
	}
	migrate := exec.Command(proctest.Bin(t, "scheduler"), "migrate")
	migrate.Env = env
	if out, err := migrate.CombinedOutput(); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	port := proctest.FreePort(t)
	apiPID := start(t, "api", append(slices.Clone(env), fmt.Sprintf("PORT=%d", port)))
	workersPID := start(t, "workers", append(slices.Clone(env), fmt.Sprintf("PORT=%d", proctest.FreePort(t))))
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	stacktest.Eventually(t, 30*time.Second, "api ready", func() bool {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	res, err := bench.Run(ctx, bench.Config{
		URL: base, Token: token, RabbitMQURL: rmq, DatabaseURLs: dbs,
		N: 50, Clients: 4, BatchSize: 20, Rate: 20, Duration: 2 * time.Second, Timeout: 30 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	var table bytes.Buffer
	if err := bench.WriteTable(&table, res); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", table.String())
	for _, want := range []string{"ceiling: RabbitMQ alone", "ceiling: Postgres alone", "batch path", "single path", "submit→succeeded",
		"floor at 20 jobs/s", "each step, p50", "peak RSS api", "peak RSS workers", "fsync="} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q", want)
		}
	}
	path := filepath.Join(t.TempDir(), "results.json")
	if err := bench.WriteJSON(path, res); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var back bench.Result
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.Ceiling == nil || back.Postgres == nil || back.Batch == nil || back.Single == nil ||
		back.Latency == nil || back.Latency.Jobs != 40 || back.Floor == nil || back.Floor.Jobs != 40 {
		t.Fatalf("JSON lacks phases: %s", b)
	}
	// A floor job that failed fails the run (Run's error above).
	if f := back.Floor; f.SucceededP50 <= 0 || f.SubmitP50 <= 0 ||
		f.InsertP50 <= 0 || f.PublishP50 <= 0 || f.ClaimP50 <= 0 || f.CompleteP50 <= 0 {
		t.Errorf("floor figures: %+v", f)
	}
	if back.Postgres.Count != 50 || back.Postgres.PerSec <= 0 {
		t.Errorf("Postgres ceiling: %+v", back.Postgres)
	}
	// The processes this test started ran through the whole watch: each
	// has resident set figures for both halves of it.
	for _, p := range back.Memory {
		if p.PID != apiPID && p.PID != workersPID {
			continue
		}
		if p.PeakMiB <= 0 || p.FirstHalfMiB <= 0 || p.SecondHalfMiB <= 0 || p.LastMiB <= 0 || p.LastMiB > p.PeakMiB {
			t.Errorf("memory figures of %s pid %d are incomplete: %+v", p.Name, p.PID, p)
		}
	}
	checkUsage(t, table.String(), b, map[string]*bench.Usage{
		"ceiling": back.Ceiling.Usage, "postgres": back.Postgres.Usage, "batch": back.Batch.Usage,
		"single": back.Single.Usage, "latency": back.Latency.Usage, "floor": back.Floor.Usage,
	})
}

// checkUsage checks that each phase says where its time went: CPU and
// run-queue wait by program, including the api and workers this test runs,
// adding up to the totals, and Postgres's WAL, which the phases together
// must have written.
func checkUsage(t *testing.T, table string, js []byte, usage map[string]*bench.Usage) {
	t.Helper()
	for _, field := range []string{`"run_queue_seconds"`, `"run_queue_ms_per_job"`} {
		if !bytes.Contains(js, []byte(field)) {
			t.Errorf("JSON lacks %s", field)
		}
	}
	// Run-queue wait is measured wherever the kernel keeps it, which is
	// when this process's main thread, having run, shows a time on a CPU.
	ss, err := os.ReadFile("/proc/self/schedstat")
	schedstat := err == nil && !bytes.HasPrefix(ss, []byte("0 "))
	var walRecords, commits, wait float64
	for phase, u := range usage {
		for _, line := range []string{"cpu ms/job (" + phase + ")", "cpu wait ms/job (" + phase + ")", "postgres/job (" + phase + ")"} {
			if !strings.Contains(table, "  "+line) {
				t.Errorf("table lacks %q", line)
			}
		}
		if u == nil {
			t.Errorf("%s: JSON lacks usage", phase)
			continue
		}
		if u.Jobs <= 0 || u.Seconds <= 0 || u.CPUSeconds <= 0 || u.CPUMsPerJob <= 0 || u.MachineBusy <= 0 {
			t.Errorf("%s: usage figures are not positive: %+v", phase, u)
		}
		progs := map[string]bench.ProgramCPU{}
		sum, waitSum := 0.0, 0.0
		for _, p := range u.Programs {
			progs[p.Program] = p
			sum += p.CPUSeconds
			waitSum += p.RunQueueSeconds
			if p.CPUSeconds < 0 || p.Share < 0 || p.MsPerJob < 0 || p.RunQueueSeconds < 0 || p.RunQueueMsPerJob < 0 {
				t.Errorf("%s: %+v", phase, p)
			}
		}
		if d := sum - u.CPUSeconds; d > 1e-9 || d < -1e-9 {
			t.Errorf("%s: programs' CPU adds up to %.3f s, total %.3f s", phase, sum, u.CPUSeconds)
		}
		if d := waitSum - u.RunQueueSeconds; d > 1e-9 || d < -1e-9 {
			t.Errorf("%s: programs' run-queue wait adds up to %.3f s, total %.3f s", phase, waitSum, u.RunQueueSeconds)
		}
		if u.RunQueueSeconds < 0 || u.RunQueueMsPerJob < 0 {
			t.Errorf("%s: negative run-queue wait: %+v", phase, u)
		}
		switch notMeasured := "  cpu wait ms/job (" + phase + ")\tnot measured: "; {
		case schedstat && u.RunQueueNotMeasured != "":
			t.Errorf("%s: run-queue wait not measured on a kernel with schedstat: %s", phase, u.RunQueueNotMeasured)
		case !schedstat && (u.RunQueueNotMeasured == "" || !strings.Contains(table, notMeasured)):
			t.Errorf("%s: run-queue wait reported without schedstat (%q): %+v", phase, ss, u)
		}
		wait += u.RunQueueSeconds
		for _, name := range []string{"api", "workers", "postgres", "warren-bench"} {
			if progs[name].Processes == 0 {
				t.Errorf("%s: no %s process in %+v", phase, name, u.Programs)
			}
		}
		pg := u.Postgres
		if pg.NotMeasured != "" || pg.Servers != 1 {
			t.Errorf("%s: postgres WAL not measured on the one server: %+v", phase, pg)
		}
		if pg.WALRecordsPerJob < 0 || pg.WALBytesPerJob < 0 || pg.WALFlushesPerJob < 0 || pg.CommitsPerJob < 0 {
			t.Errorf("%s: negative postgres figures: %+v", phase, pg)
		}
		walRecords += pg.WALRecordsPerJob
		commits += pg.CommitsPerJob
	}
	// Postgres publishes its counters up to a second late, so one short
	// phase may show none; all of them together cannot.
	if walRecords <= 0 || commits <= 0 {
		t.Errorf("no WAL records (%.2f/job) or commits (%.2f/job) in any phase", walRecords, commits)
	}
	// Every wakeup of a thread waits on a run queue, if only for
	// microseconds: some wait must show across the phases.
	if schedstat && wait <= 0 {
		t.Errorf("no run-queue wait in any phase")
	}
}

// start runs bin/name until the test ends, and returns its pid.
func start(t *testing.T, name string, env []string) int {
	t.Helper()
	out := &proctest.Buffer{}
	cmd := exec.Command(proctest.Bin(t, name))
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("%s output:\n%s", name, out.String())
		}
	})
	return cmd.Process.Pid
}

func TestParsePhases(t *testing.T) {
	t.Parallel()
	if got, err := bench.ParsePhases(" batch, single "); err != nil || !slices.Equal(got, []string{"batch", "single"}) {
		t.Errorf("batch, single: %v %v", got, err)
	}
	if got, err := bench.ParsePhases(""); err != nil || got != nil {
		t.Errorf("empty: %v %v", got, err)
	}
	if _, err := bench.ParsePhases("batch,warp"); err == nil || !strings.Contains(err.Error(), `"warp"`) {
		t.Errorf("unknown phase: %v", err)
	}
}
