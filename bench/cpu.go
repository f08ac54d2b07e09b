package bench

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jmoiron/sqlx"
)

// Usage is where a phase's time went: the CPU of every process on the
// machine, by program, and Postgres's write-ahead log, over the phase's
// window: from just before its first submit until its jobs have finished.
type Usage struct {
	// Seconds is the window's wall-clock length, Jobs the jobs it ran.
	Seconds float64 `json:"seconds"`
	Jobs    int     `json:"jobs"`
	// CPUSeconds is the CPU of all programs; MachineBusy is that as a
	// fraction of the machine (Seconds × CPUs).
	CPUSeconds  float64 `json:"cpu_seconds"`
	CPUMsPerJob float64 `json:"cpu_ms_per_job"`
	MachineBusy float64 `json:"machine_busy"`
	// Programs are those with a process alive at some point of the window,
	// in the order of programNames.
	Programs []ProgramCPU `json:"programs"`
	Postgres PostgresWAL  `json:"postgres"`
}

// ProgramCPU is one program's CPU (utime+stime of its processes) over a window.
type ProgramCPU struct {
	Program    string  `json:"program"`
	Processes  int     `json:"processes"`
	CPUSeconds float64 `json:"cpu_seconds"`
	// Share is CPUSeconds as a fraction of the machine (Seconds × CPUs).
	Share    float64 `json:"share_of_machine"`
	MsPerJob float64 `json:"cpu_ms_per_job"`
}

// PostgresWAL is Postgres's write-ahead log and commits per job over a
// window, summed over the distinct servers of the shards. The counters are
// server-wide (every database, every client) and each backend publishes
// its own at most once a second, so a short window can be off by up to a
// second's worth at each end.
type PostgresWAL struct {
	// NotMeasured says why the figures are missing; empty when measured.
	NotMeasured      string  `json:"not_measured,omitempty"`
	Servers          int     `json:"servers"`
	WALRecordsPerJob float64 `json:"wal_records_per_job"`
	WALBytesPerJob   float64 `json:"wal_bytes_per_job"`
	// WALFlushesPerJob is pg_stat_wal.wal_sync: fsyncs of WAL files.
	WALFlushesPerJob float64 `json:"wal_flushes_per_job"`
	CommitsPerJob    float64 `json:"commits_per_job"`
}

// programNames are the programs CPU is reported under, in report order.
var programNames = [...]string{"postgres", "rabbitmq", "workers", "api", "scheduler", "haproxy", "redis", "warren-bench", "other"}

// program names the program a process belongs to by its command name.
func program(comm string) string {
	switch comm {
	case "api", "workers", "scheduler", "haproxy":
		return comm
	case "redis-server":
		return "redis"
	case "beam.smp", "erl_child_setup", "epmd", "inet_gethost":
		return "rabbitmq"
	}
	if strings.HasPrefix(comm, "postgres") {
		return "postgres"
	}
	return "other"
}

// clockTicks is the unit of utime and stime in /proc/PID/stat: USER_HZ,
// which Linux fixes at 100 on every architecture Go supports (reading it
// with sysconf(_SC_CLK_TCK) would need cgo).
const clockTicks = 100

// proc names a process across pid reuse: its pid and its start time.
type proc struct {
	pid   int
	start uint64
}

// procCPU is a process's CPU time when last seen.
type procCPU struct {
	program string
	ticks   uint64 // utime+stime
	gen     int    // the sample it was last seen in
}

// cpuWatch keeps the last CPU time of every process on the machine. It is
// sampled at each end of a window and, through memWatch, every 250 ms, so a
// process that exits mid-window counts up to its last sample (losing at
// most 250 ms of its CPU); one that starts and exits between two samples is
// not seen at all. A process that starts mid-window counts all its CPU.
type cpuWatch struct {
	self  int
	mu    sync.Mutex
	gen   int
	procs map[proc]procCPU
	buf   []byte // for reading stat files
}

func newCPUWatch() *cpuWatch {
	return &cpuWatch{self: os.Getpid(), procs: map[proc]procCPU{}, buf: make([]byte, 4096)}
}

