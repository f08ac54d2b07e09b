package bench

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ProcMemory is one api or workers process's peak resident set (VmHWM).
type ProcMemory struct {
	Name    string  `json:"name"`
	PID     int     `json:"pid"`
	PeakMiB float64 `json:"peak_rss_mib"`
}

// memWatch samples /proc for processes whose command is bin/api or
// bin/workers (by the program's base name), keeping each one's last VmHWM:
// workers the autoscaler stops mid-run are still reported.
type memWatch struct {
	mu     sync.Mutex
	procs  map[int]ProcMemory
	cancel context.CancelFunc
	done   chan struct{}
}

func newMemWatch() *memWatch { return &memWatch{procs: map[int]ProcMemory{}} }

func (m *memWatch) start(ctx context.Context, every time.Duration) {
	ctx, m.cancel = context.WithCancel(ctx)
	m.done = make(chan struct{})
	go func() {
		defer close(m.done)
		for {
			m.sample()
			select {
			case <-ctx.Done():
				return
			case <-time.After(every):
			}
		}
	}()
}

func (m *memWatch) stop() []ProcMemory {
	m.cancel()
	<-m.done
	m.sample()
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]ProcMemory, 0, len(m.procs))
	for _, p := range m.procs {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].PID < out[j].PID
	})
	return out
}

func (m *memWatch) sample() {
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		cmd, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if err != nil || len(cmd) == 0 {
			continue
		}
		name := filepath.Base(string(bytes.SplitN(cmd, []byte{0}, 2)[0]))
		if name != "api" && name != "workers" {
			continue
		}
		kb, ok := vmHWM(pid)
		if !ok {
			continue
		}
		m.mu.Lock()
		m.procs[pid] = ProcMemory{Name: name, PID: pid, PeakMiB: float64(kb) / 1024}
		m.mu.Unlock()
	}
}

func vmHWM(pid int) (int, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, false
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n, err == nil
		}
	}
	return 0, false
}
