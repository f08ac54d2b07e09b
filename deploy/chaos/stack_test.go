//go:build chaos

package chaos

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq" // the "postgres" driver

	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/proctest"
)

// The suite's own ports (17xxx) and data directory, apart from `make run`'s
// and `make test`'s.
const (
	dataDir     = ".data/chaossvc"
	pgPortBase  = 17432 // shard i's Postgres server listens on pgPortBase+i
	amqpPort    = 17672
	mgmtPort    = 17673
	distPort    = 17674
	epmdPort    = 17675
	redisPort   = 17379
	httpPort    = 17080 // HAProxy, the clients' only door
	apiPortBase = 17001 // api.1, api.2
	wrkPortBase = 17101 // worker.1, worker.2 (metrics)
	schPortBase = 17201 // scheduler.1, scheduler.2 (metrics)
	shards      = 2
	namespace   = "chaos"
	token       = "chaos-token-0123456789abcdef0123"
	// lease is the workers' lease: a killed worker's job is reaped this long
	// after its last renewal (the minimum Warren accepts).
	lease = 3 * time.Second
)

// stack is the suite's Warren: services, HAProxy, and the processes by slot
// ("api.1", "worker.2", …). Every process ever started is kept, so that the
// logs of killed workers can be read.
type stack struct {
	root      string // the repository
	data      string // absolute dataDir
	logs      string
	svc       map[string]string // RabbitMQ and Redis URLs
	shardURLs []string
	dbs       []*sqlx.DB
	env       []string

	mu      sync.Mutex
	slots   map[string]*proc
	all     []*proc
	haproxy *proc
}

// proc is one Warren (or HAProxy) process with its log file.
type proc struct {
	slot    string
	port    int
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error
	killed  bool
}

func (p *proc) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// newStack starts everything, registering cleanup on t first so that a
// failure halfway still stops what was started.
func newStack(t *testing.T) *stack {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	s := &stack{root: root, data: filepath.Join(root, dataDir), slots: map[string]*proc{}}
	s.logs = filepath.Join(s.data, "logs")
	t.Cleanup(func() { s.stop(t) })

	// A run killed hard may have left services behind: stop them, then
	// start from empty data, so every run starts alike.
	s.servicesAll(t, "stop")
	if err := os.RemoveAll(s.data); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(s.logs, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, port := range s.ports() {
		if !portFree(port) {
			t.Fatalf("port %d is in use: the chaos suite needs 17xxx ports to itself (is another make chaos running?)", port)
		}
	}
	begin := time.Now()
	s.servicesAll(t, "start")
	s.svc = readEnv(t, filepath.Join(s.data, "services.env"))
	for i := range shards {
		env := readEnv(t, filepath.Join(s.pgDir(i), "services.env"))
		s.shardURLs = append(s.shardURLs, env["DATABASE_URLS"])
		db, err := sqlx.Open("postgres", env["DATABASE_URLS"])
		if err != nil {
			t.Fatal(err)
		}
		db.SetMaxOpenConns(4)
		s.dbs = append(s.dbs, db)
	}
	t.Logf("services up in %s", time.Since(begin).Round(time.Millisecond))

	s.env = []string{
		"PATH=" + os.Getenv("PATH"),
		"DATABASE_URLS=" + strings.Join(s.shardURLs, ","),
		"RABBITMQ_URL=" + s.svc["RABBITMQ_URL"],
		"REDIS_URL=" + s.svc["REDIS_URL"],
		"WARREN_NAMESPACE=" + namespace,
		"WARREN_API_TOKENS=default:" + token,
		"WARREN_AUTOSCALE=off",
	}
	bin := proctest.Dir(t)
	migrate := exec.Command(filepath.Join(bin, "scheduler"), "migrate")
	migrate.Env = s.env
	if out, err := migrate.CombinedOutput(); err != nil {
		t.Fatalf("scheduler migrate: %v\n%s", err, out)
	}

	for i := 1; i <= 2; i++ {
		s.start(t, "scheduler", i)
		s.start(t, "worker", i)
		s.start(t, "api", i)
	}
	for i := 1; i <= 2; i++ {
		s.waitReady(t, apiPortBase+i-1)
	}
	s.startHAProxy(t)
	s.waitReady(t, httpPort)
	waitFor(t, 30*time.Second, "a leading scheduler", func() bool { return s.leader() != "" })
	t.Logf("stack up in %s: HAProxy on 127.0.0.1:%d → 2 api; 2 workers; 2 schedulers (%s leads)",
		time.Since(begin).Round(time.Millisecond), httpPort, s.leader())
	return s
}

func (s *stack) ports() []int {
	ports := []int{amqpPort, mgmtPort, distPort, epmdPort, redisPort, httpPort}
	for i := range shards {
		ports = append(ports, pgPortBase+i)
	}
	for i := range 2 {
		ports = append(ports, apiPortBase+i, wrkPortBase+i, schPortBase+i)
	}
	return ports
}

func (s *stack) pgDir(i int) string { return filepath.Join(s.data, fmt.Sprintf("pg%d", i)) }

// services runs deploy/services.sh ACTION for a subset of the services.
func (s *stack) services(t *testing.T, action, which string, shard int) {
	t.Helper()
	if err := s.servicesCmd(action, which, shard); err != nil {
		t.Fatal(err)
	}
}

// servicesCmd runs deploy/services.sh ACTION for "postgres" (one shard's
// server, in its own data directory) or for "rabbitmq", "redis" or both.
func (s *stack) servicesCmd(action, which string, shard int) error {
	env := append(os.Environ(),
		"WARREN_SERVICES="+which,
		"WARREN_AMQP_PORT="+strconv.Itoa(amqpPort),
		"WARREN_AMQP_MGMT_PORT="+strconv.Itoa(mgmtPort),
		"WARREN_AMQP_DIST_PORT="+strconv.Itoa(distPort),
		"WARREN_EPMD_PORT="+strconv.Itoa(epmdPort),
		"WARREN_REDIS_PORT="+strconv.Itoa(redisPort),
	)
	if which == "postgres" {
		env = append(env, "WARREN_DATA_DIR="+s.pgDir(shard), "WARREN_SHARDS=1", "WARREN_PG_PORT="+strconv.Itoa(pgPortBase+shard))
	} else {
		env = append(env, "WARREN_DATA_DIR="+s.data)
	}
	cmd := exec.Command(filepath.Join(s.root, "deploy", "services.sh"), action)
	cmd.Dir, cmd.Env = s.root, env
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("services.sh %s (%s): %w\n%s", action, which, err, out)
	}
	return nil
}

