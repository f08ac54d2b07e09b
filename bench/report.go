package bench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
)

// WriteTable prints r as one table, settings first.
func WriteTable(w io.Writer, r *Result) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	s := r.Settings
	fmt.Fprintf(tw, "settings\tcpus %d, shards %d, postgres fsync=%s synchronous_commit=%s\n", s.CPUs, s.Shards, s.Fsync, s.SynchronousCommit)
	fmt.Fprintf(tw, "\tqueue: %s\n", s.QueueType)
	fmt.Fprintf(tw, "\tworker concurrency %d, prefetch %d; N %d, clients %d, batch %d\n", s.WorkerConcurrency, s.Prefetch, s.N, s.Clients, s.BatchSize)
	counts := map[string]int{}
	for _, p := range r.Memory {
		counts[p.Name]++
	}
	fmt.Fprintf(tw, "\tprocesses seen: api %d, workers %d\n", counts["api"], counts["workers"])
	fmt.Fprintln(tw, "phase\tfigure")
	row := func(name string, t *Throughput, unit string) {
		if t == nil {
			fmt.Fprintf(tw, "%s\tnot measured\n", name)
			return
		}
		extra := ""
		if t.OfCeiling > 0 {
			extra = fmt.Sprintf(" (%.0f %% of ceiling)", 100*t.OfCeiling)
		}
		fmt.Fprintf(tw, "%s\t%.0f %s (%d in %.2f s)%s\n", name, t.PerSec, unit, t.Count, t.Seconds, extra)
	}
	row("ceiling: RabbitMQ alone", r.Ceiling, "msg/s")
	row("ceiling: Postgres alone", r.Postgres, "jobs/s")
	row("batch path", r.Batch, "jobs/s")
	row("single path", r.Single, "jobs/s")
	if l := r.Latency; l != nil {
		fmt.Fprintf(tw, "latency at %d jobs/s\t%d jobs in %.1f s (achieved %.0f/s), %d submit failures, %d not succeeded\n",
			l.Rate, l.Jobs, l.Seconds, l.AchievedPerSec, l.SubmitFailures, l.NotSucceeded)
		fmt.Fprintf(tw, "  submit\tp50 %.2f ms  p99 %.2f ms\n", l.SubmitP50, l.SubmitP99)
		fmt.Fprintf(tw, "  submit→started\tp50 %.2f ms  p99 %.2f ms\n", l.StartedP50, l.StartedP99)
		fmt.Fprintf(tw, "  submit→succeeded\tp50 %.2f ms  p99 %.2f ms\n", l.SucceededP50, l.SucceededP99)
	} else {
		fmt.Fprintln(tw, "latency\tnot measured")
	}
	if f := r.Floor; f != nil {
		fmt.Fprintf(tw, "floor at %d jobs/s\t%d jobs in %.1f s (achieved %.0f/s): the durable steps alone, one job at a time, no Warren process\n",
			f.Rate, f.Jobs, f.Seconds, f.AchievedPerSec)
		fmt.Fprintf(tw, "  submit\tp50 %.2f ms  p99 %.2f ms\n", f.SubmitP50, f.SubmitP99)
		fmt.Fprintf(tw, "  submit→succeeded\tp50 %.2f ms  p99 %.2f ms\n", f.SucceededP50, f.SucceededP99)
		fmt.Fprintf(tw, "  each step, p50\tINSERT+commit %.2f ms, publish+confirm %.2f ms, claim UPDATE+commit %.2f ms, completion UPDATE+commit %.2f ms\n",
			f.InsertP50, f.PublishP50, f.ClaimP50, f.CompleteP50)
	} else {
		fmt.Fprintln(tw, "floor\tnot measured")
	}
	if r.Ceiling != nil {
		usageRows(tw, "ceiling", r.Ceiling.Usage)
	}
	if r.Postgres != nil {
		usageRows(tw, "postgres", r.Postgres.Usage)
	}
	if r.Batch != nil {
		usageRows(tw, "batch", r.Batch.Usage)
	}
	if r.Single != nil {
		usageRows(tw, "single", r.Single.Usage)
	}
	if r.Latency != nil {
		usageRows(tw, "latency", r.Latency.Usage)
	}
	if r.Floor != nil {
		usageRows(tw, "floor", r.Floor.Usage)
	}
	for _, p := range r.Memory {
		fmt.Fprintf(tw, "peak RSS %s pid %d\t%.1f MiB (RSS max %.1f MiB in the first half of the run, %.1f MiB in the second, %.1f MiB last)\n",
			p.Name, p.PID, p.PeakMiB, p.FirstHalfMiB, p.SecondHalfMiB, p.LastMiB)
	}
	return tw.Flush()
}

// usageRows prints where a phase's time went: CPU per job by program, the
// run-queue wait per job by program, then Postgres's WAL per job.
func usageRows(w io.Writer, phase string, u *Usage) {
	if u == nil {
		return
	}
	progs := make([]string, 0, len(u.Programs))
	waits := make([]string, 0, len(u.Programs))
	for _, p := range u.Programs {
		progs = append(progs, fmt.Sprintf("%s %.2f", p.Program, p.MsPerJob))
		waits = append(waits, fmt.Sprintf("%s %.2f", p.Program, p.RunQueueMsPerJob))
	}
	fmt.Fprintf(w, "  cpu ms/job (%s)\ttotal %.2f: %s (machine %.0f %% busy)\n",
		phase, u.CPUMsPerJob, strings.Join(progs, ", "), 100*u.MachineBusy)
	if u.RunQueueNotMeasured != "" {
		fmt.Fprintf(w, "  cpu wait ms/job (%s)\tnot measured: %s\n", phase, u.RunQueueNotMeasured)
	} else {
		fmt.Fprintf(w, "  cpu wait ms/job (%s)\ttotal %.2f: %s\n", phase, u.RunQueueMsPerJob, strings.Join(waits, ", "))
	}
	pg := u.Postgres
	if pg.NotMeasured != "" {
		fmt.Fprintf(w, "  postgres/job (%s)\tnot measured: %s\n", phase, pg.NotMeasured)
		return
	}
	fmt.Fprintf(w, "  postgres/job (%s)\t%.1f WAL records, %.2f kB WAL, %.2f flushes, %.2f commits\n",
		phase, pg.WALRecordsPerJob, pg.WALBytesPerJob/1000, pg.WALFlushesPerJob, pg.CommitsPerJob)
}

// WriteJSON writes r, indented, to path.
func WriteJSON(path string, r *Result) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// EnvFile reads KEY=VALUE lines (as `make run` writes .env: # comments,
// optional single or double quotes); a missing file is an empty map.
func EnvFile(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return map[string]string{}, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		k, v, ok := strings.Cut(line, "=")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		if len(v) >= 2 && (v[0] == '\'' || v[0] == '"') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		env[strings.TrimSpace(k)] = v
	}
	return env, sc.Err()
}
