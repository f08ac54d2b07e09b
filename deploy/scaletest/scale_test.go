package scaletest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq"

	"github.com/warrenhq/warren/pkg/client"
	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/proctest"
	"github.com/warrenhq/warren/pkg/servicetest"
	"github.com/warrenhq/warren/pkg/store/storetest"
)

const (
	token = "scale-token-0123456789abcdef"
	jobs  = 2000
)

// A burst of 2,000 sleep jobs of 50 ms takes the local fleet from its
// minimum (1) to several workers and back to 1 after the drain. Every job
// succeeds on its first attempt: none is lost, none is cut short by a
// scale-down (a stopped worker finishes its jobs; none is handed back).
func TestBurstScalesTheLocalFleetUpAndBack(t *testing.T) {
	t.Parallel()
	s := startFleet(t,
		"WARREN_AUTOSCALE_MIN=1",
		"WARREN_AUTOSCALE_MAX=6",
		"WARREN_AUTOSCALE_INTERVAL=1s",
		"WARREN_AUTOSCALE_STARTUP=1s",
		"WARREN_AUTOSCALE_TARGET_LATENCY=5s",
		"WARREN_AUTOSCALE_DOWN_WINDOW=5s",
	)

	// The fleet at its minimum: one worker, consuming.
	s.eventually(60*time.Second, "the api ready and one worker consuming", func() bool {
		m := s.metrics()
		return ready(s.apiPort) && running(m) == 1 && m[`warren_autoscale_queue_consumers{queue="default"}`] == 1
	})

	// The burst. Up: several workers while the backlog lasts; then every
	// job done.
	burst := time.Now()
	s.submit(jobs)
	peak := 0
	s.eventually(90*time.Second, fmt.Sprintf("all %d jobs succeeded", jobs), func() bool {
		peak = max(peak, running(s.metrics()))
		return count(t, s.db, "state = 'succeeded'") == jobs
	})
	drained := time.Now()
	// Down: back to the minimum once the down window has passed.
	s.eventually(60*time.Second, "the fleet back to one worker", func() bool {
		m := s.metrics()
		peak = max(peak, running(m))
		return running(m) == 1 && stopping(m) == 0
	})
	t.Logf("burst drained in %v with up to %d workers; back to one worker %v later; %v in all",
		drained.Sub(burst).Round(100*time.Millisecond), peak, time.Since(drained).Round(100*time.Millisecond), time.Since(s.began).Round(time.Second))
	if peak < 3 {
		t.Errorf("the fleet grew to %d workers, want several (at least 3)", peak)
	}
	s.checkEveryJobRanOnce(jobs, 3)
	if time.Since(s.began) > 3*time.Minute {
		t.Errorf("took %v, want under 3 minutes", time.Since(s.began))
	}
}

// With WARREN_AUTOSCALE_MIN=0 an idle fleet is at zero: a burst of sleep
// jobs brings it up from zero, and once the queue has been idle for
// WARREN_AUTOSCALE_IDLE_AFTER it goes back to zero. No job is lost or cut
// short, on the way up or down to zero.
func TestBurstScalesTheLocalFleetUpFromZeroAndBack(t *testing.T) {
	t.Parallel()
	const jobs = 300
	s := startFleet(t,
		"WARREN_AUTOSCALE_MIN=0",
		"WARREN_AUTOSCALE_MAX=4",
		"WARREN_AUTOSCALE_INTERVAL=500ms",
		"WARREN_AUTOSCALE_STARTUP=1s",
		"WARREN_AUTOSCALE_TARGET_LATENCY=5s",
		"WARREN_AUTOSCALE_DOWN_WINDOW=3s",
		"WARREN_AUTOSCALE_IDLE_AFTER=2s",
		// Idle means no arrival within the rates' window either.
		"WARREN_AUTOSCALE_WINDOW=2s",
	)
	atZero := func(m map[string]float64) bool {
		return m["warren_autoscale_ordered_workers"] == 0 && running(m) == 0 && stopping(m) == 0
	}
	s.eventually(60*time.Second, "the api ready and the fleet at zero", func() bool {
		m := s.metrics()
		return ready(s.apiPort) && decisions(m) > 0 && atZero(m)
	})

	burst := time.Now()
	t.Logf("the fleet at zero %v after the start (build included)", burst.Sub(s.began).Round(100*time.Millisecond))
	s.submit(jobs)
	peak := 0
	s.eventually(60*time.Second, fmt.Sprintf("all %d jobs succeeded", jobs), func() bool {
		peak = max(peak, running(s.metrics()))
		return count(t, s.db, "state = 'succeeded'") == jobs
	})
	drained := time.Now()
	s.eventually(60*time.Second, "the fleet back to zero", func() bool { return atZero(s.metrics()) })
	t.Logf("from zero: burst drained in %v with up to %d workers; back to zero %v later; %v in all",
		drained.Sub(burst).Round(100*time.Millisecond), peak, time.Since(drained).Round(100*time.Millisecond), time.Since(s.began).Round(time.Second))
	if peak < 1 {
		t.Error("no worker ran the burst")
	}
	s.checkEveryJobRanOnce(jobs, 1)
	if time.Since(s.began) > 2*time.Minute {
		t.Errorf("took %v, want under 2 minutes", time.Since(s.began))
	}
}

