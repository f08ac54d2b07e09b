package runtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/warrenhq/warren/pkg/servicetest"
	"github.com/warrenhq/warren/pkg/stacktest"
	"github.com/warrenhq/warren/pkg/store/storetest"
)

// haproxyTimeout bounds HAProxy's noticing that a web process stopped or came
// back: two failed checks of up to 2s each, 500ms apart, or two good ones 1s apart.
const haproxyTimeout = 20 * time.Second

// testFixedWorkersOnRunningServices runs `make run` with WARREN_AUTOSCALE=off
// and the formation's own two workers, on services that already run (those of
// `make test`, with shards, RabbitMQ names and Redis keys of its own). It
// checks that run.sh starts no service, that HAProxy takes a frozen web process
// out by its /readyz checks and back in when it answers again, and that a
// Procfile process killed with SIGKILL stops the whole stack, leaving the
// services it did not start running.
func testFixedWorkersOnRunningServices(t *testing.T) {
	began := time.Now()
	namespace := servicetest.Name("runtest")
	services := map[string]string{
		// Blank shards: run.sh's release step migrates them.
		"DATABASE_URLS": strings.Join(storetest.Blank(t, 2), ","),
		"RABBITMQ_URL":  servicetest.URL(t, servicetest.RabbitMQVar),
		"REDIS_URL":     servicetest.URL(t, servicetest.RedisVar),
	}
	t.Cleanup(func() { dropNamespace(t, namespace, services["REDIS_URL"]) })
	env := []string{
		"WARREN_AUTOSCALE=off",
		"WARREN_FORMATION=web=2,worker=2,scheduler=1",
		"WARREN_NAMESPACE=" + namespace,
	}
	for k, v := range services {
		env = append(env, k+"="+v)
	}
	s := newStack(t, env...)

	r := s.start(t)
	r.waitReady(t, s)
	t.Logf("ready after %s", time.Since(began).Round(time.Millisecond))
	out := r.out.String()
	if !strings.Contains(out, "using those services, starting none") {
		t.Errorf("deploy/run.sh did not say it starts no services of its own")
	}
	if strings.Contains(out, "deploy/services.sh") || strings.Contains(out, "the scheduler runs the worker fleet") {
		t.Errorf("deploy/run.sh started services or the scheduler's workers; want neither:\n%s", tail(r.out, 60))
	}
	if _, err := os.Stat(filepath.Join(s.dataDir, "services.env")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s/services.env exists (%v): deploy/services.sh ran", s.dataDir, err)
	}
	if procs := serviceProcesses(s.dataDir); len(procs) > 0 {
		t.Errorf("services started with data in %s: %v", s.dataDir, procs)
	}
	fileEnv := s.checkEnvFile(t)
	for k, v := range services {
		if fileEnv[k] != v {
			t.Errorf("the env file's %s is not the one given to run.sh", k)
		}
	}
	token := fileEnv["WARREN_TOKEN"]

	// foreman runs worker.1 and worker.2 (their metrics ports answer), and they
	// are the only workers: no autoscaler added any.
	base := s.ports["WARREN_WEB_PORT"]
	for _, p := range []int{base + 100, base + 101} {
		if code := s.status(t, p, "/healthz"); code != http.StatusOK {
			t.Errorf("worker on port %d: GET /healthz = %d, want 200", p, code)
		}
	}
	s.waitWorkers(t, token, 2)
	id := s.submitEcho(t, token)
	s.waitSucceeded(t, token, id, jobTimeout)

	// Freeze web.1: its port still accepts connections (a TCP check would pass),
	// but /readyz gets no answer, so HAProxy takes it out and sends every submit
	// to web.2.
	web1 := s.process(t, "api", base)
	downs, ups := strings.Count(r.out.String(), "web/web.1 is DOWN"), strings.Count(r.out.String(), "web/web.1 is UP")
	t0 := time.Now()
	if err := syscall.Kill(web1, syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP web.1 (pid %d): %v", web1, err)
	}
	t.Cleanup(func() { _ = syscall.Kill(web1, syscall.SIGCONT) }) // before run.sh is stopped
	if !stacktest.Until(haproxyTimeout, func() bool { return strings.Count(r.out.String(), "web/web.1 is DOWN") > downs }) {
		t.Fatalf("HAProxy did not take the frozen web.1 out within %s", haproxyTimeout)
	}
	t.Logf("HAProxy took the frozen web.1 out after %s", time.Since(t0).Round(time.Millisecond))
	ids := make([]string, 10)
	for i := range ids {
		ids[i] = s.submitEcho(t, token)
	}
	for _, id := range ids {
		s.waitSucceeded(t, token, id, jobTimeout)
	}
	if err := syscall.Kill(web1, syscall.SIGCONT); err != nil {
		t.Fatalf("SIGCONT web.1 (pid %d): %v", web1, err)
	}
	if !stacktest.Until(haproxyTimeout, func() bool { return strings.Count(r.out.String(), "web/web.1 is UP") > ups }) {
		t.Fatalf("HAProxy did not take web.1 back within %s of SIGCONT", haproxyTimeout)
	}

	// SIGKILL web.1: foreman stops the other processes and exits, and run.sh
	// stops the rest, as a Procfile runner does when a process dies.
	t0 = time.Now()
	if err := syscall.Kill(web1, syscall.SIGKILL); err != nil {
		t.Fatalf("SIGKILL web.1 (pid %d): %v", web1, err)
	}
	r.waitExitCode(t, 1)
	if !strings.Contains(r.out.String(), "a Procfile process ended, so the whole stack stops") {
		t.Errorf("deploy/run.sh did not say why the stack stopped:\n%s", tail(r.out, 40))
	}
	t.Logf("stack stopped %s after SIGKILL of web.1", time.Since(t0).Round(time.Millisecond))
	s.checkNothingLeft(t)
	for k, v := range services {
		if err := dial(v); err != nil {
			t.Errorf("%s: the service run.sh did not start is gone after it stopped: %v", k, err)
		}
	}
	t.Logf("whole case: %s", time.Since(began).Round(time.Millisecond))
}

