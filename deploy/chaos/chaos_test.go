//go:build chaos

package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/warrenhq/warren/pkg/cache"
	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/proctest"
)

func TestMain(m *testing.M) { proctest.Main(m) }

// Bounds of every scenario.
const (
	warmup    = 200               // accepted submits before the fault
	tail      = 300               // accepted submits after it ends
	tailLimit = 90 * time.Second  // for those
	drainWait = 150 * time.Second // for every job to end
)

// scenario is one fault. inject breaks the stack while the load runs,
// heals it, and says when the fault ended.
type scenario struct {
	name   string
	inject func(t *testing.T, s *stack, l *load) fault
}

// fault is what a scenario's injection reports.
type fault struct {
	end time.Time
	// shard: recovery counts successes on this shard only; -1 on any.
	shard int
	// verify runs the scenario's own checks once every job has ended.
	verify func(t *testing.T, rows []Row, logs map[*proc]map[string]*Attempts)
}

var scenarios = []scenario{
	{"worker-kill", workerKill},
	{"api-kill", apiKill},
	{"leader-kill", leaderKill},
	{"rabbitmq-restart", rabbitRestart},
	{"redis-stop", redisStop},
	{"shard-stop", shardStop},
	{"rabbitmq-stall", rabbitStall},
	{"postgres-stall", postgresStall},
	{"postgres-read-only", readOnly},
}

// TestChaos runs every scenario, one at a time, against one stack, then
// prints the table and writes it to .data/chaossvc/results.md.
func TestChaos(t *testing.T) {
	begin := time.Now()
	s := newStack(t)
	var results []Result
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			results = append(results, runScenario(t, s, sc))
		})
	}
	if len(results) == 0 {
		return
	}
	t.Logf("fault suite, %d scenarios in %s:\n%s", len(results), time.Since(begin).Round(time.Second), Table(results))
	md := fmt.Sprintf("<!-- written by make chaos on %s; %d scenarios in %s -->\n%s",
		time.Now().UTC().Format(time.RFC3339), len(results), time.Since(begin).Round(time.Second), Markdown(results))
	if err := os.WriteFile(filepath.Join(s.data, "results.md"), []byte(md), 0o644); err != nil {
		t.Error(err)
	}
}

func runScenario(t *testing.T, s *stack, sc scenario) Result {
	l := startLoad(sc.name)
	defer l.halt()
	begin := time.Now()
	waitFor(t, 60*time.Second, fmt.Sprintf("%d accepted submits before the fault", warmup),
		func() bool { return l.acceptedAfter(begin) >= warmup })

	f := sc.inject(t, s, l)

	if !poll(tailLimit, func() bool { return l.acceptedAfter(f.end) >= tail }) {
		t.Errorf("fewer than %d submits accepted within %s after the fault ended (%d)", tail, tailLimit, l.acceptedAfter(f.end))
	}
	l.halt()
	stopped := time.Now()

	ctx, cancel := context.WithTimeout(context.Background(), drainWait+30*time.Second)
	defer cancel()
	var rows []Row
	drained := poll(drainWait, func() bool {
		var err error
		rows, err = s.rows(ctx, sc.name)
		if err != nil {
			return false
		}
		for _, r := range rows {
			if !r.State.Terminal() {
				return false
			}
		}
		return true
	})
	if !drained {
		t.Errorf("not every job ended within %s of the load's end", drainWait)
		var err error
		if rows, err = s.rows(ctx, sc.name); err != nil {
			t.Fatalf("read the jobs: %v", err)
		}
	} else {
		t.Logf("every job ended %s after the load stopped", time.Since(stopped).Round(time.Millisecond))
	}

	logs := s.workerLogs(t)
	var parsed []map[string]*Attempts
	for _, l := range logs {
		parsed = append(parsed, l)
	}
	failed := l.failed()
	res, bad := Check(Input{
		Scenario: sc.name, Accepted: l.accepted(), Rows: rows, Execs: Sum(parsed...),
		FailedSubmits: len(failed), Recovery: recovery(l, rows, f),
	})
	for i, b := range bad {
		if i == 30 {
			t.Errorf("… and %d more violations", len(bad)-i)
			break
		}
		t.Error(b)
	}
	if f.verify != nil {
		f.verify(t, rows, logs)
	}
	for i, s := range failed {
		if i == 5 {
			t.Logf("… and %d more failed submits", len(failed)-i)
			break
		}
		t.Logf("failed submit: %s", s)
	}
	t.Logf("%s: %d accepted, %d failed submits, %d succeeded, %d dead, %d lost, %d duplicated, %d extra executions, recovery %v",
		sc.name, res.Accepted, res.FailedSubmits, res.Succeeded, res.Dead, res.Lost, res.Duplicated, res.Extra, res.Recovery)
	return res
}

