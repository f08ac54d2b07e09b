package runtest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/warrenhq/warren/pkg/proctest"
	"github.com/warrenhq/warren/pkg/stacktest"
)

// Deadlines per phase; together well under the two minutes the test usually takes
// plus slack for a loaded CI machine.
const (
	readyTimeout  = 150 * time.Second // install check, build, services, release, processes
	jobTimeout    = 30 * time.Second
	refuseTimeout = 15 * time.Second // a second run must give up this fast
	stopTimeout   = 60 * time.Second
	goneTimeout   = 5 * time.Second // after run.sh exits, ports and processes must go at once
)

// TestMakeRun runs `make run` the ways the README describes, one stack after
// the other (they share bin/, which each run.sh rebuilds).
func TestMakeRun(t *testing.T) {
	t.Run("default", testDefaultStack)
	t.Run("fixed-workers-on-running-services", testFixedWorkersOnRunningServices)
}

// testDefaultStack is the README's flow: the default formation (web=2,
// scheduler=1, the scheduler running the workers) on services run.sh starts,
// stopped by Ctrl-C, started again on the same data, stopped by SIGTERM.
func testDefaultStack(t *testing.T) {
	s := newStack(t)
	began := time.Now()

	// First start: everything is created.
	first := s.start(t)
	first.waitReady(t, s)
	t.Logf("first start ready after %s", time.Since(began).Round(time.Millisecond))
	env := s.checkEnvFile(t)

	// foreman gives web.N the port WARREN_WEB_PORT+N-1: HAProxy's backends must be there.
	for _, p := range s.webPorts() {
		if code := s.status(t, p, "/readyz"); code != http.StatusOK {
			t.Fatalf("web process on port %d: GET /readyz = %d, want 200", p, code)
		}
	}

	// The README flow through HAProxy.
	id := s.submitEcho(t, env["WARREN_TOKEN"])
	s.waitSucceeded(t, env["WARREN_TOKEN"], id, jobTimeout)

	// A second `make run` with the same settings refuses.
	s.checkSecondRunRefused(t, first.cmd.Process.Pid)

	// Ctrl-C: the terminal sends SIGINT to the whole foreground process group.
	t0 := time.Now()
	first.signalGroup(t, syscall.SIGINT)
	first.waitExit(t, syscall.SIGINT)
	t.Logf("stopped by SIGINT in %s", time.Since(t0).Round(time.Millisecond))
	s.checkNothingLeft(t)

	// Second start: the data and the tokens survive.
	t0 = time.Now()
	second := s.start(t)
	second.waitReady(t, s)
	t.Logf("second start ready after %s", time.Since(t0).Round(time.Millisecond))
	if changed := changedKeys(env, s.checkEnvFile(t)); len(changed) > 0 {
		t.Errorf("the env file changed across restarts: %v; want its tokens and URLs reused", changed)
	}
	s.waitSucceeded(t, env["WARREN_TOKEN"], id, jobTimeout)

	// SIGTERM to the process only, as `kill -TERM <pid of make>` reaches it.
	t0 = time.Now()
	second.signal(t, syscall.SIGTERM)
	second.waitExit(t, syscall.SIGTERM)
	t.Logf("stopped by SIGTERM in %s", time.Since(t0).Round(time.Millisecond))
	s.checkNothingLeft(t)
	t.Logf("whole test: %s", time.Since(began).Round(time.Millisecond))
}

// stack is one isolated `make run` configuration: its own data directory, env
// file and ports.
type stack struct {
	root    string // the repository
	dataDir string
	envFile string
	ports   map[string]int // WARREN_*_PORT → port
	env     []string
	client  *http.Client
}

