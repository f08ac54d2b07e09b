package autoscale

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// LocalConfig configures the local backend.
type LocalConfig struct {
	// Command is the worker's command line, as in a Procfile; it runs
	// through /bin/sh when it needs a shell (variables, operators, quotes).
	Command string
	// Dir is the children's working directory; default the scheduler's.
	Dir string
	// Env is the children's environment; default the scheduler's. PORT is
	// replaced by each child's own, and PS names the child as foreman does.
	Env []string
	// Name is the process type, the children being Name.1, Name.2, …; it
	// prefixes their output. Default "worker".
	Name string
	// BasePort is the PORT of Name.1, Name.2 getting the next one, and so
	// on; 0 leaves PORT out.
	BasePort int
	// StopTimeout is how long a child told to stop (SIGTERM) may take
	// before it is killed (SIGKILL); default 30s. Give it more than the
	// workers' WARREN_SHUTDOWN_GRACE.
	StopTimeout time.Duration
	// Output receives the children's output (stdout and stderr), each line
	// prefixed with the child's name; default os.Stdout.
	Output io.Writer
	// RestartDelay is the wait before restarting a child that crashed soon
	// after it started, doubling with each such crash up to 30s; default 1s.
	// A child that ran for a while is restarted at once.
	RestartDelay time.Duration
}

// ErrRunning is returned by Run while another call of Run supervises the
// fleet.
var ErrRunning = errors.New("local workers: already running")

// Local runs the worker fleet as child processes of the scheduler, as
// foreman would run the Procfile's worker line: N copies, each with the
// scheduler's environment and a PORT of its own, their output prefixed.
// It restarts a child that exits unasked, stops surplus children with
// SIGTERM (the SDK then finishes its running jobs) and waits for them,
// killing one only after StopTimeout. Call Run; Scale and Workers only
// change and read the number wanted.
//
// The fleet lives as long as Run: run it for as long as this scheduler
// sizes the fleet, that is while it leads (scheduler.AddLeaderTask), so
// that a deposed leader stops its workers and the new leader runs its own.
// Run may be called again after it returned (a new term); it starts the
// number last ordered again, as the autoscaler, which remembers its
// orders, expects. If the scheduler dies, the kernel sends its workers
// SIGTERM (a parent-death signal), so that none outlives it. Their output
// then has no reader: a worker drains only if it survives writing to a
// closed pipe (it ignores SIGPIPE); else its jobs are left to the reaper.
type Local struct {
	cfg     LocalConfig
	log     *slog.Logger
	argv    []string
	out     *lineWriter
	wake    chan struct{}
	m       localMetrics
	mu      sync.Mutex
	target  int
	running bool // a Run supervises the fleet
}

type localMetrics struct {
	processes *prometheus.GaugeVec
	restarts  prometheus.Counter
}

// NewLocal returns the local backend. reg, when not nil, gets its metrics:
// warren_autoscale_local_processes{state} and
// warren_autoscale_local_restarts_total.
func NewLocal(cfg LocalConfig, reg prometheus.Registerer, log *slog.Logger) (*Local, error) {
	if strings.TrimSpace(cfg.Command) == "" {
		return nil, errors.New("local workers: no command")
	}
	if cfg.Env == nil {
		cfg.Env = os.Environ()
	}
	if cfg.Name == "" {
		cfg.Name = "worker"
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = 30 * time.Second
	}
	if cfg.Output == nil {
		cfg.Output = os.Stdout
	}
	if cfg.RestartDelay <= 0 {
		cfg.RestartDelay = time.Second
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &Local{cfg: cfg, log: log, argv: commandArgs(cfg.Command), out: &lineWriter{w: cfg.Output}, wake: make(chan struct{}, 1)}
	l.m.processes = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "warren_autoscale_local_processes",
		Help: "Worker processes run by the local autoscaler backend, by state: running, or stopping (told to stop, finishing their jobs).",
	}, []string{"state"})
	l.m.restarts = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "warren_autoscale_local_restarts_total",
		Help: "Worker processes of the local autoscaler backend that exited unasked and were started again.",
	})
	if reg != nil {
		if err := reg.Register(l.m.processes); err != nil {
			return nil, fmt.Errorf("local workers: %w", err)
		}
		if err := reg.Register(l.m.restarts); err != nil {
			return nil, fmt.Errorf("local workers: %w", err)
		}
	}
	return l, nil
}