// servicesAll starts or stops RabbitMQ, Redis and every shard's Postgres,
// in parallel.
func (s *stack) servicesAll(t *testing.T, action string) {
	t.Helper()
	if _, err := os.Stat(s.data); action == "stop" && errors.Is(err, os.ErrNotExist) {
		return
	}
	var wg sync.WaitGroup
	errs := make([]error, shards+1)
	wg.Go(func() { errs[shards] = s.servicesCmd(action, "rabbitmq,redis", 0) })
	for i := range shards {
		if _, err := os.Stat(s.pgDir(i)); action == "stop" && err != nil {
			continue
		}
		wg.Go(func() { errs[i] = s.servicesCmd(action, "postgres", i) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		if action == "start" {
			t.Fatal(err)
		}
		t.Error(err)
	}
}

// start runs process kind ("api", "worker", "scheduler") in slot i, with a
// log file of its own (a restarted slot gets a new file).
func (s *stack) start(t *testing.T, kind string, i int) *proc {
	t.Helper()
	slot := fmt.Sprintf("%s.%d", kind, i)
	bin, base, extra := "api", apiPortBase, []string(nil)
	switch kind {
	case "worker":
		bin, base = "workers", wrkPortBase
		// debug: the worker logs each attempt it starts, which the checker counts.
		extra = []string{"WARREN_LOG_LEVEL=debug", "WARREN_LEASE=" + lease.String(), "WARREN_SHUTDOWN_GRACE=5s"}
	case "scheduler":
		bin, base = "scheduler", schPortBase
	}
	s.mu.Lock()
	gen := 0
	for _, p := range s.all {
		if p.slot == slot {
			gen++
		}
	}
	s.mu.Unlock()
	p := &proc{slot: slot, port: base + i - 1, done: make(chan struct{}),
		logPath: filepath.Join(s.logs, fmt.Sprintf("%s.%d.log", slot, gen))}
	p.cmd = exec.Command(filepath.Join(proctest.Dir(t), bin))
	p.cmd.Env = append(append(slices.Clone(s.env), "PORT="+strconv.Itoa(p.port)), extra...)
	s.run(t, p)
	s.mu.Lock()
	s.slots[slot] = p
	s.all = append(s.all, p)
	s.mu.Unlock()
	return p
}

// run starts p's command with its output in its log file. The process dies
// with the test binary should the test be killed.
func (s *stack) run(t *testing.T, p *proc) {
	t.Helper()
	f, err := os.Create(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stdout, p.cmd.Stderr = f, f
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", p.slot, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		f.Close()
		close(p.done)
	}()
}

// kill SIGKILLs the process in slot and waits until it is gone.
func (s *stack) kill(t *testing.T, slot string) (*proc, time.Time) {
	t.Helper()
	s.mu.Lock()
	p := s.slots[slot]
	s.mu.Unlock()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("kill %s: %v", slot, err)
	}
	at := time.Now()
	p.killed = true
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s outlived SIGKILL by 10s", slot)
	}
	return p, at
}