// newStack prepares a stack; env adds settings for run.sh (NAME=value).
func newStack(t *testing.T, env ...string) *stack {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "deploy", "run.sh")); err != nil {
		t.Fatalf("deploy/run.sh not found from %s: %v", root, err)
	}
	dir := t.TempDir()
	// Postgres runs as an unprivileged user that must reach its data directory.
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	s := &stack{
		root:    root,
		dataDir: filepath.Join(dir, "data"),
		envFile: filepath.Join(dir, "env"),
		ports:   freePorts(t),
		client:  &http.Client{Timeout: 5 * time.Second},
	}
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if inherited(name) {
			s.env = append(s.env, kv)
		}
	}
	s.env = append(s.env,
		"WARREN_DATA_DIR="+s.dataDir,
		"WARREN_ENV_FILE="+s.envFile,
		"WARREN_SHARDS=2",
		// The scheduler runs the workers (make run's default); at most two, on
		// the ports freePorts checked for worker.1 and worker.2.
		"WARREN_AUTOSCALE_MAX=2",
	)
	for name, p := range s.ports {
		s.env = append(s.env, name+"="+strconv.Itoa(p))
	}
	s.env = append(s.env, env...)
	// Registered first, so it runs last: after every run.sh is stopped, make sure
	// a failed test leaves no services behind either.
	t.Cleanup(func() { s.sweep(t) })
	return s
}

// inherited reports whether the test passes the variable on to run.sh: not the
// settings of `make test`'s own services, nor any service URL.
func inherited(name string) bool {
	switch {
	case strings.HasPrefix(name, "WARREN_"), strings.HasPrefix(name, "DATABASE_"),
		strings.HasPrefix(name, "RABBITMQ_"), strings.HasPrefix(name, "REDIS_"),
		name == "CLOUDAMQP_URL", name == "PORT":
		return false
	}
	return true
}

// freePorts picks a free port for each service and a web base port with room for
// the default formation: web.1, web.2 (base, base+1), the scheduler's two
// workers at most (base+100, +101) and scheduler.1 (base+200). The ports lie below the kernel's
// ephemeral range, so that no outgoing connection takes one of them as its local
// port between this check and the moment a service binds it.
func freePorts(t *testing.T) map[string]int {
	t.Helper()
	lo, hi := 10000, ephemeralLow()-300
	if hi-lo < 1000 {
		t.Fatalf("no room for test ports below the ephemeral range (net.ipv4.ip_local_port_range starts at %d)", hi+300)
	}
	var held []net.Listener
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	grab := func(port int) bool {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			return false
		}
		held = append(held, l)
		return true
	}
	pick := func(room int) (int, bool) {
		for range 200 {
			p := lo + rand.IntN(hi-lo)
			if grab(p) {
				for _, off := range []int{1, 100, 101, 200}[:room] {
					if !grab(p + off) {
						return 0, false
					}
				}
				return p, true
			}
		}
		return 0, false
	}
	ports := map[string]int{}
	for _, name := range []string{"WARREN_PG_PORT", "WARREN_AMQP_PORT", "WARREN_AMQP_MGMT_PORT",
		"WARREN_AMQP_DIST_PORT", "WARREN_EPMD_PORT", "WARREN_REDIS_PORT", "WARREN_HTTP_PORT"} {
		p, ok := pick(0)
		if !ok {
			t.Fatalf("found no free port for %s", name)
		}
		ports[name] = p
	}
	for range 50 {
		if p, ok := pick(4); ok {
			ports["WARREN_WEB_PORT"] = p
			return ports
		}
	}
	t.Fatal("found no free web base port with base+1, +100, +101 and +200 free")
	return nil
}

// ephemeralLow is the first port the kernel hands out to outgoing connections.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 32768
	}
	n, err := strconv.Atoi(f[0])
	if err != nil {
		return 32768
	}
	return n
}

// webPorts and allPorts are where the default formation listens.
func (s *stack) webPorts() []int {
	b := s.ports["WARREN_WEB_PORT"]
	return []int{b, b + 1}
}