// waitExitCode waits for run.sh to stop the stack by itself and exit with code.
func (r *run) waitExitCode(t *testing.T, code int) {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(stopTimeout):
		t.Fatalf("deploy/run.sh did not exit within %s", stopTimeout)
	}
	var ee *exec.ExitError
	if !errors.As(r.err, &ee) || ee.ExitCode() != code {
		t.Errorf("deploy/run.sh exited with %v, want exit status %d", r.err, code)
	}
	if !strings.Contains(r.out.String(), "run: stopped") {
		t.Errorf("deploy/run.sh did not report that it stopped the stack")
	}
}

// waitWorkers waits until GET /v1/workers lists exactly n workers, in n processes.
func (s *stack) waitWorkers(t *testing.T, token string, n int) {
	t.Helper()
	var (
		code int
		body []byte
	)
	if !stacktest.Until(jobTimeout, func() bool {
		code, body = s.do(t, http.MethodGet, "/v1/workers", token, nil)
		var v struct {
			Workers []struct {
				PID int `json:"pid"`
			} `json:"workers"`
		}
		if code != http.StatusOK || json.Unmarshal(body, &v) != nil {
			return false
		}
		pids := map[int]bool{}
		for _, w := range v.Workers {
			pids[w.PID] = true
		}
		return len(v.Workers) == n && len(pids) == n
	}) {
		t.Fatalf("GET /v1/workers did not list %d workers in %d processes within %s; last: %d %s", n, n, jobTimeout, code, body)
	}
}

// process returns the pid of the stack's process running bin/<name> with the
// given PORT, as foreman started it.
func (s *stack) process(t *testing.T, name string, port int) int {
	t.Helper()
	want := []string{"WARREN_DATA_DIR=" + s.dataDir, "PORT=" + strconv.Itoa(port)}
	entries, _ := os.ReadDir("/proc")
	var found []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		argv0, _, _ := bytes.Cut(cmdline, []byte{0})
		if filepath.Base(string(argv0)) != name {
			continue
		}
		environ, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		vars := strings.Split(string(environ), "\x00")
		if slices.Contains(vars, want[0]) && slices.Contains(vars, want[1]) {
			found = append(found, pid)
		}
	}
	if len(found) != 1 {
		t.Fatalf("processes of bin/%s with PORT=%d in this stack: %v, want one", name, port, found)
	}
	return found[0]
}

// serviceProcesses lists the Postgres, RabbitMQ, epmd and Redis processes
// whose command line or environment names dataDir.
func serviceProcesses(dataDir string) []string {
	var out []string
	for _, p := range processesReferring(dataDir) {
		for _, name := range []string{"postgres", "beam", "epmd", "rabbitmq", "redis-server"} {
			if strings.Contains(p, name) {
				out = append(out, p)
				break
			}
		}
	}
	return out
}

// dial checks that the service at a URL accepts TCP connections.
func dial(raw string) error {
	first, _, _ := strings.Cut(raw, ",")
	u, err := url.Parse(first)
	if err != nil {
		return fmt.Errorf("parse URL: %w", err)
	}
	c, err := net.DialTimeout("tcp", u.Host, 2*time.Second)
	if err != nil {
		return err
	}
	return c.Close()
}

// dropNamespace removes what the stack left on the shared services under its
// namespace: RabbitMQ queues and exchanges (through the management API) and
// Redis keys.
func dropNamespace(t *testing.T, namespace, redisURL string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if mgmt := os.Getenv(servicetest.ManagmentVar); mgmt != "" {
		for _, kind := range []string{"queues", "exchanges"} {
			// the exchange is named namespace, the queues namespace.q.<queue> and so on
			if err := deleteAll(ctx, mgmt, kind, namespace); err != nil {
				t.Logf("cleaning up RabbitMQ %s of %s: %v", kind, namespace, err)
			}
		}
	}
	opts, err := redis.ParseURL(redisURL)
	if err != nil {
		t.Logf("cleaning up Redis keys of %s: %v", namespace, err)
		return
	}
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	iter := rdb.Scan(ctx, 0, namespace+":*", 500).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Logf("cleaning up Redis keys of %s: %v", namespace, err)
		return
	}
	if len(keys) > 0 {
		if err := rdb.Del(ctx, keys...).Err(); err != nil {
			t.Logf("cleaning up Redis keys of %s: %v", namespace, err)
		}
	}
}

// deleteAll deletes the management API's objects of a kind ("queues",
// "exchanges") whose names begin with prefix, in every vhost.
func deleteAll(ctx context.Context, mgmt, kind, prefix string) error {
	base := strings.TrimRight(mgmt, "/") + "/api/" + kind
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"?columns=name,vhost", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /api/%s: %s", kind, resp.Status)
	}
	var items []struct{ Name, Vhost string }
	if err := json.NewDecoder(resp.Body).Decode(&items); err != nil {
		return fmt.Errorf("GET /api/%s: %w", kind, err)
	}
	var errs []error
	for _, it := range items {
		if !strings.HasPrefix(it.Name, prefix) {
			continue
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodDelete,
			base+"/"+url.PathEscape(it.Vhost)+"/"+url.PathEscape(it.Name), nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusNotFound {
			errs = append(errs, fmt.Errorf("DELETE %s %s: %s", kind, it.Name, resp.Status))
		}
	}
	return errors.Join(errs...)
}