// recovery is the time from the fault's end until a submit was accepted
// and a job succeeded (on the fault's shard, if it names one), both after
// it; -1 if either was not seen.
func recovery(l *load, rows []Row, f fault) time.Duration {
	ok, seen := l.firstOKAfter(f.end)
	if !seen {
		return -1
	}
	var succ time.Time
	for _, r := range rows {
		if r.State == job.Succeeded && r.FinishedAt.After(f.end) && (f.shard < 0 || r.Shard == f.shard) &&
			(succ.IsZero() || r.FinishedAt.Before(succ)) {
			succ = r.FinishedAt
		}
	}
	if succ.IsZero() {
		return -1
	}
	if succ.Before(ok) {
		succ = ok
	}
	return succ.Sub(f.end)
}

// workerKill SIGKILLs a worker that is running jobs, three times, the two
// workers in turn, starting a replacement each time. Every attempt a killed
// worker started and never ended must run again elsewhere (or have been
// recorded just before the kill).
func workerKill(t *testing.T, s *stack, l *load) fault {
	var killed []*proc
	var last time.Time
	for i := range 3 {
		n := i%2 + 1
		slot := fmt.Sprintf("worker.%d", n)
		p := s.proc(slot)
		var id string
		waitFor(t, 30*time.Second, slot+" to be running", func() bool { id = p.workerID(); return id != "" })
		waitFor(t, 30*time.Second, slot+" to hold a running job", func() bool { return s.runningOn(id) > 0 })
		kp, at := s.kill(t, slot)
		killed, last = append(killed, kp), at
		np := s.start(t, "worker", n)
		waitFor(t, 30*time.Second, "the replacement "+slot+" to run", func() bool { return np.workerID() != "" })
		waitFor(t, 60*time.Second, "100 accepted submits after the kill", func() bool { return l.acceptedAfter(at) >= 100 })
	}
	return fault{end: last, shard: -1, verify: func(t *testing.T, rows []Row, logs map[*proc]map[string]*Attempts) {
		byID := map[string]Row{}
		for _, r := range rows {
			byID[r.ID] = r
		}
		cut, rerun, before, reaped := 0, 0, 0, 0
		for _, kp := range killed {
			for id, a := range logs[kp] {
				for _, n := range a.Interrupted() {
					cut++
					r, ok := byID[id]
					switch {
					case !ok:
						t.Errorf("job %s, cut short on attempt %d by the kill of %s, is not among the scenario's jobs", id, n, kp.slot)
					case r.State == job.Dead && r.Attempt == n && strings.Contains(r.Error, "worker lost"):
						reaped++ // its last attempt: the reaper marked it dead
					case r.State.Terminal() && r.Attempt == n:
						before++ // its outcome was recorded just before the kill
					case r.Attempt > n && startedElsewhere(logs, kp, id, n):
						rerun++
					default:
						t.Errorf("job %s, cut short on attempt %d by the kill of %s, did not run again elsewhere: %s on attempt %d", id, n, kp.slot, r.State, r.Attempt)
					}
				}
			}
		}
		t.Logf("3 worker kills cut %d attempts short: %d ran again on another worker, %d were their job's last attempt (reaped dead), %d had their outcome recorded just before the kill",
			cut, rerun, reaped, before)
		if cut == 0 {
			t.Error("no kill caught a worker mid-job")
		}
	}}
}

// startedElsewhere reports whether a worker other than kp logged starting
// an attempt of the job after attempt n.
func startedElsewhere(logs map[*proc]map[string]*Attempts, kp *proc, id string, n int) bool {
	for p, l := range logs {
		if p == kp || l[id] == nil {
			continue
		}
		for _, s := range l[id].Started {
			if s > n {
				return true
			}
		}
	}
	return false
}