func (s *stack) proc(slot string) *proc {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.slots[slot]
}

// workerLogs returns every worker process's log parsed, by log path.
func (s *stack) workerLogs(t *testing.T) map[*proc]map[string]*Attempts {
	t.Helper()
	s.mu.Lock()
	procs := slices.Clone(s.all)
	s.mu.Unlock()
	out := map[*proc]map[string]*Attempts{}
	for _, p := range procs {
		if !strings.HasPrefix(p.slot, "worker.") {
			continue
		}
		f, err := os.Open(p.logPath)
		if err != nil {
			t.Fatal(err)
		}
		l, err := ParseWorkerLog(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", p.logPath, err)
		}
		out[p] = l
	}
	return out
}

var workerIDField = regexp.MustCompile(`msg="worker running".*\bworker_id=(\S+)`)

// workerID reads the id a worker process logged when it began to run.
func (p *proc) workerID() string {
	f, err := os.Open(p.logPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		if m := workerIDField.FindStringSubmatch(sc.Text()); m != nil {
			return m[1]
		}
	}
	return ""
}

// startHAProxy writes the suite's HAProxy config and runs it: health checks
// on /readyz every 500ms, down after two failures, connection failures
// retried on the other api: run.sh's, with shorter intervals.
func (s *stack) startHAProxy(t *testing.T) {
	t.Helper()
	cfg := filepath.Join(s.data, "haproxy.cfg")
	var b strings.Builder
	fmt.Fprintf(&b, `# Generated by the chaos suite (deploy/chaos); rewritten on every run.
global
    log stdout format raw local0 info
    hard-stop-after 5s

defaults
    mode http
    log global
    option httplog
    option dontlog-normal
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    timeout http-request 10s
    timeout check 2s                # /readyz answers within 1s
    retries 3
    retry-on conn-failure
    option redispatch 1

frontend http
    bind 127.0.0.1:%d
    default_backend web

backend web
    balance roundrobin
    option httpchk
    http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host localhost
    http-check expect status 200
    default-server check inter 500ms fastinter 250ms downinter 500ms rise 2 fall 2
`, httpPort)
	for i := range 2 {
		fmt.Fprintf(&b, "    server api.%d 127.0.0.1:%d\n", i+1, apiPortBase+i)
	}
	if err := os.WriteFile(cfg, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	p := &proc{slot: "haproxy", port: httpPort, done: make(chan struct{}), logPath: filepath.Join(s.logs, "haproxy.log")}
	p.cmd = exec.Command("haproxy", "-db", "-f", cfg)
	s.run(t, p)
	s.haproxy = p
}

// waitReady waits until 127.0.0.1:port answers /readyz with 200.
func (s *stack) waitReady(t *testing.T, port int) {
	t.Helper()
	waitFor(t, 60*time.Second, fmt.Sprintf("/readyz on port %d", port), func() bool { return ready(port) })
}

func ready(port int) bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/readyz", port), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// leader returns the slot of the scheduler that reports leading, or "".
func (s *stack) leader() string {
	lead := ""
	for i := 1; i <= 2; i++ {
		slot := fmt.Sprintf("scheduler.%d", i)
		if p := s.proc(slot); p != nil && p.alive() {
			if v, err := metric(p.port, "warren_scheduler_leader"); err == nil && v == 1 {
				if lead != "" {
					return "" // two claim it: not settled
				}
				lead = slot
			}
		}
	}
	return lead
}

// metric reads an unlabelled metric from 127.0.0.1:port/metrics.
func metric(port int, name string) (float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/metrics", port), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, fmt.Errorf("no metric %s on port %d", name, port)
}

// rows reads every job of a scenario from every shard.
func (s *stack) rows(ctx context.Context, scenario string) ([]Row, error) {
	var out []Row
	for i, db := range s.dbs {
		var rs []struct {
			ID         job.ID     `db:"id"`
			Type       string     `db:"type"`
			State      job.State  `db:"state"`
			Attempt    int        `db:"attempt"`
			Error      string     `db:"error"`
			FinishedAt *time.Time `db:"finished_at"`
		}
		err := db.SelectContext(ctx, &rs, `SELECT id, type, state, attempt, COALESCE(error, '') AS error, finished_at
			FROM jobs WHERE payload->>'chaos' = $1`, scenario)
		if err != nil {
			return nil, fmt.Errorf("shard %d: %w", i, err)
		}
		for _, r := range rs {
			row := Row{Shard: i, ID: r.ID.String(), Type: r.Type, State: r.State, Attempt: r.Attempt, Error: r.Error}
			if r.FinishedAt != nil {
				row.FinishedAt = *r.FinishedAt
			}
			out = append(out, row)
		}
	}
	return out, nil
}

// stop ends every process (SIGTERM, then SIGKILL) and stops the services.
func (s *stack) stop(t *testing.T) {
	s.mu.Lock()
	procs := slices.Clone(s.all)
	s.mu.Unlock()
	if s.haproxy != nil {
		procs = append(procs, s.haproxy)
	}
	for _, p := range procs {
		if p.alive() {
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	for _, p := range procs {
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
	for _, db := range s.dbs {
		_ = db.Close()
	}
	// A stalled service must be running again to stop.
	for _, pid := range s.servicePIDs() {
		_ = syscall.Kill(pid, syscall.SIGCONT)
	}
	s.servicesAll(t, "stop")
	for _, port := range s.ports() {
		if !portFree(port) {
			t.Errorf("port %d is still bound after the suite stopped", port)
		}
	}
}

// servicePIDs returns the processes of RabbitMQ and every shard's Postgres.
func (s *stack) servicePIDs() []int {
	var pids []int
	if pid, err := pidFile(filepath.Join(s.data, "rabbitmq", "rabbitmq.pid")); err == nil {
		pids = append(pids, pid)
	}
	for i := range shards {
		pids = append(pids, s.postgresPIDs(i)...)
	}
	return pids
}

// postgresPIDs returns a shard's postmaster and its children (each backend
// leads a session of its own, so a process group does not reach them).
func (s *stack) postgresPIDs(shard int) []int {
	pm, err := pidFile(filepath.Join(s.pgDir(shard), "postgres", "postmaster.pid"))
	if err != nil {
		return nil
	}
	pids := []int{pm}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid …: comm may hold spaces, so split after ')'.
		rest := string(b[strings.LastIndexByte(string(b), ')')+1:])
		f := strings.Fields(rest)
		if len(f) > 1 && f[1] == strconv.Itoa(pm) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// pidFile reads the pid on the first line of a pid file.
func pidFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return strconv.Atoi(strings.TrimSpace(line))
}

func readEnv(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for line := range strings.Lines(string(b)) {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok {
			env[k] = v
		}
	}
	return env
}

func portFree(port int) bool {
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
	if err != nil {
		return true
	}
	c.Close()
	return false
}

// waitFor polls cond every 100ms until it holds, failing the test after
// timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !poll(timeout, cond) {
		t.Fatalf("timed out after %s waiting for %s", timeout, what)
	}
}

// poll polls cond every 100ms until it holds (true) or timeout passes (false).
func poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
	return true
}
