package scheduler_test

import (
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/scheduler"
	"github.com/warrenhq/warren/pkg/store"
)

// cronTicks returns, for every tick of the cron entry name, how many jobs
// the cluster holds.
func (b *bundle) cronTicks(name string) map[int64]int {
	b.t.Helper()
	out := map[int64]int{}
	for _, u := range b.urls {
		db, err := sqlx.Open("postgres", u)
		if err != nil {
			b.t.Fatal(err)
		}
		var keys []string
		err = db.Select(&keys, `SELECT idempotency_key FROM jobs WHERE tenant = 'default' AND idempotency_key LIKE $1`, "cron:"+name+":%")
		_ = db.Close()
		if err != nil {
			b.t.Fatal(err)
		}
		for _, k := range keys {
			n, err := strconv.ParseInt(strings.TrimPrefix(k, "cron:"+name+":"), 10, 64)
			if err != nil {
				b.t.Fatalf("key %q: %v", k, err)
			}
			out[n]++
		}
	}
	return out
}

func TestCronOncePerTickAcrossLeaderChanges(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	got := b.consume(b.broker(""), "default")
	cfg := scheduler.Config{
		Tick:   100 * time.Millisecond,
		Leader: scheduler.LeaderConfig{Retry: 100 * time.Millisecond},
		Cron:   []scheduler.CronJob{{Name: "beat", Schedule: "@every 2s", Type: "echo", Payload: []byte(`{"beat":true}`)}},
	}
	var ss []*scheduler.Scheduler
	var stops []func()
	var stores []*store.Store
	for range 2 {
		st := b.store()
		s, err := scheduler.New(cfg, st, b.broker(""), testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		ss, stops, stores = append(ss, s), append(stops, b.run(s)), append(stores, st)
	}
	ticks := func(n int) func() bool { return func() bool { return len(b.cronTicks("beat")) >= n } }
	eventually(t, 20*time.Second, "two ticks under the first leader", ticks(2))
	first := leaders(ss)[0]

	// The leader loses its session: for up to a second it does not know,
	// and runs cron beside the new leader.
	b.terminateLeader(stores[0])
	eventually(t, 20*time.Second, "two more ticks", ticks(4))
	eventually(t, 10*time.Second, "the other scheduler to lead", func() bool { return ss[1-first].IsLeader() })
	// A clean handover back.
	stops[1-first]()
	eventually(t, 20*time.Second, "two more ticks", ticks(6))
	stops[first]()
	// A tick enqueued just before that stop may not be dispatched yet: any
	// scheduler dispatches it, here one without cron (so no more ticks).
	drain := cfg
	drain.Cron = nil
	d, err := scheduler.New(drain, b.store(), b.broker(""), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	stopDrain := b.run(d)

	seen := b.cronTicks("beat")
	var all []int64
	for tick, n := range seen {
		all = append(all, tick)
		if n != 1 {
			t.Errorf("tick %d enqueued %d times", tick, n)
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	for i := 1; i < len(all); i++ {
		if all[i]-all[i-1] != 2 {
			t.Errorf("ticks %d and %d: a tick was skipped across a leader change", all[i-1], all[i])
		}
	}
	t.Logf("%d ticks, each once: %v", len(all), all)
	// The dispatch publishes them.
	eventually(t, 10*time.Second, "every tick's job published", func() bool { return got.distinct() == len(all) })
	eventually(t, 10*time.Second, "every tick's job queued", func() bool { return b.countStates()[job.Queued] == len(all) })
	// Each once, but for the one duplicate the store allows: a dispatch
	// whose mark skipped a row another scheduler's due query held for a
	// moment leaves the job to the relay, which publishes it again. Every
	// extra message must be such a relay, counted by the schedulers.
	stopDrain()
	relayed := 0
	for _, s := range append(ss, d) {
		relayed += int(counter(t, s.Registry(), "warren_scheduler_jobs_relayed_total"))
	}
	got.mu.Lock()
	defer got.mu.Unlock()
	if got.total > len(all)+relayed {
		t.Errorf("%d messages for %d ticks, of which the relay sent %d", got.total, len(all), relayed)
	}
	t.Logf("%d messages for %d ticks; the relay sent %d", got.total, len(all), relayed)
}

func TestBadCronIsRefused(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	for _, c := range [][]scheduler.CronJob{
		{{Name: "x", Schedule: "every day", Type: "echo"}},
		{{Name: "x", Schedule: "TZ=UTC", Type: "echo"}},
		{{Name: "x", Schedule: "@daily", Type: "echo"}, {Name: "x", Schedule: "@hourly", Type: "echo"}},
	} {
		if _, err := scheduler.New(scheduler.Config{Cron: c}, b.st, nil, nil); err == nil {
			t.Errorf("New accepted cron %+v", c)
		}
	}
}