// apiKill SIGKILLs api.1 behind HAProxy. Submits in flight to it may fail;
// once HAProxy's checks have seen it down (two failed checks 500ms apart),
// none may. The api is started again at the end.
func apiKill(t *testing.T, s *stack, l *load) fault {
	_, at := s.kill(t, "api.1")
	waitFor(t, 60*time.Second, "200 submits accepted through the other api", func() bool { return l.acceptedAfter(at) >= 200 })
	routed := at.Add(3 * time.Second)
	late := 0
	for _, f := range l.failed() {
		if f.start.After(routed) {
			late++
			if late <= 5 {
				t.Errorf("submit failed more than 3s after the kill, when HAProxy should route around the dead api: %s", f)
			}
		}
	}
	s.start(t, "api", 1)
	s.waitReady(t, apiPortBase)
	return fault{end: at, shard: -1}
}

// leaderKill SIGKILLs the leading scheduler: the standby must lead within
// 20s, and delayed and retrying jobs due after the kill must still run.
func leaderKill(t *testing.T, s *stack, l *load) fault {
	lead := s.leader()
	if lead == "" {
		t.Fatal("no scheduler leads")
	}
	standby := "scheduler.1"
	if lead == standby {
		standby = "scheduler.2"
	}
	_, at := s.kill(t, lead)
	waitFor(t, 20*time.Second, standby+" to lead", func() bool { return s.leader() == standby })
	t.Logf("%s took over %s after the SIGKILL of %s", standby, time.Since(at).Round(time.Millisecond), lead)
	n := 1
	if lead == "scheduler.2" {
		n = 2
	}
	np := s.start(t, "scheduler", n)
	waitFor(t, 30*time.Second, "the restarted "+lead+" to stand by", func() bool {
		v, err := metric(np.port, "warren_scheduler_leader")
		return err == nil && v == 0
	})
	return fault{end: at, shard: -1, verify: func(t *testing.T, rows []Row, _ map[*proc]map[string]*Attempts) {
		delayed, retried := 0, 0
		for _, sub := range l.snapshot() {
			if sub.ok() && sub.delay > 0 && sub.start.Add(sub.delay).After(at) {
				delayed++
			}
		}
		for _, r := range rows {
			if r.Type == "fail" && r.Attempt > 1 && r.FinishedAt.After(at) {
				retried++
			}
		}
		t.Logf("after the kill the new leader dispatched %d delayed jobs that came due and %d fail jobs that retried", delayed, retried)
		if delayed == 0 || retried == 0 {
			t.Error("no delayed or no retrying job needed the new leader: the scenario proved nothing")
		}
	}}
}

// rabbitRestart stops RabbitMQ and starts it again: the apis, workers and
// schedulers must reconnect by themselves.
func rabbitRestart(t *testing.T, s *stack, _ *load) fault {
	begin := time.Now()
	s.services(t, "stop", "rabbitmq", 0)
	down := time.Now()
	s.services(t, "start", "rabbitmq", 0)
	t.Logf("RabbitMQ stopped in %s, down for %s until it accepted connections again",
		down.Sub(begin).Round(time.Millisecond), time.Since(down).Round(time.Millisecond))
	return fault{end: time.Now(), shard: -1}
}