// commandArgs returns the argv for a command line: the words themselves
// when it is a plain command, else /bin/sh -c, with exec in front when
// that keeps its meaning, so that signals reach the worker itself.
func commandArgs(cmd string) []string {
	cmd = strings.TrimSpace(cmd)
	if !strings.ContainsAny(cmd, "$&|;<>()`'\"\\*?[]{}~#=\n") {
		return strings.Fields(cmd)
	}
	if !strings.ContainsAny(cmd, "&|;\n") {
		cmd = "exec " + cmd
	}
	return []string{"/bin/sh", "-c", cmd}
}

// Workers implements Scaler: the number of children wanted.
func (l *Local) Workers(context.Context) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.target, nil
}

// Scale implements Scaler: Run starts or stops children to reach n; when
// no Run is going on, the next one does.
func (l *Local) Scale(_ context.Context, n int) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.target = max(n, 0)
	select {
	case l.wake <- struct{}{}:
	default:
	}
	return nil
}

// child is one worker process.
type child struct {
	slot     int
	cmd      *exec.Cmd
	started  time.Time
	stopping bool
	kill     *time.Timer
	err      error // of Wait, once exited
	readers  sync.WaitGroup
}

// Run supervises the children until ctx ends, then stops them all (SIGTERM,
// and SIGKILL after StopTimeout) and returns once every one has exited. It
// may be called again after it returned, but not while it runs
// (ErrRunning).
func (l *Local) Run(ctx context.Context) error {
	l.mu.Lock()
	if l.running {
		l.mu.Unlock()
		return ErrRunning
	}
	l.running = true
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		l.running = false
		l.mu.Unlock()
	}()
	// Children are started from this goroutine's thread only, which lives
	// as long as Run: their parent-death signal (SIGTERM if the scheduler is
	// killed) is tied to the thread that started them.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var (
		children  = map[int]*child{} // by slot
		exits     = make(chan *child)
		crashes   int
		nextStart time.Time
		restart   = time.NewTimer(time.Hour)
	)
	restart.Stop()
	defer restart.Stop()
	for {
		if ctx.Err() == nil {
			l.reconcile(children, exits, nextStart, restart)
		}
		l.report(children)
		select {
		case <-ctx.Done():
			for _, c := range children {
				l.stop(c)
			}
			for len(children) > 0 {
				c := <-exits
				l.exited(c)
				delete(children, c.slot)
				l.report(children)
			}
			return nil
		case <-l.wake:
		case <-restart.C:
		case c := <-exits:
			l.exited(c)
			delete(children, c.slot)
			if c.stopping {
				continue
			}
			l.m.restarts.Inc()
			ran := time.Since(c.started)
			if ran < 10*time.Second {
				crashes++
				delay := min(l.cfg.RestartDelay<<(crashes-1), 30*time.Second)
				nextStart = time.Now().Add(delay)
				restart.Reset(delay)
				l.log.Warn("worker process exited soon after it started; starting another after a pause",
					"process", l.name(c.slot), "error", exitText(c.err), "ran", ran.Round(time.Millisecond).String(), "retry_in", delay.String())
			} else {
				crashes, nextStart = 0, time.Time{}
				l.log.Warn("worker process exited unasked; starting another",
					"process", l.name(c.slot), "error", exitText(c.err), "ran", ran.Round(time.Second).String())
			}
		}
	}
}

// reconcile starts or stops children to match the target.
func (l *Local) reconcile(children map[int]*child, exits chan<- *child, nextStart time.Time, restart *time.Timer) {
	l.mu.Lock()
	target := l.target
	l.mu.Unlock()
	var live []*child
	for _, c := range children {
		if !c.stopping {
			live = append(live, c)
		}
	}
	// Surplus: the highest-numbered first, as foreman numbers them.
	for len(live) > target {
		top := 0
		for i, c := range live {
			if c.slot > live[top].slot {
				top = i
			}
		}
		l.stop(live[top])
		live = append(live[:top], live[top+1:]...)
	}
	if len(live) >= target {
		return
	}
	if wait := time.Until(nextStart); wait > 0 {
		restart.Reset(wait)
		return
	}
	for slot := 1; len(live) < target; slot++ {
		if children[slot] != nil {
			continue
		}
		c, err := l.start(slot, exits)
		if err != nil {
			l.log.Error("cannot start a worker process", "process", l.name(slot), "command", l.cfg.Command, "error", err)
			restart.Reset(l.cfg.RestartDelay)
			return
		}
		children[slot] = c
		live = append(live, c)
	}
}

