package scheduler

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/store"
	"github.com/warrenhq/warren/pkg/store/storetest"
)

func TestScheduleTicks(t *testing.T) {
	t.Parallel()
	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, tc := range []struct {
		spec        string
		after, now  string
		want        string // "" for none
		next        string // the tick after want (or after now when want is "")
		description string
	}{
		{"0 3 * * *", "2030-01-01T03:00:00Z", "2030-01-01T12:00:00Z", "", "2030-01-02T03:00:00Z", "no tick since the last"},
		{"0 3 * * *", "2030-01-01T03:00:00Z", "2030-01-04T12:00:00Z", "2030-01-04T03:00:00Z", "2030-01-05T03:00:00Z", "three missed: the latest only"},
		{"0 3 * * *", "2029-01-01T03:00:00Z", "2030-01-04T02:59:59Z", "2030-01-03T03:00:00Z", "2030-01-04T03:00:00Z", "a year back"},
		{"*/15 * * * *", "2030-01-01T00:00:00Z", "2030-01-01T00:44:59Z", "2030-01-01T00:30:00Z", "2030-01-01T00:45:00Z", "steps"},
		{"@every 1m", "2030-01-01T00:00:00Z", "2030-01-01T00:05:30Z", "2030-01-01T00:05:00Z", "2030-01-01T00:06:00Z", "every: aligned on the epoch"},
		{"@every 90s", "2030-01-01T00:00:00Z", "2030-01-01T00:01:29Z", "", "2030-01-01T00:01:30Z", "every 90s"},
		{"@every 1h", "2030-01-01T00:00:00Z", "2030-01-01T00:00:00Z", "", "2030-01-01T01:00:00Z", "now is the last tick"},
		{"0 0 30 2 *", "2029-01-01T00:00:00Z", "2030-01-01T00:00:00Z", "", "", "never"},
		{"CRON_TZ=America/New_York 0 3 * * *", "2030-01-01T00:00:00Z", "2030-01-01T09:00:00Z", "2030-01-01T08:00:00Z", "2030-01-02T08:00:00Z", "a time zone"},
	} {
		s, err := parseSchedule(tc.spec)
		if err != nil {
			t.Fatalf("%s: %v", tc.description, err)
		}
		got, ok := s.latest(at(tc.after), at(tc.now))
		if tc.want == "" {
			if ok {
				t.Errorf("%s: latest = %s, want none", tc.description, got)
			}
			got = at(tc.now)
		} else if !ok || !got.Equal(at(tc.want)) {
			t.Errorf("%s: latest = %s, %v; want %s", tc.description, got, ok, tc.want)
		}
		next := s.next(got)
		if tc.next == "" {
			if !next.IsZero() {
				t.Errorf("%s: next = %s, want none", tc.description, next)
			}
		} else if !next.Equal(at(tc.next)) {
			t.Errorf("%s: next = %s, want %s", tc.description, next, tc.next)
		}
	}
	for _, bad := range []string{"", "* * * *", "* * * * * *", "61 * * * *", "TZ=UTC", "@every", "@every -x", "*/0 * * * *", "CRON_TZ=Nowhere/Land 0 3 * * *"} {
		if _, err := parseSchedule(bad); err == nil {
			t.Errorf("parseSchedule(%q) accepted", bad)
		}
	}
}

// cronJobs returns the cron tenant's jobs on every shard, by idempotency
// key, with how many jobs each key has.
func cronJobs(t *testing.T, urls []string) (map[string]int, map[string]*job.Job) {
	t.Helper()
	counts, jobs := map[string]int{}, map[string]*job.Job{}
	for _, u := range urls {
		db, err := sqlx.Open("postgres", u)
		if err != nil {
			t.Fatal(err)
		}
		var rows []*job.Job
		err = db.Select(&rows, `SELECT id, tenant, type, queue, state, max_attempts, payload, scheduled_at, idempotency_key
			FROM jobs WHERE tenant = 'crontab'`)
		_ = db.Close()
		if err != nil {
			t.Fatal(err)
		}
		for _, j := range rows {
			counts[*j.IdempotencyKey]++
			jobs[*j.IdempotencyKey] = j
		}
	}
	return counts, jobs
}

