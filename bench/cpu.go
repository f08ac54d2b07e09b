package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jmoiron/sqlx"
)

// Usage is where a phase's time went: the CPU of every process on the
// machine, by program, the time their threads spent runnable but waiting
// for a CPU, and Postgres's write-ahead log, over the phase's window: from
// just before its first submit until its jobs have finished.
type Usage struct {
	// Seconds is the window's wall-clock length, Jobs the jobs it ran.
	Seconds float64 `json:"seconds"`
	Jobs    int     `json:"jobs"`
	// CPUSeconds is the CPU of all programs; MachineBusy is that as a
	// fraction of the machine (Seconds × CPUs).
	CPUSeconds  float64 `json:"cpu_seconds"`
	CPUMsPerJob float64 `json:"cpu_ms_per_job"`
	MachineBusy float64 `json:"machine_busy"`
	// RunQueueSeconds is the time all programs' threads spent on a run
	// queue, runnable but waiting for a CPU (schedstat's run_delay), summed
	// over the threads: 2 threads waiting 1 s each are 2 s.
	// RunQueueNotMeasured says why it is missing; empty when measured.
	RunQueueSeconds     float64 `json:"run_queue_seconds"`
	RunQueueMsPerJob    float64 `json:"run_queue_ms_per_job"`
	RunQueueNotMeasured string  `json:"run_queue_not_measured,omitempty"`
	// Programs are those with a process alive at some point of the window,
	// in the order of programNames.
	Programs []ProgramCPU `json:"programs"`
	Postgres PostgresWAL  `json:"postgres"`
}

// ProgramCPU is one program's CPU (utime+stime of its processes) over a
// window, and its threads' run-queue wait (see Usage.RunQueueSeconds; zero
// when not measured).
type ProgramCPU struct {
	Program    string  `json:"program"`
	Processes  int     `json:"processes"`
	CPUSeconds float64 `json:"cpu_seconds"`
	// Share is CPUSeconds as a fraction of the machine (Seconds × CPUs).
	Share            float64 `json:"share_of_machine"`
	MsPerJob         float64 `json:"cpu_ms_per_job"`
	RunQueueSeconds  float64 `json:"run_queue_seconds"`
	RunQueueMsPerJob float64 `json:"run_queue_ms_per_job"`
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

// procCPU is a process's CPU time and its threads' run-queue wait when
// last seen.
type procCPU struct {
	program string
	ticks   uint64 // utime+stime
	gen     int    // the sample it was last seen in
	// threads are the run-queue wait of each of its threads, by tid, when
	// last read; waitRead says they have been read at all.
	threads  []threadWait
	waitRead bool
}

// threadWait is one thread's run-queue wait: the second field of
// /proc/PID/task/TID/schedstat, in nanoseconds.
type threadWait struct {
	tid  int
	wait uint64
}

// cpuWatch keeps the last CPU time of every process on the machine. It is
// sampled at each end of a window and, through memWatch, every 250 ms, so a
// process that exits mid-window counts up to its last sample (losing at
// most 250 ms of its CPU); one that starts and exits between two samples is
// not seen at all. A process that starts mid-window counts all its CPU.
//
// It also keeps the run-queue wait of every thread of every process, read
// at the same moments, except that the 250 ms sampler reads only some
// programs' threads (see sampleThreadsOf). Linux keeps that wait per thread
// only (/proc/PID/schedstat is the main thread's alone, a small part of a
// Go or Erlang process's), and unlike CPU time does not add an exited
// thread's to its process: a thread that exits mid-window loses the wait
// it had since it was last read, up to 250 ms of it for the programs the
// sampler reads, all of it since the window began for the others. A thread
// that starts mid-window counts all its wait.
type cpuWatch struct {
	self  int
	mu    sync.Mutex
	gen   int
	procs map[proc]procCPU
	buf   []byte // for reading stat files
	// schedNo says why run-queue wait is not measured; empty when it is.
	schedNo string
	sbuf    []byte   // for reading schedstat files
	dbuf    []byte   // for listing /proc/PID/task
	names   []string // the last such listing
}

func newCPUWatch() *cpuWatch {
	return &cpuWatch{
		self: os.Getpid(), procs: map[proc]procCPU{}, buf: make([]byte, 4096),
		schedNo: schedstatMissing(), sbuf: make([]byte, 128), dbuf: make([]byte, 4096),
	}
}

// schedstatMissing says why this kernel gives no run-queue wait, or ""
// when it does. Without CONFIG_SCHED_INFO there is no schedstat file;
// with it but sched_info off, every one reads "0 0 0", which this process's
// main thread, having run, cannot.
func schedstatMissing() string {
	b, err := readFile("/proc/self/schedstat", make([]byte, 128))
	if err != nil {
		return fmt.Sprintf("the kernel gives no schedstat (built without CONFIG_SCHED_INFO?): %v", err)
	}
	run, _, ok := parseSchedstat(b)
	if !ok {
		return fmt.Sprintf("unexpected /proc/self/schedstat %q", b)
	}
	if run == 0 {
		return "the kernel keeps no schedstat (/proc/self/schedstat reads 0 0 0)"
	}
	return ""
}

// sampleThreadsOf says whether the 250 ms sampler, which is there for
// processes that exit mid-window, reads the run-queue wait of a program's
// threads; the samples at each end of a window read every process's.
// Reading every thread costs too much to do 4 times a second: on the 2-core
// bench machine (a VM, with another test run keeping it busy), with 94
// processes and 161 threads, BenchmarkSample measured 1.6 ms of CPU for
// a sample of the stat files alone, 3.6 ms with every thread's schedstat,
// and 2.6 ms with the threads of the programs named here (46 of them, 13
// µs to 20 µs of CPU a thread); the bench stack has more processes and
// threads. Not read here: "other", and warren-bench, this process, which
// cannot exit mid-window.
func sampleThreadsOf(program string) bool { return program != "other" && program != "warren-bench" }

func (w *cpuWatch) sample() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.sampleLocked(false)
}