// fleet is the built api and a scheduler running the local worker fleet,
// on the test's own shards and namespace.
type fleet struct {
	t          *testing.T
	began      time.Time
	db         []*sqlx.DB
	apiPort    int
	schedPort  int
	api, sched *proc
}

// startFleet migrates fresh shards and starts the api and a scheduler with
// WARREN_AUTOSCALE=local and the autoscale settings given.
func startFleet(t *testing.T, autoscale ...string) *fleet {
	t.Helper()
	s := &fleet{t: t, began: time.Now()}
	bin := proctest.Dir(t)
	urls := storetest.Blank(t, 2)
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"DATABASE_URLS=" + strings.Join(urls, ","),
		"RABBITMQ_URL=" + servicetest.URL(t, servicetest.RabbitMQVar),
		"REDIS_URL=" + servicetest.URL(t, servicetest.RedisVar),
		"WARREN_NAMESPACE=" + servicetest.Name("scale"),
		"WARREN_API_TOKENS=default:" + token,
		"WARREN_LOG_FORMAT=json",
		// Successes are logged at debug; the check below counts them.
		"WARREN_LOG_LEVEL=debug",
		// The workers the scheduler starts inherit its environment: two jobs
		// at once each, so that the burst needs several of them.
		"WARREN_CONCURRENCY=2",
	}
	release := exec.Command(filepath.Join(bin, "scheduler"), "migrate")
	release.Env = env
	if out, err := release.CombinedOutput(); err != nil {
		t.Fatalf("release: %v\n%s", err, out)
	}
	s.db = shards(t, urls)
	s.apiPort, s.schedPort = proctest.FreePort(t), proctest.FreePort(t)
	workerPort := proctest.FreePort(t)
	s.api = start(t, filepath.Join(bin, "api"), append(slices.Clone(env), fmt.Sprintf("PORT=%d", s.apiPort)))
	s.sched = start(t, filepath.Join(bin, "scheduler"), append(append(slices.Clone(env),
		fmt.Sprintf("PORT=%d", s.schedPort),
		"WARREN_AUTOSCALE=local",
		"WARREN_AUTOSCALE_COMMAND="+filepath.Join(bin, "workers"),
		fmt.Sprintf("WARREN_AUTOSCALE_PORT=%d", workerPort),
	), autoscale...))
	return s
}

func (s *fleet) metrics() map[string]float64 {
	return scrape(fmt.Sprintf("http://127.0.0.1:%d/metrics", s.schedPort))
}

func running(m map[string]float64) int {
	return int(m[`warren_autoscale_local_processes{state="running"}`])
}
func stopping(m map[string]float64) int {
	return int(m[`warren_autoscale_local_processes{state="stopping"}`])
}

// decisions returns the number of decisions the autoscaler made.
func decisions(m map[string]float64) int {
	n := 0.0
	for k, v := range m {
		if strings.HasPrefix(k, "warren_autoscale_decisions_total{") {
			n += v
		}
	}
	return int(n)
}

// eventually polls cond until it holds, failing after d or when the api or
// the scheduler has exited.
func (s *fleet) eventually(d time.Duration, what string, cond func() bool) {
	s.t.Helper()
	eventually(s.t, d, what, cond, s.api, s.sched)
}

