package scheduler_test

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/warrenhq/warren/pkg/autoscale"
	"github.com/warrenhq/warren/pkg/proctest"
	"github.com/warrenhq/warren/pkg/scheduler"
	"github.com/warrenhq/warren/pkg/store"
)

// fleet is one scheduler with the local autoscaler backend, wired as the
// scheduler process wires it: the autoscaler a leader duty, the fleet a
// leader task. Its workers are fake (this test binary, see fakeWorker).
type fleet struct {
	s    *scheduler.Scheduler
	out  *proctest.Buffer // the workers' output
	dir  string           // where they report their drain
	stop func()           // stops the scheduler; waits for Run
}

// startFleet starts a scheduler whose autoscaler keeps min workers.
func (b *bundle) startFleet(cfg scheduler.Config, min int) *fleet {
	b.t.Helper()
	exe, err := os.Executable()
	if err != nil {
		b.t.Fatal(err)
	}
	st, br, log := b.store(), b.broker(""), testLogger(b.t)
	s, err := scheduler.New(cfg, st, br, log)
	if err != nil {
		b.t.Fatal(err)
	}
	f := &fleet{s: s, out: &proctest.Buffer{}, dir: b.t.TempDir()}
	l, err := autoscale.NewLocal(autoscale.LocalConfig{
		Command: exe, Env: []string{"WARREN_FAKE_WORKER=1", "FAKE_DIR=" + f.dir},
		Output: f.out, StopTimeout: 20 * time.Second,
	}, s.Registry(), log)
	if err != nil {
		b.t.Fatal(err)
	}
	p := autoscale.DefaultPolicy()
	p.Min, p.Max, p.Interval = min, min+2, 200*time.Millisecond
	a, err := autoscale.New(autoscale.Config{Policy: p, Queues: []string{"default"}, Backend: "local"},
		storeSource{st}, br, l, s.Registry(), log)
	if err != nil {
		b.t.Fatal(err)
	}
	s.AddDuty("autoscale", p.Interval, a.Tick)
	s.AddLeaderTask("local_workers", l.Run)
	// Registered first, so that it runs after Run has returned.
	b.t.Cleanup(func() {
		for _, pid := range f.live() {
			b.t.Errorf("worker process %d left running", pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	f.stop = b.run(s)
	return f
}

var upLine = regexp.MustCompile(`(?m)\| up pid=(\d+)$`)

// pids returns every worker process the fleet started.
func (f *fleet) pids() []int {
	var out []int
	for _, m := range upLine.FindAllStringSubmatch(f.out.String(), -1) {
		pid, _ := strconv.Atoi(m[1])
		out = append(out, pid)
	}
	return out
}

// live returns the fleet's worker processes that still run.
func (f *fleet) live() []int {
	var out []int
	for _, pid := range f.pids() {
		if syscall.Kill(pid, 0) == nil {
			out = append(out, pid)
		}
	}
	return out
}

// drained reports whether every worker process the fleet started was
// stopped by SIGTERM (it then leaves a file) and is gone.
func (f *fleet) drained() bool {
	for _, pid := range f.pids() {
		b, err := os.ReadFile(filepath.Join(f.dir, strconv.Itoa(pid)+".done"))
		if err != nil || string(b) != "drained" || syscall.Kill(pid, 0) == nil {
			return false
		}
	}
	return true
}

// A local fleet follows the leadership: the leader runs it; a leader whose
// lock's session is cut stops its workers gracefully (SIGTERM) while the
// new leader starts its own, so that one fleet runs; and a leader that steps
// down (shuts down) does the same, the deposed one then starting a fleet
// again when it leads again.
func TestLocalFleetFollowsTheLeadership(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	// The first leads; the second, a standby, tries far more often than
	// the first, so that it, not the deposed leader, takes over.
	old := b.startFleet(scheduler.Config{Tick: 100 * time.Millisecond, Leader: scheduler.LeaderConfig{Check: 200 * time.Millisecond}}, 2)
	eventually(t, 15*time.Second, "the first scheduler to lead with two workers", func() bool {
		return old.s.IsLeader() && len(old.live()) == 2
	})
	other := b.startFleet(scheduler.Config{Tick: 100 * time.Millisecond, Leader: scheduler.LeaderConfig{Retry: 100 * time.Millisecond}}, 2)
	if n := len(other.pids()); n != 0 || other.s.IsLeader() {
		t.Fatalf("the standby started %d workers", n)
	}
	if v := counter(t, old.s.Registry(), "warren_autoscale_local_processes", "state", "running"); v != 2 {
		t.Errorf("leader: warren_autoscale_local_processes{running} = %v, want 2", v)
	}

	// Cut the leader's session: the standby takes over and starts its
	// fleet; the deposed leader stops its own.
	cut := b.terminateLeader(b.st)
	eventually(t, 15*time.Second, "the deposed leader's workers drained and gone", old.drained)
	stopped := time.Since(cut)
	eventually(t, 15*time.Second, "the new leader's two workers", func() bool {
		return other.s.IsLeader() && len(other.live()) == 2
	})
	t.Logf("after the cut: the deposed leader's fleet stopped within %s, the new one up within %s",
		stopped.Round(time.Millisecond), time.Since(cut).Round(time.Millisecond))
	if stopped > 5*time.Second {
		t.Errorf("the deposed leader's workers ran on for %s", stopped)
	}
	if old.s.IsLeader() || len(old.live()) != 0 || len(old.pids()) != 2 {
		t.Errorf("deposed: leader %v, %d workers running of %d started", old.s.IsLeader(), len(old.live()), len(old.pids()))
	}
	if v := counter(t, old.s.Registry(), "warren_autoscale_local_processes", "state", "running"); v != 0 {
		t.Errorf("deposed: warren_autoscale_local_processes{running} = %v, want 0", v)
	}

	// The new leader steps down: its fleet drains before its Run returns,
	// and the deposed one, leading again, starts a fleet again.
	other.stop()
	if !other.drained() {
		t.Error("the scheduler that stepped down left workers that did not drain")
	}
	eventually(t, 15*time.Second, "the first scheduler leading again with two new workers", func() bool {
		return old.s.IsLeader() && len(old.live()) == 2 && len(old.pids()) == 4
	})
	if len(other.live()) != 0 {
		t.Error("two fleets run")
	}
}

// storeSource gives the autoscaler the store's figures, as the scheduler
// process does.
type storeSource struct{ st *store.Store }

func (s storeSource) Load(ctx context.Context, queues []string, window time.Duration) ([]autoscale.QueueLoad, error) {
	loads, err := s.st.QueueLoad(ctx, queues, window)
	if err != nil {
		return nil, err
	}
	out := make([]autoscale.QueueLoad, len(loads))
	for i, l := range loads {
		out[i] = autoscale.QueueLoad{
			Queue: l.Queue, Ready: int(l.Queued), Running: int(l.Running),
			ArrivalRate: float64(l.Arrived) / window.Seconds(), CompletionRate: float64(l.Finished) / window.Seconds(),
			MeanJobTime: l.MeanJobTime, OldestAge: l.OldestQueued,
		}
	}
	return out, nil
}