// running returns the pid of each process of program seen by the last
// sample, so that the memory sampler need not walk /proc again.
func (w *cpuWatch) running(program string) []int {
	w.mu.Lock()
	defer w.mu.Unlock()
	var pids []int
	for k, p := range w.procs {
		if p.gen == w.gen && p.program == program {
			pids = append(pids, k.pid)
		}
	}
	return pids
}

// sampleLocked reads every process's CPU time, and its threads' run-queue
// wait if allThreads or its program is one sampleThreadsOf names. A
// process whose threads are not read, or have all exited since its stat
// file was, keeps the wait it was last seen with.
func (w *cpuWatch) sampleLocked(allThreads bool) {
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
		st, ok := parseStat(b)
		if !ok {
			continue
		}
		name := program(st.comm)
		if pid == w.self {
			name = "warren-bench"
		}
		k := proc{pid, st.start}
		p := procCPU{program: name, ticks: st.ticks, gen: w.gen}
		if w.schedNo == "" && (allThreads || sampleThreadsOf(name)) {
			p.threads, p.waitRead = w.readWaits(pid, st.threads)
		}
		if !p.waitRead {
			prev := w.procs[k]
			p.threads, p.waitRead = prev.threads, prev.waitRead
		}
		w.procs[k] = p
	}
}

// readWaits reads the run-queue wait of each thread of process pid, which
// had n threads by its stat file, sorted by tid. A single-threaded
// process's one thread is its main thread, read from /proc/PID/schedstat
// without listing /proc/PID/task: most processes here (Postgres's, the
// kernel's) are single-threaded, and the listing is most of the cost. ok is
// false when none could be read (the process has exited).
func (w *cpuWatch) readWaits(pid, n int) (threads []threadWait, ok bool) {
	dir := "/proc/" + strconv.Itoa(pid) + "/"
	if n == 1 {
		b, err := readFile(dir+"schedstat", w.sbuf)
		if err != nil {
			return nil, false
		}
		_, wait, ok := parseSchedstat(b)
		if !ok {
			return nil, false
		}
		return []threadWait{{pid, wait}}, true
	}
	dir += "task/"
	names, err := w.listDir(dir)
	if err != nil {
		return nil, false
	}
	threads = make([]threadWait, 0, len(names))
	for _, name := range names {
		tid, err := strconv.Atoi(name)
		if err != nil {
			continue
		}
		b, err := readFile(dir+name+"/schedstat", w.sbuf)
		if err != nil {
			continue // exited since the listing
		}
		if _, wait, ok := parseSchedstat(b); ok {
			threads = append(threads, threadWait{tid, wait})
		}
	}
	if len(threads) == 0 {
		return nil, false
	}
	slices.SortFunc(threads, func(a, b threadWait) int { return cmp.Compare(a.tid, b.tid) })
	return threads, true
}