// submit submits n sleep jobs of 50 ms, in batches of at most 1,000.
func (s *fleet) submit(n int) {
	s.t.Helper()
	c, err := client.New(fmt.Sprintf("http://127.0.0.1:%d", s.apiPort), token)
	if err != nil {
		s.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for n > 0 {
		reqs := make([]job.Request, min(n, 1000))
		for i := range reqs {
			reqs[i] = job.Request{Type: "sleep", Payload: json.RawMessage(`{"ms":50}`)}
		}
		n -= len(reqs)
		items, err := c.SubmitBatch(ctx, reqs)
		if err != nil {
			s.t.Fatal(err)
		}
		for _, it := range items {
			if it.Err != nil {
				s.t.Fatalf("item %d: %+v", it.Index, it.Err)
			}
		}
	}
}

// checkEveryJobRanOnce checks that nothing was lost and nothing cut short:
// every one of the jobs succeeded on its first attempt and ran once, and
// every worker process that started (at least minStarted of them) was
// stopped by SIGTERM and exited cleanly. It stops the scheduler first,
// which stops its last workers the same way.
func (s *fleet) checkEveryJobRanOnce(jobs, minStarted int) {
	t := s.t
	t.Helper()
	if n := count(t, s.db, "true"); n != jobs {
		t.Errorf("%d jobs stored, want %d", n, jobs)
	}
	if n := count(t, s.db, "attempt <> 1"); n != 0 {
		t.Errorf("%d jobs ran more than once or not at all", n)
	}
	if v := s.metrics()["warren_autoscale_local_restarts_total"]; v != 0 {
		t.Errorf("%v worker processes exited unasked", v)
	}
	s.sched.stop(t)
	logs := parse(s.sched.out.String())
	for _, l := range logs {
		if l.child == "" && (strings.HasPrefix(l.Msg, "autoscale: scale")) {
			t.Logf("%s %s: %s", l.Time.Format("15:04:05.0"), l.Level, l.Msg)
		}
	}
	succeeded := 0
	for _, l := range logs {
		switch {
		case l.child != "" && l.Msg == "job succeeded":
			succeeded++
		case l.child != "" && (strings.Contains(l.Msg, "handed back") || strings.Contains(l.Msg, "grace over") || l.Level == "ERROR"):
			t.Errorf("%s: %s %s", l.child, l.Level, l.Msg)
		}
	}
	if succeeded != jobs {
		t.Errorf("%d job runs logged by the workers, want %d (each job once)", succeeded, jobs)
	}
	// Every worker that started was stopped by SIGTERM and exited cleanly
	// after "worker stopped", and none is left running.
	started, stopped, clean := map[string]int{}, map[string]int{}, map[string]int{}
	for _, l := range logs {
		switch {
		case l.child == "" && l.Msg == "worker process started":
			started[l.Process]++
			pid := l.Pid
			t.Cleanup(func() {
				if syscall.Kill(pid, 0) == nil {
					t.Errorf("worker process %d left running", pid)
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			})
		case l.child == "" && l.Msg == "worker process stopped":
			stopped[l.Process]++
			if l.Status != "exit status 0" {
				t.Errorf("%s stopped with %s", l.Process, l.Status)
			}
		case l.child != "" && l.Msg == "worker stopped":
			clean[l.child]++
		}
	}
	if len(started) < minStarted {
		t.Errorf("workers started: %v, want at least %d", started, minStarted)
	}
	for name, n := range started {
		if stopped[name] != n || clean[name] != n {
			t.Errorf("%s: started %d times, stopped %d, shut down cleanly %d", name, n, stopped[name], clean[name])
		}
	}
}

// logLine is a JSON log line of the scheduler, or of one of its workers
// (child names it, from the prefix).
type logLine struct {
	child   string
	Time    time.Time `json:"time"`
	Level   string    `json:"level"`
	Msg     string    `json:"msg"`
	Process string    `json:"process"`
	Pid     int       `json:"pid"`
	Status  string    `json:"status"`
}

var childPrefix = regexp.MustCompile(`^(worker\.\d+)\s*\| (.*)$`)

func parse(out string) []logLine {
	var lines []logLine
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		text, child := sc.Text(), ""
		if m := childPrefix.FindStringSubmatch(text); m != nil {
			child, text = m[1], m[2]
		}
		var l logLine
		if json.Unmarshal([]byte(text), &l) == nil {
			l.child = child
			lines = append(lines, l)
		}
	}
	return lines
}

func shards(t *testing.T, urls []string) []*sqlx.DB {
	t.Helper()
	var dbs []*sqlx.DB
	for _, u := range urls {
		db, err := sqlx.Open("postgres", u)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = db.Close() })
		dbs = append(dbs, db)
	}
	return dbs
}

// count counts the jobs matching cond over the shards.
func count(t *testing.T, dbs []*sqlx.DB, cond string) int {
	t.Helper()
	total := 0
	for _, db := range dbs {
		var n int
		if err := db.Get(&n, "SELECT count(*) FROM jobs WHERE "+cond); err != nil {
			t.Fatal(err)
		}
		total += n
	}
	return total
}

// proc is a running Warren process and its output.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *proctest.Buffer
	done chan error
}

func start(t *testing.T, path string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{name: filepath.Base(path), out: &proctest.Buffer{}, done: make(chan error, 1)}
	p.cmd = exec.Command(path, args...)
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		// SIGTERM first: the scheduler then stops its workers. SIGKILL
		// after a while, its workers getting SIGTERM as it dies.
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-p.done:
			p.done <- err
		case <-time.After(40 * time.Second):
			_ = p.cmd.Process.Kill()
		}
		if t.Failed() {
			t.Logf("%s output (last 200 lines):\n%s", p.name, tail(p.out.String(), 200))
		}
	})
	return p
}

// stop sends SIGTERM and expects a clean exit.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err
		if err != nil {
			t.Errorf("%s exited with %v after SIGTERM", p.name, err)
		}
	case <-time.After(40 * time.Second):
		t.Errorf("%s did not stop within 40s of SIGTERM", p.name)
	}
}

func (p *proc) exited() bool {
	select {
	case err := <-p.done:
		p.done <- err
		return true
	default:
		return false
	}
}

// eventually polls cond until it holds, failing after d or when one of the
// processes has exited.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool, procs ...*proc) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		for _, p := range procs {
			if p.exited() {
				t.Fatalf("%s exited while waiting for %s", p.name, what)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func ready(port int) bool {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", port))
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// scrape reads a /metrics page into name{labels} → value; empty when it
// cannot.
func scrape(url string) map[string]float64 {
	out := map[string]float64{}
	resp, err := http.Get(url)
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func TestMain(m *testing.M) { proctest.Main(m) }