func TestCronEnqueuesEachTickOnceAndCatchesUpOnlyTheLatest(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	urls := storetest.URLs(t, 2)
	var mu sync.Mutex
	clock := time.Date(2030, 6, 1, 2, 59, 30, 0, time.UTC)
	now := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return clock
	}
	set := func(t time.Time) {
		mu.Lock()
		clock = t
		mu.Unlock()
	}
	entries, err := newCronEntries([]CronJob{
		{Name: "minutely", Schedule: "@every 1m", Type: "echo", Payload: []byte(`{"n":1}`)},
		{Name: "nightly", Schedule: "0 3 * * *", Type: "report", Queue: "reports"},
	})
	if err != nil {
		t.Fatal(err)
	}
	// Two leaders at once (one deposed but not yet aware), each with its
	// own connections.
	duty := func() *cronDuty {
		st, err := store.Open(store.Config{URLs: urls, MaxConns: 4})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(st.Close)
		return &cronDuty{st: st, entries: entries, tenant: "crontab", lateLog: 5 * time.Second, now: now,
			m: newMetrics(), log: slog.New(slog.DiscardHandler)}
	}
	a, b := duty(), duty()
	both := func() {
		t.Helper()
		var wg sync.WaitGroup
		for _, d := range []*cronDuty{a, b} {
			wg.Go(func() {
				if err := d.run(ctx); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
	}
	expect := func(when string, want map[string]int) {
		t.Helper()
		got, _ := cronJobs(t, urls)
		if len(got) != len(want) {
			t.Fatalf("%s: jobs %v, want %v", when, got, want)
		}
		for k, n := range want {
			if got[k] != n {
				t.Fatalf("%s: jobs %v, want %v", when, got, want)
			}
		}
	}
	minute := func(t time.Time) string { return "cron:minutely:" + itoa(t.Unix()) }

	both() // new entries: nothing is due, their ticks start now
	expect("at start", map[string]int{})
	set(clock.Add(20 * time.Second)) // 02:59:50
	both()
	expect("before the first tick", map[string]int{})
	t3 := time.Date(2030, 6, 1, 3, 0, 0, 0, time.UTC)
	set(t3.Add(time.Second))
	both()
	want := map[string]int{minute(t3): 1, "cron:nightly:" + itoa(t3.Unix()): 1}
	expect("at 03:00", want)
	both() // again within the same tick: no-op
	expect("at 03:00 again", want)

	// A leader that starts after an hour without one enqueues the latest
	// missed tick of each entry, not sixty.
	set(t3.Add(time.Hour + 10*time.Second))
	if err := a.run(ctx); err != nil {
		t.Fatal(err)
	}
	want[minute(t3.Add(time.Hour))] = 1
	expect("after an hour without a leader", want)

	// Three days later: one nightly tick, the latest.
	day4 := t3.Add(3 * 24 * time.Hour)
	set(day4.Add(5 * time.Minute))
	if err := b.run(ctx); err != nil {
		t.Fatal(err)
	}
	want[minute(day4.Add(5*time.Minute))] = 1
	want["cron:nightly:"+itoa(day4.Unix())] = 1
	expect("three days later", want)

	// A changed schedule starts afresh: no catch-up of the new one.
	changed, err := newCronEntries([]CronJob{{Name: "nightly", Schedule: "0 4 * * *", Type: "report"}})
	if err != nil {
		t.Fatal(err)
	}
	a.entries = changed
	set(day4.Add(2 * time.Hour)) // 05:00, after 04:00
	if err := a.run(ctx); err != nil {
		t.Fatal(err)
	}
	expect("after a schedule change", want)
	set(day4.Add(25 * time.Hour))
	if err := a.run(ctx); err != nil {
		t.Fatal(err)
	}
	want["cron:nightly:"+itoa(day4.Add(25*time.Hour).Unix())] = 1
	expect("the next day at 04:00", want)

	// The jobs are scheduled at their tick for the due-job dispatch, with
	// their entry's fields.
	_, jobs := cronJobs(t, urls)
	for key, j := range jobs {
		if j.State != job.Scheduled || j.ScheduledAt == nil || j.MaxAttempts != 5 {
			t.Errorf("cron job %s: %s at %v, max attempts %d", key, j.State, j.ScheduledAt, j.MaxAttempts)
		}
	}
	if j := jobs[minute(t3)]; j.Type != "echo" || j.Queue != "default" || string(j.Payload) != `{"n": 1}` || !j.ScheduledAt.Equal(t3) {
		t.Errorf("minutely job: %+v", j)
	}
	if j := jobs["cron:nightly:"+itoa(t3.Unix())]; j.Type != "report" || j.Queue != "reports" || string(j.Payload) != `{}` {
		t.Errorf("nightly job: %+v", j)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