func (w *cpuWatch) sample() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.sampleLocked()
}

func (w *cpuWatch) sampleLocked() {
	w.gen++
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		b, err := readFile("/proc/"+d.Name()+"/stat", w.buf)
		if err != nil {
			continue // exited since the listing
		}
		comm, ticks, start, ok := parseStat(b)
		if !ok {
			continue
		}
		name := program(comm)
		if pid == w.self {
			name = "warren-bench"
		}
		w.procs[proc{pid, start}] = procCPU{program: name, ticks: ticks, gen: w.gen}
	}
}

// readFile reads a small file into buf with one read: a sample reads
// every process's stat file, and os.ReadFile's stat, poller and growing
// buffer made that cost 2.5 times as much CPU (4 ms for 130 processes).
func readFile(path string, buf []byte) ([]byte, error) {
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	defer syscall.Close(fd)
	n, err := syscall.Read(fd, buf)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return buf[:n], nil
}

// snapshot samples every process and returns the CPU time of those alive
// now and of those that exited since the previous snapshot (as last seen);
// it then forgets the exited ones, which no later window can count.
func (w *cpuWatch) snapshot() map[proc]procCPU {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.sampleLocked()
	out := maps.Clone(w.procs)
	maps.DeleteFunc(w.procs, func(_ proc, p procCPU) bool { return p.gen != w.gen })
	return out
}

// parseStat reads a /proc/PID/stat line: the command name (field 2, in
// parentheses, the same as /proc/PID/comm, and itself possibly holding
// spaces and parentheses), utime+stime (fields 14 and 15) and the start
// time (field 22), both in clock ticks.
func parseStat(b []byte) (comm string, ticks, start uint64, ok bool) {
	s := string(b)
	lp, rp := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if lp < 0 || rp < lp {
		return "", 0, 0, false
	}
	f := strings.Fields(s[rp+1:]) // f[0] is field 3
	var v [3]uint64
	for i, n := range [3]int{14, 15, 22} {
		if n-3 >= len(f) {
			return "", 0, 0, false
		}
		x, err := strconv.ParseUint(f[n-3], 10, 64)
		if err != nil {
			return "", 0, 0, false
		}
		v[i] = x
	}
	return s[lp+1 : rp], v[0] + v[1], v[2], true
}

// pgCounters are Postgres's server-wide WAL and commit counters.
type pgCounters struct {
	walRecords, walBytes, walSync, commits int64
}

// pgServers are the distinct Postgres servers behind the shards.
type pgServers []*sqlx.DB

// openPG opens one pool per server: shard URLs with the same host:port are
// one server, whose counters already cover all its databases. A URL that
// does not parse counts as a server of its own.
func openPG(urls []string) (pgServers, error) {
	var s pgServers
	seen := map[string]bool{}
	for _, u := range urls {
		key := serverKey(u)
		if seen[key] {
			continue
		}
		seen[key] = true
		db, err := sqlx.Open("postgres", u)
		if err != nil {
			s.close()
			return nil, fmt.Errorf("opening %s: %w", key, err)
		}
		db.SetMaxOpenConns(1)
		s = append(s, db)
	}
	return s, nil
}

// serverKey is the host:port of a Postgres URL, or the URL itself when it
// has none.
func serverKey(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Hostname() == "" {
		return raw
	}
	port := u.Port()
	if port == "" {
		port = "5432"
	}
	return net.JoinHostPort(u.Hostname(), port)
}

func (s pgServers) close() {
	for _, db := range s {
		_ = db.Close()
	}
}

// read sums the counters over the servers. The read is itself one commit
// per server.
func (s pgServers) read(ctx context.Context) (pgCounters, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var sum pgCounters
	for _, db := range s {
		var c pgCounters
		err := db.QueryRowContext(ctx, `SELECT wal_records, wal_bytes, wal_sync,
			(SELECT sum(xact_commit) FROM pg_stat_database) FROM pg_stat_wal`).
			Scan(&c.walRecords, &c.walBytes, &c.walSync, &c.commits)
		if err != nil {
			return pgCounters{}, fmt.Errorf("reading pg_stat_wal and pg_stat_database: %w", err)
		}
		sum.walRecords += c.walRecords
		sum.walBytes += c.walBytes
		sum.walSync += c.walSync
		sum.commits += c.commits
	}
	return sum, nil
}