// redisStop stops Redis for 15s. Submits and reads of finished jobs (from
// Postgres) must all work meanwhile; jobs that finish after it is back must
// be cached again.
func redisStop(t *testing.T, s *stack, l *load) fault {
	s.services(t, "stop", "redis", 0)
	down := time.Now()
	healed := false
	t.Cleanup(func() {
		if !healed {
			s.services(t, "start", "redis", 0)
		}
	})
	reads, readFails := 0, 0
	tick := time.NewTicker(250 * time.Millisecond)
	for time.Since(down) < 15*time.Second {
		<-tick.C
		if id := s.finishedJob(l); id != "" {
			reads++
			if err := getJob(id); err != nil {
				readFails++
				if readFails <= 5 {
					t.Errorf("read of finished job %s while Redis is down: %v", id, err)
				}
			}
		}
	}
	tick.Stop()
	up := time.Now()
	s.services(t, "start", "redis", 0)
	healed = true
	end := time.Now()
	t.Logf("Redis down %s; %d reads of finished jobs meanwhile, %d failed", up.Sub(down).Round(time.Millisecond), reads, readFails)
	if reads == 0 {
		t.Error("no finished job to read while Redis was down")
	}
	for _, f := range l.failed() {
		if f.start.After(down) && f.start.Before(end) {
			t.Errorf("submit failed while Redis was down: %s", f)
		}
	}
	return fault{end: end, shard: -1, verify: func(t *testing.T, rows []Row, _ map[*proc]map[string]*Attempts) {
		ca, err := cache.New(cache.Config{URL: s.svc["REDIS_URL"], Prefix: namespace + ":"})
		if err != nil {
			t.Fatal(err)
		}
		defer ca.Close()
		after, cached := 0, 0
		for _, r := range rows {
			if r.FinishedAt.After(end.Add(2 * time.Second)) {
				after++
				id, _ := job.ParseID(r.ID)
				if _, err := ca.GetJob(context.Background(), "default", id); err == nil {
					cached++
				}
			}
		}
		t.Logf("%d of the %d jobs that finished after Redis came back are cached", cached, after)
		if after == 0 || cached < after {
			t.Errorf("the cache did not refill: %d of %d jobs finished after Redis came back are cached", cached, after)
		}
	}}
}

// shardStop stops shard 1's Postgres server for 15s. Jobs on shard 0 must
// keep flowing and submits must go there; shard 1's jobs must finish once
// it is back.
func shardStop(t *testing.T, s *stack, l *load) fault {
	const shard = 1
	stopping := time.Now()
	s.services(t, "stop", "postgres", shard)
	down := time.Now()
	healed := false
	t.Cleanup(func() {
		if !healed {
			s.services(t, "start", "postgres", shard)
		}
	})
	waitUntil(down.Add(15 * time.Second))
	up := time.Now()
	s.services(t, "start", "postgres", shard)
	healed = true
	end := time.Now()
	accepted, elsewhere, failed, shutdown := 0, 0, 0, 0
	for _, sub := range l.snapshot() {
		if !sub.ok() && sub.end.After(stopping) && sub.start.Before(down) {
			// While it shuts down, its open connections are terminated
			// (57P01) under statements that cannot be repeated elsewhere.
			shutdown++
			continue
		}
		if !sub.start.After(down) || !sub.end.Before(up) {
			continue
		}
		switch {
		case sub.ok():
			accepted++
			if id, err := job.ParseID(sub.job.ID); err == nil && id.Shard() != shard {
				elsewhere++
			}
		default:
			failed++
			if failed <= 5 {
				t.Errorf("submit failed while shard %d was down: %s", shard, sub)
			}
		}
	}
	t.Logf("shard %d shut down in %s, %d submits failed meanwhile; down %s: %d submits accepted meanwhile (%d on other shards), %d failed",
		shard, down.Sub(stopping).Round(time.Millisecond), shutdown, up.Sub(down).Round(time.Millisecond), accepted, elsewhere, failed)
	if accepted == 0 || elsewhere != accepted {
		t.Errorf("submits while shard %d was down: %d accepted, %d of them on other shards; want all routed to healthy shards", shard, accepted, elsewhere)
	}
	return fault{end: end, shard: shard, verify: func(t *testing.T, rows []Row, _ map[*proc]map[string]*Attempts) {
		flowed := 0
		for _, r := range rows {
			if r.Shard != shard && r.State == job.Succeeded && r.FinishedAt.After(down) && r.FinishedAt.Before(up) {
				flowed++
			}
		}
		t.Logf("%d jobs succeeded on the other shard while shard %d was down", flowed, shard)
		if flowed == 0 {
			t.Errorf("no job succeeded on the other shard while shard %d was down", shard)
		}
	}}
}

// rabbitStall freezes RabbitMQ with SIGSTOP for 10s, a network stall as its
// clients see it: their timeouts must fire, and all must resume.
func rabbitStall(t *testing.T, s *stack, l *load) fault {
	pid, err := pidFile(filepath.Join(s.data, "rabbitmq", "rabbitmq.pid"))
	if err != nil {
		t.Fatalf("RabbitMQ's pid: %v", err)
	}
	// Submits still commit; the api gives up waiting for RabbitMQ's
	// confirm after its publish timeout (5s) and the relay publishes later.
	return stall(t, "RabbitMQ", []int{pid}, -1, l, 5*time.Second+2*time.Second)
}

