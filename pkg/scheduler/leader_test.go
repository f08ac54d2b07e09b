package scheduler_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/warrenhq/warren/pkg/scheduler"
	"github.com/warrenhq/warren/pkg/store"
)

// run runs an already built scheduler until the test ends or the returned
// stop is called (which waits for Run to return).
func (b *bundle) run(s *scheduler.Scheduler) (stop func()) {
	b.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					b.t.Errorf("Run: %v", err)
				}
			case <-time.After(20 * time.Second):
				b.t.Errorf("Run did not return within 20s of cancel")
			}
		})
	}
	b.t.Cleanup(stop)
	return stop
}

// leaders returns the indexes of the schedulers that say they lead.
func leaders(ss []*scheduler.Scheduler) []int {
	var out []int
	for i, s := range ss {
		if s.IsLeader() {
			out = append(out, i)
		}
	}
	return out
}

// probe is a leader-only duty that counts its rounds and records when its
// context was cancelled.
type probe struct {
	rounds    atomic.Int64
	running   atomic.Bool
	cancelled chan time.Time
}

func newProbe() *probe { return &probe{cancelled: make(chan time.Time, 16)} }

// count is a short duty.
func (p *probe) count(context.Context) error {
	p.rounds.Add(1)
	return nil
}

// hold is a duty that runs until its context ends.
func (p *probe) hold(ctx context.Context) error {
	p.running.Store(true)
	<-ctx.Done()
	p.running.Store(false)
	p.cancelled <- time.Now()
	return nil
}

// terminateLeader ends the Postgres session that holds the leader lock, as
// a network failure or a Postgres restart would, and returns when.
func (b *bundle) terminateLeader(st *store.Store) time.Time {
	b.t.Helper()
	pid, ok, err := st.LeaderPID(context.Background())
	if err != nil || !ok {
		b.t.Fatalf("LeaderPID = %v, %v", ok, err)
	}
	db, err := sqlx.Open("postgres", b.urls[0])
	if err != nil {
		b.t.Fatal(err)
	}
	defer db.Close()
	var done bool
	if err := db.Get(&done, `SELECT pg_terminate_backend($1)`, pid); err != nil || !done {
		b.t.Fatalf("pg_terminate_backend = %v, %v", done, err)
	}
	return time.Now()
}

func TestOneLeaderRunsTheLeaderDutiesAndAStandbyTakesOver(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	cfg := scheduler.Config{Tick: 100 * time.Millisecond, Leader: scheduler.LeaderConfig{Retry: 200 * time.Millisecond}}
	var (
		ss     []*scheduler.Scheduler
		stops  []func()
		probes []*probe
	)
	for range 3 {
		s, err := scheduler.New(cfg, b.store(), b.broker(""), testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		p := newProbe()
		s.AddDuty("probe", 50*time.Millisecond, p.count)
		s.AddDuty("hold", time.Hour, p.hold)
		ss, probes = append(ss, s), append(probes, p)
		stops = append(stops, b.run(s))
	}
	eventually(t, 10*time.Second, "a leader", func() bool { return len(leaders(ss)) == 1 })
	first := leaders(ss)[0]
	// Exactly one leader, and only its AddDuty duties run, while others wait.
	eventually(t, 10*time.Second, "the leader's duties to run", func() bool { return probes[first].rounds.Load() >= 5 })
	for i, p := range probes {
		if i != first && p.rounds.Load() != 0 {
			t.Errorf("scheduler %d is not the leader but ran a leader duty %d times", i, p.rounds.Load())
		}
		if n := len(leaders(ss)); n != 1 {
			t.Fatalf("%d leaders", n)
		}
		h := ss[i].Health()
		if !h.OK || h.Leader != (i == first) {
			t.Errorf("scheduler %d health: ok %v leader %v", i, h.OK, h.Leader)
		}
		for _, d := range h.Duties {
			if d.LeaderOnly && d.Standby != (i != first) {
				t.Errorf("scheduler %d: duty %s standby=%v", i, d.Duty, d.Standby)
			}
		}
		want := 0.0
		if i == first {
			want = 1
		}
		if v := counter(t, ss[i].Registry(), "warren_scheduler_leader"); v != want {
			t.Errorf("scheduler %d: warren_scheduler_leader = %v, want %v", i, v, want)
		}
	}

	// A clean shutdown hands over: its duties stop, then the lock goes.
	stopped := time.Now()
	stops[first]()
	select {
	case <-probes[first].cancelled:
	default:
		t.Fatal("the stopped leader's duty was not cancelled")
	}
	eventually(t, 15*time.Second, "a new leader", func() bool { return len(leaders(ss)) == 1 })
	second := leaders(ss)[0]
	t.Logf("takeover after a clean shutdown: %s", time.Since(stopped).Round(time.Millisecond))
	eventually(t, 10*time.Second, "the new leader's duties to run", func() bool { return probes[second].running.Load() })

	// Losing the lock's session deposes the leader: its duties' context is
	// cancelled within a check, and the last standby takes over.
	cut := b.terminateLeader(b.st)
	select {
	case at := <-probes[second].cancelled:
		t.Logf("deposed leader's duties cancelled %s after its session was cut", at.Sub(cut).Round(time.Millisecond))
		if at.Sub(cut) > 5*time.Second {
			t.Errorf("the deposed leader's duties ran on for %s", at.Sub(cut))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the deposed leader's duties were not cancelled")
	}
	third := 3 - first - second
	eventually(t, 15*time.Second, "the last scheduler to lead", func() bool { return ss[third].IsLeader() })
	t.Logf("takeover after the leader's session was cut: %s", time.Since(cut).Round(time.Millisecond))
	if ss[second].IsLeader() {
		t.Fatal("the deposed leader still says it leads")
	}
	if v := counter(t, ss[second].Registry(), "warren_scheduler_leadership_changes_total", "change", "lost"); v != 1 {
		t.Errorf("lost leadership counter = %v", v)
	}
	// The deposed one is a standby again, and leads again when it can.
	stops[third]()
	eventually(t, 15*time.Second, "the deposed scheduler to lead again", func() bool { return ss[second].IsLeader() })
}