// meter measures the phases' windows.
type meter struct {
	cpu  *cpuWatch
	pg   pgServers
	pgNo error // why Postgres is not measured, if it is not
	cpus int
}

func newMeter(cpu *cpuWatch, databaseURLs []string) *meter {
	m := &meter{cpu: cpu, cpus: runtime.NumCPU()}
	if len(databaseURLs) == 0 {
		m.pgNo = errors.New("DATABASE_URLS is not set")
		return m
	}
	m.pg, m.pgNo = openPG(databaseURLs)
	return m
}

func (m *meter) close() { m.pg.close() }

// window is one phase's measurement under way.
type window struct {
	m     *meter
	at    time.Time
	cpu   map[proc]procCPU
	pg    pgCounters
	pgErr error
}

// begin starts a window. Postgres is read before the CPU, and after it at
// the end, so that the reads' own CPU falls outside the window.
func (m *meter) begin(ctx context.Context) *window {
	w := &window{m: m, pgErr: m.pgNo}
	if w.pgErr == nil {
		w.pg, w.pgErr = m.pg.read(ctx)
	}
	w.cpu = m.cpu.snapshot()
	w.at = time.Now()
	return w
}

// end closes the window and reports it per job. It never fails: Postgres
// figures that cannot be read are reported as not measured.
func (w *window) end(ctx context.Context, jobs int) *Usage {
	after := w.m.cpu.snapshot()
	elapsed := time.Since(w.at).Seconds()
	machine := elapsed * float64(w.m.cpus)
	u := &Usage{Seconds: elapsed, Jobs: jobs}

	ticks := map[string]uint64{}
	procs := map[string]int{}
	for k, p := range after {
		// A process missing from before started in the window: all its
		// CPU is the window's.
		if b := w.cpu[k]; p.ticks >= b.ticks {
			ticks[p.program] += p.ticks - b.ticks
		}
		procs[p.program]++
	}
	for _, name := range programNames {
		if procs[name] == 0 {
			continue
		}
		sec := float64(ticks[name]) / clockTicks
		u.CPUSeconds += sec
		u.Programs = append(u.Programs, ProgramCPU{
			Program: name, Processes: procs[name], CPUSeconds: sec,
			Share: ratio(sec, machine), MsPerJob: ratio(1000*sec, float64(jobs)),
		})
	}
	u.CPUMsPerJob = ratio(1000*u.CPUSeconds, float64(jobs))
	u.MachineBusy = ratio(u.CPUSeconds, machine)

	pg := &u.Postgres
	if w.pgErr != nil {
		pg.NotMeasured = w.pgErr.Error()
		return u
	}
	c, err := w.m.pg.read(ctx)
	if err != nil {
		pg.NotMeasured = err.Error()
		return u
	}
	d := pgCounters{c.walRecords - w.pg.walRecords, c.walBytes - w.pg.walBytes, c.walSync - w.pg.walSync, c.commits - w.pg.commits}
	if d.walRecords < 0 || d.walBytes < 0 || d.walSync < 0 || d.commits < 0 {
		pg.NotMeasured = "the counters went back during the phase (reset, or a server restarted)"
		return u
	}
	n := float64(jobs)
	pg.Servers = len(w.m.pg)
	pg.WALRecordsPerJob = ratio(float64(d.walRecords), n)
	pg.WALBytesPerJob = ratio(float64(d.walBytes), n)
	pg.WALFlushesPerJob = ratio(float64(d.walSync), n)
	pg.CommitsPerJob = ratio(float64(d.commits), n)
	return u
}

// ratio is a/b, or 0 when b is not positive (JSON has no infinity).
func ratio(a, b float64) float64 {
	if b <= 0 {
		return 0
	}
	return a / b
}