// postgresStall freezes shard 0's Postgres server (the postmaster and every
// backend) with SIGSTOP for 10s.
func postgresStall(t *testing.T, s *stack, l *load) fault {
	pids := s.postgresPIDs(0)
	if len(pids) < 2 {
		t.Fatalf("shard 0's Postgres processes: %v", pids)
	}
	// Submits whose INSERT reached the frozen shard wait for it to thaw.
	return stall(t, fmt.Sprintf("shard 0's Postgres (%d processes)", len(pids)), pids, 0, l, stallFor+3*time.Second)
}

// stallFor is how long a stall scenario keeps a service frozen.
const stallFor = 10 * time.Second

// stall freezes pids (those of shard's Postgres, or of RabbitMQ when shard
// is -1) for stallFor. No submit may take longer than slowest, and none may
// fail: the apis stay in HAProxy's rotation (their /readyz answers in time)
// and the other services serve on.
func stall(t *testing.T, what string, pids []int, shard int, l *load, slowest time.Duration) fault {
	signal := func(sig syscall.Signal) {
		for _, pid := range pids {
			if err := syscall.Kill(pid, sig); err != nil {
				t.Errorf("%v to %d: %v", sig, pid, err)
			}
		}
	}
	signal(syscall.SIGSTOP)
	begin := time.Now()
	resumed := false
	t.Cleanup(func() {
		if !resumed {
			signal(syscall.SIGCONT)
		}
	})
	waitUntil(begin.Add(stallFor))
	signal(syscall.SIGCONT)
	resumed = true
	end := time.Now()
	return fault{end: end, shard: -1, verify: func(t *testing.T, rows []Row, _ map[*proc]map[string]*Attempts) {
		if shard >= 0 {
			// The other shards' jobs flow on: their successes per second
			// while shard is frozen, against those from the load's start
			// to the stall.
			loadStart := begin
			for _, sub := range l.snapshot() {
				if sub.start.Before(loadStart) {
					loadStart = sub.start
				}
			}
			before, during := 0, 0
			for _, r := range rows {
				if r.Shard == shard || r.State != job.Succeeded {
					continue
				}
				switch {
				case r.FinishedAt.After(loadStart) && r.FinishedAt.Before(begin):
					before++
				case r.FinishedAt.After(begin) && r.FinishedAt.Before(end):
					during++
				}
			}
			rateBefore := float64(before) / begin.Sub(loadStart).Seconds()
			rateDuring := float64(during) / end.Sub(begin).Seconds()
			t.Logf("the other shards' successes: %.1f/s while shard %d was frozen, %.1f/s before (%d and %d jobs)", rateDuring, shard, rateBefore, during, before)
			// Submits and claims give up on the frozen shard after their
			// patience (2s): most of the stall flows, with all the load.
			if rateDuring < rateBefore/3 {
				t.Errorf("the other shards' jobs nearly stopped while shard %d was frozen: %.1f/s, against %.1f/s before", shard, rateDuring, rateBefore)
			}
		}
		var took time.Duration
		failed := 0
		for _, sub := range l.snapshot() {
			took = max(took, sub.end.Sub(sub.start))
			if !sub.ok() && sub.end.After(begin) {
				failed++
				if failed <= 5 {
					t.Errorf("submit failed during the stall of %s: %s", what, sub)
				}
			}
		}
		t.Logf("%s stalled %s: slowest submit %s, %d failed", what, end.Sub(begin).Round(time.Millisecond), took.Round(time.Millisecond), failed)
		if took > slowest {
			t.Errorf("a submit took %s; with %s stalled none may take longer than %s", took.Round(time.Millisecond), what, slowest)
		}
	}}
}