// listDir lists a directory's names with raw system calls, for the same
// reason as readFile. The slice is reused by the next call.
func (w *cpuWatch) listDir(dir string) ([]string, error) {
	fd, err := syscall.Open(dir, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", dir, err)
	}
	defer syscall.Close(fd)
	names := w.names[:0]
	for {
		n, err := syscall.ReadDirent(fd, w.dbuf)
		if err != nil {
			return nil, fmt.Errorf("listing %s: %w", dir, err)
		}
		if n <= 0 {
			break
		}
		_, _, names = syscall.ParseDirent(w.dbuf[:n], -1, names)
	}
	w.names = names
	return names, nil
}

// parseSchedstat reads a /proc/PID/task/TID/schedstat line: the thread's
// time on a CPU and time runnable on a run queue waiting for one, both in
// nanoseconds, and the number of timeslices it ran (not returned).
func parseSchedstat(b []byte) (run, wait uint64, ok bool) {
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return 0, 0, false
	}
	run, err1 := strconv.ParseUint(f[0], 10, 64)
	wait, err2 := strconv.ParseUint(f[1], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	return run, wait, true
}

// waitDelta is the run-queue wait a process's threads added from before to
// after (both sorted by tid). A thread only in after started in between:
// all its wait counts. One only in before exited: its wait since before is
// lost. One whose wait went back is a new thread with a reused tid.
func waitDelta(before, after []threadWait) uint64 {
	var sum uint64
	i := 0
	for _, a := range after {
		for i < len(before) && before[i].tid < a.tid {
			i++
		}
		if i < len(before) && before[i].tid == a.tid && a.wait >= before[i].wait {
			sum += a.wait - before[i].wait
		} else {
			sum += a.wait
		}
	}
	return sum
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
	w.sampleLocked(true)
	out := maps.Clone(w.procs)
	maps.DeleteFunc(w.procs, func(_ proc, p procCPU) bool { return p.gen != w.gen })
	return out
}

// stat is what a /proc/PID/stat line tells: the command name (field 2, in
// parentheses, the same as /proc/PID/comm, and itself possibly holding
// spaces and parentheses), utime+stime (fields 14 and 15) and the start
// time (field 22), both in clock ticks, and the number of threads (field
// 20).
type stat struct {
	comm         string
	ticks, start uint64
	threads      int
}

func parseStat(b []byte) (st stat, ok bool) {
	s := string(b)
	lp, rp := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if lp < 0 || rp < lp {
		return stat{}, false
	}
	f := strings.Fields(s[rp+1:]) // f[0] is field 3
	var v [4]uint64
	for i, n := range [4]int{14, 15, 20, 22} {
		if n-3 >= len(f) {
			return stat{}, false
		}
		x, err := strconv.ParseUint(f[n-3], 10, 64)
		if err != nil {
			return stat{}, false
		}
		v[i] = x
	}
	return stat{comm: s[lp+1 : rp], ticks: v[0] + v[1], threads: int(v[2]), start: v[3]}, true
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
	waits := map[string]uint64{} // ns
	procs := map[string]int{}
	for k, p := range after {
		// A process missing from before started in the window: all its
		// CPU and wait are the window's.
		b, had := w.cpu[k]
		if p.ticks >= b.ticks {
			ticks[p.program] += p.ticks - b.ticks
		}
		// One whose threads were never read (an "other" one that
		// started and exited between the ends of the window) adds no
		// wait, nor does one whose threads could not be read at the
		// start: all its wait since it started is not the window's.
		if p.waitRead && (!had || b.waitRead) {
			waits[p.program] += waitDelta(b.threads, p.threads)
		}
		procs[p.program]++
	}
	u.RunQueueNotMeasured = w.m.cpu.schedNo
	for _, name := range programNames {
		if procs[name] == 0 {
			continue
		}
		sec := float64(ticks[name]) / clockTicks
		wait := float64(waits[name]) / 1e9
		u.CPUSeconds += sec
		u.RunQueueSeconds += wait
		u.Programs = append(u.Programs, ProgramCPU{
			Program: name, Processes: procs[name], CPUSeconds: sec,
			Share: ratio(sec, machine), MsPerJob: ratio(1000*sec, float64(jobs)),
			RunQueueSeconds: wait, RunQueueMsPerJob: ratio(1000*wait, float64(jobs)),
		})
	}
	u.CPUMsPerJob = ratio(1000*u.CPUSeconds, float64(jobs))
	u.MachineBusy = ratio(u.CPUSeconds, machine)
	u.RunQueueMsPerJob = ratio(1000*u.RunQueueSeconds, float64(jobs))

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