func (s *stack) allPorts() map[string]int {
	all := map[string]int{}
	for k, v := range s.ports {
		all[k] = v
	}
	b := s.ports["WARREN_WEB_PORT"]
	for name, p := range map[string]int{"web.1": b, "web.2": b + 1, "worker.1": b + 100, "worker.2": b + 101, "scheduler.1": b + 200} {
		all[name] = p
	}
	return all
}

func (s *stack) url(port int, path string) string {
	return fmt.Sprintf("http://127.0.0.1:%d%s", port, path)
}

// run is one deploy/run.sh process, in its own process group as a shell would
// start `make run`.
type run struct {
	cmd  *exec.Cmd
	out  *proctest.Buffer
	done chan struct{}
	err  error // valid once done is closed
}

func (s *stack) command(out *proctest.Buffer) *exec.Cmd {
	cmd := exec.Command(filepath.Join(s.root, "deploy", "run.sh"))
	cmd.Dir = s.root
	cmd.Env = s.env
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// Processes outliving run.sh would hold the output pipe; checkNothingLeft reports them.
	cmd.WaitDelay = 2 * time.Second
	return cmd
}

func (s *stack) start(t *testing.T) *run {
	t.Helper()
	r := &run{out: &proctest.Buffer{}, done: make(chan struct{})}
	r.cmd = s.command(r.out)
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("start deploy/run.sh: %v", err)
	}
	go func() {
		r.err = r.cmd.Wait()
		close(r.done)
	}()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("deploy/run.sh (pid %d) output, last lines:\n%s", r.cmd.Process.Pid, tail(r.out, 150))
		}
		r.stop(t)
	})
	return r
}

// stop ends a run the test did not stop itself: SIGTERM, then SIGKILL to its group.
func (r *run) stop(t *testing.T) {
	select {
	case <-r.done:
		return
	default:
	}
	t.Logf("stopping deploy/run.sh (pid %d) left running by the failed test", r.cmd.Process.Pid)
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(stopTimeout):
		_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
		<-r.done
	}
}

func (r *run) exited() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

func (r *run) waitReady(t *testing.T, s *stack) {
	t.Helper()
	ready := stacktest.Until(readyTimeout, func() bool {
		return r.exited() || s.status(t, s.ports["WARREN_HTTP_PORT"], "/readyz") == http.StatusOK
	})
	switch {
	case r.exited():
		t.Fatalf("deploy/run.sh exited before the stack was ready: %v", r.err)
	case !ready:
		t.Fatalf("HAProxy on port %d did not answer /readyz with 200 within %s", s.ports["WARREN_HTTP_PORT"], readyTimeout)
	}
}

func (r *run) signalGroup(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := syscall.Kill(-r.cmd.Process.Pid, sig); err != nil {
		t.Fatalf("signal %v to process group %d: %v", sig, r.cmd.Process.Pid, err)
	}
}

func (r *run) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := r.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v to pid %d: %v", sig, r.cmd.Process.Pid, err)
	}
}

// waitExit waits for run.sh to finish stopping the stack; it dies of the signal
// it was stopped with, as an interrupted command should.
func (r *run) waitExit(t *testing.T, sig syscall.Signal) {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(stopTimeout):
		t.Fatalf("deploy/run.sh did not exit within %s of %v", stopTimeout, sig)
	}
	var ee *exec.ExitError
	if !errors.As(r.err, &ee) {
		t.Fatalf("deploy/run.sh after %v: %v, want death by the signal", sig, r.err)
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() || ws.Signal() != sig {
		t.Errorf("deploy/run.sh after %v: %v, want death by the signal", sig, r.err)
	}
	if !strings.Contains(r.out.String(), "run: stopped") {
		t.Errorf("deploy/run.sh did not report that it stopped the stack")
	}
}

