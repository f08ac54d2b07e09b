// Package e2e runs Warren's three processes as built binaries against the
// real services and drives them over HTTP, as a user would.
package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/warrenhq/warren/pkg/client"
	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/proctest"
	"github.com/warrenhq/warren/pkg/servicetest"
	"github.com/warrenhq/warren/pkg/stacktest"
	"github.com/warrenhq/warren/pkg/store/storetest"
)

const token = "e2e-token-0123456789abcdef"

// proc is a running Warren process with its output.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *proctest.Buffer
	done chan error
}

func start(t *testing.T, name string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, out: &proctest.Buffer{}, done: make(chan error, 1)}
	p.cmd = exec.Command(proctest.Bin(t, name), args...)
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("%s output:\n%s", name, p.out.String())
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
		p.done <- err // for the cleanup
		if err != nil {
			t.Errorf("%s exited with %v after SIGTERM:\n%s", p.name, err, p.out.String())
		}
	case <-time.After(30 * time.Second):
		t.Errorf("%s did not stop within 30s of SIGTERM", p.name)
	}
}

func runOnce(t *testing.T, name string, env []string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, proctest.Bin(t, name), args...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestThreeProcessesRunAJob(t *testing.T) {
	t.Parallel()
	port := proctest.FreePort(t)
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"DATABASE_URLS=" + strings.Join(storetest.Blank(t, 2), ","),
		"RABBITMQ_URL=" + servicetest.URL(t, servicetest.RabbitMQVar),
		"REDIS_URL=" + servicetest.URL(t, servicetest.RedisVar),
		"WARREN_NAMESPACE=" + servicetest.Name("e2e"),
		"WARREN_API_TOKENS=default:" + token,
	}
	// Each process gets its own PORT, as foreman gives them: the api serves
	// the REST API on it, the others their /metrics.
	withPort := func(p int) []string { return append(slices.Clone(env), fmt.Sprintf("PORT=%d", p)) }
	// release: migrations on both shards, and again as a no-op.
	for i := range 2 {
		if out, err := runOnce(t, "scheduler", env, "migrate"); err != nil {
			t.Fatalf("release run %d: %v\n%s", i+1, err, out)
		}
	}
	api := start(t, "api", withPort(port))
	workers := start(t, "workers", withPort(proctest.FreePort(t)))
	sched := start(t, "scheduler", withPort(proctest.FreePort(t)))

	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	stacktest.Eventually(t, 30*time.Second, "api ready", func() bool {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	c, err := client.New(base, token)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var ids []string
	for i := range 20 {
		j, err := c.Submit(ctx, job.Request{Type: "echo", Payload: json.RawMessage(fmt.Sprintf(`{"hello":"world","i":%d}`, i))})
		if err != nil {
			t.Fatal(err)
		}
		if j.State != job.Queued {
			t.Fatalf("submitted job is %s", j.State)
		}
		ids = append(ids, j.ID.String())
	}
	for i, id := range ids {
		j, err := c.Wait(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		var res struct {
			Hello string `json:"hello"`
			I     int    `json:"i"`
		}
		if err := json.Unmarshal(j.Result, &res); err != nil || j.State != job.Succeeded || res.Hello != "world" || res.I != i {
			t.Fatalf("job %d: %s result %s", i, j.State, j.Result)
		}
	}
	// A job that fails twice is retried by the scheduler and succeeds on its
	// third attempt; a delayed job waits, then runs.
	flaky, err := c.Submit(ctx, job.Request{Type: "fail", Payload: json.RawMessage(`{"times":2}`), MaxAttempts: ptr(5)})
	if err != nil {
		t.Fatal(err)
	}
	delayed, err := c.Submit(ctx, job.Request{Type: "echo", Delay: "1s"})
	if err != nil {
		t.Fatal(err)
	}
	if delayed.State != job.Scheduled {
		t.Fatalf("delayed job is %s, want scheduled", delayed.State)
	}
	f, err := c.Wait(ctx, flaky.ID.String())
	if err != nil {
		t.Fatal(err)
	}
	if f.State != job.Succeeded || f.Attempt != 3 || string(f.Result) != `{"attempt":3}` {
		t.Fatalf("flaky job: %s attempt %d result %s", f.State, f.Attempt, f.Result)
	}
	d, err := c.Wait(ctx, delayed.ID.String())
	if err != nil {
		t.Fatal(err)
	}
	if d.State != job.Succeeded || d.StartedAt == nil || d.StartedAt.Sub(d.CreatedAt) < time.Second {
		t.Fatalf("delayed job: %s, started %v after creation", d.State, d.StartedAt)
	}
	// Unauthenticated requests are refused by the real process too.
	if _, err := (mustClient(t, base, "")).Get(ctx, ids[0]); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("no token: %v", err)
	}
	stacktest.Eventually(t, 10*time.Second, "scheduler says it is alive", func() bool {
		return strings.Contains(sched.out.String(), "scheduler alive")
	})
	metrics := get(t, base+"/metrics")
	for _, p := range []*proc{api, workers, sched} {
		p.stop(t)
	}
	// No secret reaches a log line or /metrics: not the token, not a password.
	secrets := []string{token}
	for _, kv := range env {
		name, value, _ := strings.Cut(kv, "=")
		if !strings.HasSuffix(name, "_URL") && !strings.HasSuffix(name, "_URLS") {
			continue
		}
		for _, raw := range strings.Split(value, ",") {
			if u, err := url.Parse(raw); err == nil && u.User != nil {
				if pw, ok := u.User.Password(); ok && pw != "" {
					secrets = append(secrets, pw)
				}
			}
		}
	}
	if len(secrets) < 3 {
		t.Fatalf("found %d secrets to look for; the test services should have passwords", len(secrets))
	}
	for _, sec := range secrets {
		for _, p := range []*proc{api, workers, sched} {
			if strings.Contains(p.out.String(), sec) {
				t.Errorf("%s's output contains a secret (%.4s…)", p.name, sec)
			}
		}
		if strings.Contains(metrics, sec) {
			t.Errorf("/metrics contains a secret (%.4s…)", sec)
		}
	}
}

func get(t *testing.T, u string) string {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestBadSettingStopsWithTheVariableNamed(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		bin, name, value string
	}{
		{"api", "PORT", "eighty"},
		{"api", "WARREN_API_TOKENS", ""},
		{"workers", "WARREN_CONCURRENCY", "-3"},
		{"scheduler", "DATABASE_URLS", "mysql://db/x"},
	} {
		env := []string{tc.name + "=" + tc.value}
		if tc.name != "WARREN_API_TOKENS" {
			env = append(env, "WARREN_API_TOKENS=default:"+token)
		}
		out, err := runOnce(t, tc.bin, env)
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() == 0 {
			t.Errorf("%s with %s=%q: %v, want a failing exit", tc.bin, tc.name, tc.value, err)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 1 || !strings.Contains(lines[0], tc.name) {
			t.Errorf("%s with %s=%q printed %q, want one line naming %s", tc.bin, tc.name, tc.value, out, tc.name)
		}
	}
}

func ptr[T any](v T) *T { return &v }

func mustClient(t *testing.T, base, tok string) *client.Client {
	t.Helper()
	c, err := client.New(base, tok)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestMain(m *testing.M) { proctest.Main(m) }