func (l *Local) name(slot int) string { return fmt.Sprintf("%s.%d", l.cfg.Name, slot) }

// start runs the child of slot; its exit is sent to exits.
func (l *Local) start(slot int, exits chan<- *child) (*child, error) {
	name := l.name(slot)
	cmd := exec.Command(l.argv[0], l.argv[1:]...)
	cmd.Dir = l.cfg.Dir
	env := make([]string, 0, len(l.cfg.Env)+2)
	for _, kv := range l.cfg.Env {
		if !strings.HasPrefix(kv, "PORT=") && !strings.HasPrefix(kv, "PS=") {
			env = append(env, kv)
		}
	}
	env = append(env, "PS="+name)
	if l.cfg.BasePort > 0 {
		env = append(env, "PORT="+strconv.Itoa(l.cfg.BasePort+slot-1))
	}
	cmd.Env = env
	// Its own process group, so that a stop reaches everything it started;
	// SIGTERM when the scheduler dies, so that no worker is left behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = outW, errW
	err = cmd.Start()
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return nil, err
	}
	c := &child{slot: slot, cmd: cmd, started: time.Now()}
	for _, r := range []*os.File{outR, errR} {
		c.readers.Go(func() {
			defer r.Close()
			l.out.copy(name, r)
		})
	}
	l.log.Info("worker process started", "process", name, "pid", cmd.Process.Pid)
	go func() {
		c.err = cmd.Wait()
		// Whatever it started may still run (a shell's child): give the
		// group the same grace, then kill what is left.
		if groupAlive(cmd.Process.Pid) {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
			deadline := time.Now().Add(l.cfg.StopTimeout)
			for groupAlive(cmd.Process.Pid) && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
			}
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		}
		done := make(chan struct{})
		go func() { c.readers.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(time.Second): // a descendant holds the pipe open
		}
		exits <- c
	}()
	return c, nil
}

// stop sends SIGTERM to the child's group, and SIGKILL after StopTimeout.
func (l *Local) stop(c *child) {
	if c.stopping {
		return
	}
	c.stopping = true
	pid := c.cmd.Process.Pid
	l.log.Info("stopping worker process: it finishes its running jobs first", "process", l.name(c.slot), "pid", pid, "timeout", l.cfg.StopTimeout.String())
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	c.kill = time.AfterFunc(l.cfg.StopTimeout, func() {
		if groupAlive(pid) {
			l.log.Warn("worker process did not stop in time: killing it", "process", l.name(c.slot), "pid", pid, "timeout", l.cfg.StopTimeout.String())
			_ = syscall.Kill(-pid, syscall.SIGKILL)
		}
	})
}

// exited logs a child's end.
func (l *Local) exited(c *child) {
	if c.kill != nil {
		c.kill.Stop()
	}
	if c.stopping {
		l.log.Info("worker process stopped", "process", l.name(c.slot), "status", exitText(c.err), "ran", time.Since(c.started).Round(time.Millisecond).String())
	}
}

func (l *Local) report(children map[int]*child) {
	running, stopping := 0, 0
	for _, c := range children {
		if c.stopping {
			stopping++
		} else {
			running++
		}
	}
	l.m.processes.WithLabelValues("running").Set(float64(running))
	l.m.processes.WithLabelValues("stopping").Set(float64(stopping))
}

// groupAlive reports whether the process group pgid has a process left.
func groupAlive(pgid int) bool {
	return syscall.Kill(-pgid, 0) == nil
}

func exitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// lineWriter writes whole lines from several children to one writer, each
// with its child's name in front, foreman style.
type lineWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (lw *lineWriter) copy(name string, r io.Reader) {
	br := bufio.NewReaderSize(r, 64<<10)
	prefix := fmt.Sprintf("%-10s| ", name)
	for {
		line, err := br.ReadString('\n')
		if line != "" {
			if !strings.HasSuffix(line, "\n") {
				line += "\n"
			}
			lw.mu.Lock()
			_, _ = io.WriteString(lw.w, prefix+line)
			lw.mu.Unlock()
		}
		if err != nil {
			return
		}
	}
}

// ProcfileCommand returns the command of process type name in the Procfile
// at path.
func ProcfileCommand(path, name string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "#") {
			continue
		}
		typ, cmd, ok := strings.Cut(line, ":")
		if ok && strings.TrimSpace(typ) == name && strings.TrimSpace(cmd) != "" {
			return strings.TrimSpace(cmd), nil
		}
	}
	return "", fmt.Errorf("%s has no %q line", path, name)
}