func (s *stack) checkSecondRunRefused(t *testing.T, firstPid int) {
	t.Helper()
	out := &proctest.Buffer{}
	cmd := s.command(out)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(refuseTimeout):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		t.Fatalf("a second deploy/run.sh did not give up within %s:\n%s", refuseTimeout, tail(out, 40))
	}
	if err == nil {
		t.Fatalf("a second deploy/run.sh exited 0, want an error:\n%s", out)
	}
	msg := out.String()
	if !strings.Contains(msg, "already running") || !strings.Contains(msg, strconv.Itoa(firstPid)) {
		t.Errorf("a second deploy/run.sh said %q; want it to say a stack is already running, with pid %d", msg, firstPid)
	}
}

// checkEnvFile checks the generated env file and returns its settings.
func (s *stack) checkEnvFile(t *testing.T) map[string]string {
	t.Helper()
	fi, err := os.Stat(s.envFile)
	if err != nil {
		t.Fatalf("env file: %v", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("env file mode %v: it holds secrets, want it readable by its owner only", fi.Mode().Perm())
	}
	env := parseEnv(t, s.envFile)
	for _, k := range []string{"DATABASE_URLS", "RABBITMQ_URL", "REDIS_URL", "WARREN_API_TOKENS", "WARREN_TOKEN"} {
		if env[k] == "" {
			t.Errorf("env file has no %s", k)
		}
	}
	if n := len(strings.Split(env["DATABASE_URLS"], ",")); n != 2 {
		t.Errorf("DATABASE_URLS lists %d shards, want 2", n)
	}
	if want := "default:" + env["WARREN_TOKEN"]; env["WARREN_API_TOKENS"] != want || len(env["WARREN_TOKEN"]) < 16 {
		t.Errorf("WARREN_API_TOKENS = %q, WARREN_TOKEN = %q; want default:<token> with the same token of 16+ characters",
			env["WARREN_API_TOKENS"], env["WARREN_TOKEN"])
	}
	// The user's way: `source .env` in bash must give the same values.
	out, err := exec.Command("bash", "-c", `set -a && . "$1" && printf '%s\n' "$WARREN_TOKEN" "$DATABASE_URLS"`, "bash", s.envFile).Output()
	if err != nil {
		t.Fatalf("bash: source env file: %v", err)
	}
	if got, want := string(out), env["WARREN_TOKEN"]+"\n"+env["DATABASE_URLS"]+"\n"; got != want {
		t.Errorf("source env file gives %q, want %q", got, want)
	}
	return env
}

// parseEnv reads KEY=value lines as foreman does. run.sh writes plain values,
// and single-quotes only a value with characters a shell would read otherwise
// (a service URL of your own with '&' in its query): anything else is an error.
func parseEnv(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if q, found := strings.CutPrefix(v, "'"); found && strings.HasSuffix(q, "'") && len(q) > 0 {
			v = strings.TrimSuffix(q, "'")
			if strings.Contains(v, "'") {
				ok = false
			}
		} else if strings.ContainsAny(v, `'" `) {
			ok = false
		}
		if !ok {
			t.Errorf("env file line %q is not a plain KEY=value line", line)
			continue
		}
		env[k] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return env
}

// status returns the status of GET path on 127.0.0.1:port, 0 when it does not answer.
func (s *stack) status(t *testing.T, port int, path string) int {
	t.Helper()
	resp, err := s.client.Get(s.url(port, path))
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

type jobView struct {
	ID     string          `json:"id"`
	State  string          `json:"state"`
	Result json.RawMessage `json:"result"`
}

func (s *stack) do(t *testing.T, method, path, token string, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, s.url(s.ports["WARREN_HTTP_PORT"], path), bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp.StatusCode, buf.Bytes()
}

func (s *stack) submitEcho(t *testing.T, token string) string {
	t.Helper()
	code, body := s.do(t, http.MethodPost, "/v1/jobs", token, []byte(`{"type":"echo","payload":{"hello":"world"}}`))
	if code != http.StatusAccepted {
		t.Fatalf("POST /v1/jobs = %d %s, want 202", code, body)
	}
	var j jobView
	if err := json.Unmarshal(body, &j); err != nil {
		t.Fatalf("POST /v1/jobs: %v in %s", err, body)
	}
	if j.ID == "" || j.State != "queued" {
		t.Fatalf("POST /v1/jobs: id %q, state %q; want an id and state queued (%s)", j.ID, j.State, body)
	}
	return j.ID
}

func (s *stack) waitSucceeded(t *testing.T, token, id string, timeout time.Duration) {
	t.Helper()
	var (
		code int
		body []byte
		j    jobView
	)
	if !stacktest.Until(timeout, func() bool {
		code, body = s.do(t, http.MethodGet, "/v1/jobs/"+id, token, nil)
		j = jobView{}
		return code == http.StatusOK && json.Unmarshal(body, &j) == nil && j.State == "succeeded"
	}) {
		t.Fatalf("job %s not succeeded within %s; last GET: %d %s", id, timeout, code, body)
	}
	var got any
	if err := json.Unmarshal(j.Result, &got); err != nil || !reflect.DeepEqual(got, map[string]any{"hello": "world"}) {
		t.Fatalf("job %s succeeded with result %s, want {\"hello\":\"world\"}", id, j.Result)
	}
}

// checkNothingLeft asserts that no port of the stack is bound and no process
// refers to its data directory (services, epmd, HAProxy, foreman and the Procfile
// processes all carry it in their command line or environment).
func (s *stack) checkNothingLeft(t *testing.T) {
	t.Helper()
	var bound, procs []string
	if !stacktest.Until(goneTimeout, func() bool {
		bound, procs = s.leftovers()
		return len(bound) == 0 && len(procs) == 0
	}) {
		t.Fatalf("after deploy/run.sh exited: ports still accepting connections: %v; processes still running: %v", bound, procs)
	}
}

func (s *stack) leftovers() (bound []string, procs []string) {
	for name, p := range s.allPorts() {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", p), 500*time.Millisecond)
		if err == nil {
			c.Close()
			bound = append(bound, fmt.Sprintf("%s=%d", name, p))
		}
	}
	return bound, processesReferring(s.dataDir)
}

// processesReferring lists "pid command" of the processes whose command line or
// environment contains path.
func processesReferring(path string) []string {
	entries, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		environ, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if bytes.Contains(cmdline, []byte(path)) || bytes.Contains(environ, []byte(path)) {
			out = append(out, fmt.Sprintf("%d %s", pid, bytes.ReplaceAll(bytes.TrimRight(cmdline, "\x00"), []byte{0}, []byte{' '})))
		}
	}
	return out
}

// sweep runs last: if a failed test left services behind, stop them and kill
// whatever still refers to the data directory.
func (s *stack) sweep(t *testing.T) {
	if _, procs := s.leftovers(); len(procs) == 0 {
		return
	}
	t.Logf("cleaning up after the test: deploy/services.sh stop")
	cmd := exec.Command(filepath.Join(s.root, "deploy", "services.sh"), "stop")
	cmd.Dir = s.root
	cmd.Env = s.env
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Logf("deploy/services.sh stop: %v\n%s", err, out)
	}
	for _, p := range processesReferring(s.dataDir) {
		pidText, _, _ := strings.Cut(p, " ")
		if pid, err := strconv.Atoi(pidText); err == nil {
			t.Logf("killing leftover process %s", p)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// changedKeys names the settings that differ, without showing their secret values.
func changedKeys(before, after map[string]string) []string {
	var changed []string
	for k, v := range before {
		if after[k] != v {
			changed = append(changed, k)
		}
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			changed = append(changed, k)
		}
	}
	slices.Sort(changed)
	return changed
}

// tail returns the last n lines of a process's output.
func tail(out *proctest.Buffer, n int) string {
	lines := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
