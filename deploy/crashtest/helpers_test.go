// Package crashtest kills Warren's built processes with SIGKILL at the
// moments that matter (the api between its commit and its publish, a worker
// mid-job, the leading scheduler) and checks, against the real services,
// that the scheduler repairs what they left: every accepted job still ends,
// once.
package crashtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/warrenhq/warren/pkg/client"
	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/proctest"
	"github.com/warrenhq/warren/pkg/servicetest"
	"github.com/warrenhq/warren/pkg/store/storetest"
)

const token = "crash-token-0123456789abcdef"

// cluster is one test's Warren: its own shards and namespace, and the
// processes it started.
type cluster struct {
	t    *testing.T
	env  []string
	urls []string
}

func newCluster(t *testing.T, shards int) *cluster {
	t.Helper()
	urls := storetest.URLs(t, shards)
	return &cluster{t: t, urls: urls, env: []string{
		"PATH=" + os.Getenv("PATH"),
		"DATABASE_URLS=" + strings.Join(urls, ","),
		"RABBITMQ_URL=" + servicetest.URL(t, servicetest.RabbitMQVar),
		"REDIS_URL=" + servicetest.URL(t, servicetest.RedisVar),
		"WARREN_NAMESPACE=" + servicetest.Name("crash"),
		"WARREN_API_TOKENS=default:" + token,
		"WARREN_LOG_LEVEL=debug",
	}}
}

// proc is a running Warren process with its output.
type proc struct {
	name string
	port int
	cmd  *exec.Cmd
	out  *proctest.Buffer
	done chan struct{}
	err  error // set when done is closed
}

// start runs a process of the cluster on a port of its own, with extra
// settings.
func (c *cluster) start(name string, extra ...string) *proc {
	c.t.Helper()
	dir := proctest.Dir(c.t)
	p := &proc{name: name, port: proctest.FreePort(c.t), out: &proctest.Buffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(filepath.Join(dir, name))
	p.cmd.Env = append(append(slices.Clone(c.env), "PORT="+strconv.Itoa(p.port)), extra...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	c.t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		if c.t.Failed() {
			c.t.Logf("%s (port %d) output:\n%s", name, p.port, p.out.String())
		}
	})
	return p
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill(t *testing.T) time.Time {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	at := time.Now()
	p.wait(t, 10*time.Second)
	return at
}

// wait waits for the process to end.
func (p *proc) wait(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(d):
		t.Fatalf("%s did not end within %s", p.name, d)
	}
}

// killedBySIGKILL reports whether the process ended by SIGKILL.
func (p *proc) killedBySIGKILL() bool {
	var exit *exec.ExitError
	if !errors.As(p.err, &exit) {
		return false
	}
	ws, ok := exit.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

func (p *proc) url(path string) string { return fmt.Sprintf("http://127.0.0.1:%d%s", p.port, path) }

// metric returns the value of an unlabelled metric the process serves on
// /metrics, or an error.
func (p *proc) metric(name string) (float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.url("/metrics"), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, fmt.Errorf("%s: no metric %s", p.name, name)
}

// waitReady waits until the api answers /readyz with 200.
func (p *proc) waitReady(t *testing.T) {
	t.Helper()
	eventually(t, 30*time.Second, p.name+" ready", func() bool {
		resp, err := http.Get(p.url("/readyz"))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// client returns a REST client of the api process.
func (p *proc) client(t *testing.T) *client.Client {
	t.Helper()
	c, err := client.New(p.url(""), token)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// row is a job's state as the shards hold it, with the scheduler's columns.
type row struct {
	ID          job.ID     `db:"id"`
	State       job.State  `db:"state"`
	Attempt     int        `db:"attempt"`
	Error       *string    `db:"error"`
	WorkerID    *string    `db:"worker_id"`
	PublishedAt *time.Time `db:"published_at"`
	Result      *string    `db:"result"`
}

// rows returns every job of the cluster.
func (c *cluster) rows() []row {
	c.t.Helper()
	var out []row
	for _, u := range c.urls {
		db, err := sqlx.Open("postgres", u)
		if err != nil {
			c.t.Fatal(err)
		}
		var rs []row
		err = db.Select(&rs, `SELECT id, state, attempt, error, worker_id, published_at, result::text AS result FROM jobs ORDER BY id`)
		_ = db.Close()
		if err != nil {
			c.t.Fatal(err)
		}
		out = append(out, rs...)
	}
	return out
}

// row returns one job of the cluster.
func (c *cluster) row(id job.ID) row {
	c.t.Helper()
	for _, r := range c.rows() {
		if r.ID == id {
			return r
		}
	}
	c.t.Fatalf("no job %s", id)
	return row{}
}

// eventually polls cond until it holds, failing the test after timeout.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// count returns how many lines of out contain every one of parts.
func count(out string, parts ...string) int {
	n := 0
	for line := range strings.Lines(out) {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			n++
		}
	}
	return n
}

func TestMain(m *testing.M) { proctest.Main(m) }
