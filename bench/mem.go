package bench

import (
	"context"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ProcMemory is one api or workers process's peak resident set (VmHWM),
// and, to tell a steady process from a growing one over a long run (a soak),
// the largest resident set (VmRSS) sampled in the first and in the second
// half of the watch, and the last one.
type ProcMemory struct {
	Name          string  `json:"name"`
	PID           int     `json:"pid"`
	PeakMiB       float64 `json:"peak_rss_mib"`
	FirstHalfMiB  float64 `json:"rss_first_half_max_mib"`
	SecondHalfMiB float64 `json:"rss_second_half_max_mib"`
	LastMiB       float64 `json:"rss_last_mib"`
}

// rssSample is one VmRSS reading of a process.
type rssSample struct {
	at time.Time
	kb int
}

// memWatch samples the memory of the api and workers processes (by command
// name, as cpuWatch finds them on its walk of /proc), keeping each one's
// last VmHWM: workers the autoscaler stops mid-run are still reported. Each
// tick samples cpu first, so processes that exit mid-phase keep their CPU.
type memWatch struct {
	cpu     *cpuWatch
	mu      sync.Mutex
	procs   map[int]ProcMemory
	rss     map[int][]rssSample
	started time.Time
	cancel  context.CancelFunc
	done    chan struct{}
}

func newMemWatch(cpu *cpuWatch) *memWatch {
	return &memWatch{cpu: cpu, procs: map[int]ProcMemory{}, rss: map[int][]rssSample{}}
}

func (m *memWatch) start(ctx context.Context, every time.Duration) {
	m.started = time.Now()
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
	half := m.started.Add(time.Since(m.started) / 2)
	out := make([]ProcMemory, 0, len(m.procs))
	for pid, p := range m.procs {
		for _, s := range m.rss[pid] {
			mib := float64(s.kb) / 1024
			if s.at.Before(half) {
				p.FirstHalfMiB = max(p.FirstHalfMiB, mib)
			} else {
				p.SecondHalfMiB = max(p.SecondHalfMiB, mib)
			}
			p.LastMiB = mib
		}
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

// sample samples cpu, then reads the memory of the api and workers
// processes that sample found.
func (m *memWatch) sample() {
	m.cpu.sample()
	for _, name := range []string{"api", "workers"} {
		for _, pid := range m.cpu.running(name) {
			hwm, rss, ok := memStatus(pid)
			if !ok {
				continue
			}
			m.mu.Lock()
			m.procs[pid] = ProcMemory{Name: name, PID: pid, PeakMiB: float64(hwm) / 1024}
			m.rss[pid] = append(m.rss[pid], rssSample{at: time.Now(), kb: rss})
			m.mu.Unlock()
		}
	}
}

// memStatus reads a process's VmHWM and VmRSS, in kB.
func memStatus(pid int) (hwm, rss int, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, 0, false
	}
	found := 0
	for line := range strings.SplitSeq(string(b), "\n") {
		for key, dst := range map[string]*int{"VmHWM:": &hwm, "VmRSS:": &rss} {
			if v, ok := strings.CutPrefix(line, key); ok {
				n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
				if err != nil {
					return 0, 0, false
				}
				*dst = n
				found++
			}
		}
	}
	return hwm, rss, found == 2
}