// readOnly makes both shards read-only (as a full disk or a failover in
// progress would) for 5s: submits must answer 503 with a problem saying the
// job was not accepted, and nothing may be written meanwhile.
func readOnly(t *testing.T, s *stack, l *load) fault {
	set := func(on bool) {
		for i, db := range s.dbs {
			stmt := "ALTER SYSTEM SET default_transaction_read_only = on"
			if !on {
				stmt = "ALTER SYSTEM RESET default_transaction_read_only"
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			conn, err := db.Conn(ctx)
			if err == nil {
				// This session writes even while the default is read-only.
				_, err = conn.ExecContext(ctx, "SET default_transaction_read_only = off")
				if err == nil {
					_, err = conn.ExecContext(ctx, stmt)
				}
				if err == nil {
					_, err = conn.ExecContext(ctx, "SELECT pg_reload_conf()")
				}
				_, _ = conn.ExecContext(ctx, "RESET default_transaction_read_only")
				conn.Close()
			}
			cancel()
			if err != nil {
				t.Fatalf("shard %d: %s: %v", i, stmt, err)
			}
		}
		want := map[bool]string{true: "on", false: "off"}[on]
		waitFor(t, 10*time.Second, "default_transaction_read_only = "+want+" on every shard", func() bool {
			for _, db := range s.dbs {
				var v string
				if err := db.Get(&v, "SELECT current_setting('default_transaction_read_only')"); err != nil || v != want {
					return false
				}
			}
			return true
		})
	}
	healed := false
	t.Cleanup(func() {
		if !healed {
			set(false)
		}
	})
	set(true)
	// Every backend has the reload signalled now and applies it before its
	// next statement; a small margin for the signal's delivery.
	from := time.Now().Add(200 * time.Millisecond)
	waitUntil(from.Add(5 * time.Second))
	until := time.Now()
	set(false)
	healed = true
	end := time.Now()

	return fault{end: end, shard: -1, verify: func(t *testing.T, _ []Row, _ map[*proc]map[string]*Attempts) {
		refused, wrong := 0, 0
		for _, sub := range l.snapshot() {
			if !sub.start.After(from) || !sub.end.Before(until) {
				continue
			}
			switch {
			case sub.ok():
				t.Errorf("submit accepted while every shard was read-only: job %s", sub.job.ID)
			case sub.status == http.StatusServiceUnavailable && sub.problem && strings.Contains(sub.detail, "not accepted"):
				refused++
			default:
				wrong++
				if wrong <= 5 {
					t.Errorf("submit while read-only: want 503 with a problem saying the job was not accepted, got %s", sub)
				}
			}
		}
		var written int
		for i, db := range s.dbs {
			var n int
			if err := db.Get(&n, `SELECT count(*) FROM jobs WHERE payload->>'chaos' = $1 AND created_at > $2 AND created_at < $3`,
				"postgres-read-only", from, until); err != nil {
				t.Fatalf("shard %d: %v", i, err)
			}
			written += n
		}
		t.Logf("read-only for %s: %d submits refused with 503, %d rows written meanwhile", until.Sub(from).Round(time.Millisecond), refused, written)
		if refused == 0 {
			t.Error("no submit was refused while the shards were read-only")
		}
		if written > 0 {
			t.Errorf("%d jobs were written while every shard was read-only", written)
		}
	}}
}

// runningOn counts the jobs a worker holds running, on every shard.
func (s *stack) runningOn(workerID string) int {
	total := 0
	for _, db := range s.dbs {
		var n int
		if err := db.Get(&n, `SELECT count(*) FROM jobs WHERE state = 'running' AND worker_id = $1`, workerID); err == nil {
			total += n
		}
	}
	return total
}

// finishedJob returns the id of an accepted echo or sleep job old enough
// to have finished, or "".
func (s *stack) finishedJob(l *load) string {
	subs := l.snapshot()
	for i := len(subs) - 1; i >= 0; i-- {
		sub := subs[i]
		if sub.ok() && sub.delay == 0 && sub.job.Type != "fail" && time.Since(sub.end) > 5*time.Second {
			return sub.job.ID
		}
	}
	return ""
}

// getJob reads a job through HAProxy and wants it succeeded.
func getJob(id string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/v1/jobs/%s", httpPort, id), nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var j struct {
		State  job.State `json:"state"`
		Detail string    `json:"detail"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&j); err != nil {
		return fmt.Errorf("%d: %w", resp.StatusCode, err)
	}
	if resp.StatusCode != http.StatusOK || j.State != job.Succeeded {
		return fmt.Errorf("%d, state %q: %s", resp.StatusCode, j.State, j.Detail)
	}
	return nil
}

// waitUntil sleeps until t: the timed length of a fault, not a
// synchronisation.
func waitUntil(t time.Time) { time.Sleep(time.Until(t)) }
