package bench

import (
	"bytes"
	"os"
	"syscall"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	t.Parallel()
	// A command name may hold spaces and parentheses; the fields after it
	// are found from the last ')'.
	line := "4242 (my (odd) prog) S 1 4242 4242 0 -1 4194560 900 0 0 0 150 25 0 0 20 0 9 0 777 1000000 500 18446744073709551615\n"
	st, ok := parseStat([]byte(line))
	if want := (stat{comm: "my (odd) prog", ticks: 175, start: 777, threads: 9}); !ok || st != want {
		t.Errorf("parseStat = %+v %v, want %+v true", st, ok, want)
	}
	if _, ok := parseStat([]byte("4242 (short) S 1 2 3")); ok {
		t.Error("a truncated line parsed")
	}
}

func TestParseSchedstat(t *testing.T) {
	t.Parallel()
	run, wait, ok := parseSchedstat([]byte("1398317 528441 2\n"))
	if !ok || run != 1398317 || wait != 528441 {
		t.Errorf("parseSchedstat = %d %d %v, want 1398317 528441 true", run, wait, ok)
	}
	// Past 2^63 ns is centuries, but the fields are unsigned.
	if _, wait, ok := parseSchedstat([]byte("1 18446744073709551615 3\n")); !ok || wait != 1<<64-1 {
		t.Errorf("the largest wait parsed as %d %v", wait, ok)
	}
	for _, bad := range []string{"", "\n", "1398317 528441\n", "1398317 -5 2\n", "a b c\n"} {
		if _, _, ok := parseSchedstat([]byte(bad)); ok {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestWaitDelta(t *testing.T) {
	t.Parallel()
	before := []threadWait{{10, 100}, {11, 50}, {12, 70}, {14, 900}}
	// 10 waited 5 more, 11 exited (lost), 12 did not wait, 13 started with
	// 40, 14's tid went to a new thread (wait went back) with 30.
	after := []threadWait{{10, 105}, {12, 70}, {13, 40}, {14, 30}}
	if got := waitDelta(before, after); got != 5+0+40+30 {
		t.Errorf("waitDelta = %d, want 75", got)
	}
	if got := waitDelta(nil, after); got != 105+70+40+30 {
		t.Errorf("a new process's waitDelta = %d, want all of its wait, 245", got)
	}
	if got := waitDelta(before, nil); got != 0 {
		t.Errorf("waitDelta to no threads = %d", got)
	}
}

// TestReadWaits reads this process's threads, which the Go runtime makes
// several of, through the task listing, and its main thread alone.
func TestReadWaits(t *testing.T) {
	t.Parallel()
	w := newCPUWatch()
	if w.schedNo != "" {
		if _, err := os.Stat("/proc/self/schedstat"); err == nil {
			t.Fatalf("schedstat is there but reported missing: %s", w.schedNo)
		}
		return // nothing to read on this kernel; the smoke test checks the report
	}
	pid := os.Getpid()
	all, ok := w.readWaits(pid, 2)
	if !ok || len(all) < 2 || all[0].tid != pid {
		t.Fatalf("readWaits of this process = %v %v, want its threads, main first", all, ok)
	}
	for i := 1; i < len(all); i++ {
		if all[i].tid <= all[i-1].tid {
			t.Fatalf("threads not sorted by tid: %v", all)
		}
	}
	main, ok := w.readWaits(pid, 1)
	if !ok || len(main) != 1 || main[0].tid != pid {
		t.Errorf("readWaits of the main thread = %v %v", main, ok)
	}
	if _, ok := w.readWaits(1<<30, 3); ok {
		t.Error("a process that does not exist has threads")
	}
}

func TestUsageRowsNotMeasured(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	usageRows(&b, "batch", &Usage{
		RunQueueNotMeasured: "no schedstat",
		Programs:            []ProgramCPU{{Program: "api", Processes: 1}},
		Postgres:            PostgresWAL{NotMeasured: "no DATABASE_URLS"},
	})
	if want := "  cpu wait ms/job (batch)\tnot measured: no schedstat\n"; !bytes.Contains(b.Bytes(), []byte(want)) {
		t.Errorf("usage rows lack %q:\n%s", want, b.String())
	}
}

// BenchmarkSample times one sample of every process on the machine: its
// stat file only, and with the run-queue wait of the sampled programs'
// threads or of every thread. See sampleThreadsOf for the figures.
func BenchmarkSample(b *testing.B) {
	for _, c := range []struct {
		name    string
		sched   bool
		threads bool
	}{{"stat", false, false}, {"stat+named-threads", true, false}, {"stat+all-threads", true, true}} {
		b.Run(c.name, func(b *testing.B) {
			w := newCPUWatch()
			if !c.sched {
				w.schedNo = "off"
			}
			cpu0 := processCPU(b)
			for b.Loop() {
				w.mu.Lock()
				w.sampleLocked(c.threads)
				w.mu.Unlock()
			}
			b.ReportMetric(float64(processCPU(b)-cpu0)/float64(b.N), "cpu-ns/op")
			procs, threads := 0, 0
			for _, p := range w.procs {
				if p.gen == w.gen {
					procs++
					threads += len(p.threads)
				}
			}
			b.ReportMetric(float64(procs), "procs")
			b.ReportMetric(float64(threads), "threads")
		})
	}
}

func TestProgram(t *testing.T) {
	t.Parallel()
	for comm, want := range map[string]string{
		"postgres": "postgres", "postgres: walwriter": "postgres", "beam.smp": "rabbitmq", "erl_child_setup": "rabbitmq",
		"epmd": "rabbitmq", "inet_gethost": "rabbitmq", "redis-server": "redis", "api": "api", "workers": "workers",
		"scheduler": "scheduler", "haproxy": "haproxy", "bash": "other", "apis": "other",
	} {
		if got := program(comm); got != want {
			t.Errorf("program(%q) = %q, want %q", comm, got, want)
		}
	}
}

func TestServerKey(t *testing.T) {
	t.Parallel()
	a := serverKey("postgres://u:p@127.0.0.1:5433/warren_0?sslmode=disable")
	b := serverKey("postgres://u:p@127.0.0.1:5433/warren_1?sslmode=disable")
	c := serverKey("postgres://u:p@127.0.0.1/warren_0")
	if a != "127.0.0.1:5433" || a != b || c != "127.0.0.1:5432" {
		t.Errorf("server keys %q %q %q", a, b, c)
	}
}

// processCPU is the CPU time this process has used: a sample's cost to a
// busy machine, which its wall time under load overstates.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
