package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/store"
	"github.com/warrenhq/warren/pkg/store/storetest"
)

// schedSetup returns a store over n fresh shards and raw handles on them.
func schedSetup(t *testing.T, n int) (*store.Store, []*sqlx.DB) {
	t.Helper()
	urls := storetest.URLs(t, n)
	s, err := store.Open(store.Config{URLs: urls, MaxConns: 8})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	var raw []*sqlx.DB
	for _, u := range urls {
		db, err := sqlx.Open("postgres", u)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = db.Close() })
		raw = append(raw, db)
	}
	return s, raw
}

// waiting returns a job on shard in state st, due at at.
func waiting(shard int, st job.State, at time.Time) *job.Job {
	j := newJob(shard, "acme")
	j.State = st
	at = at.UTC().Truncate(time.Microsecond)
	j.ScheduledAt = &at
	return j
}

func states(t *testing.T, s *store.Store, jobs ...*job.Job) []job.State {
	t.Helper()
	var out []job.State
	for _, j := range jobs {
		got, err := s.Get(context.Background(), "acme", j.ID)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, got.State)
	}
	return out
}

func TestPublishDueTakesOnlyDueJobsOldestFirst(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := schedSetup(t, 1)
	now := time.Now()
	late := waiting(0, job.Scheduled, now.Add(-time.Minute))
	retry := waiting(0, job.Retrying, now.Add(-2*time.Minute))
	early := waiting(0, job.Scheduled, now.Add(time.Hour))
	queued := waiting(0, job.Queued, now.Add(-time.Hour))
	done := waiting(0, job.Succeeded, now.Add(-time.Hour))
	retry.Priority, retry.Queue, retry.Type = 7, "mail", "send"
	if err := s.Insert(ctx, late, retry, early, queued, done); err != nil {
		t.Fatal(err)
	}
	// A limit of one takes the job due first.
	var got []store.DueJob
	n, err := s.PublishDue(ctx, 0, 1, func(_ context.Context, due []store.DueJob) error {
		got = append(got, due...)
		return nil
	})
	if err != nil || n != 1 {
		t.Fatalf("PublishDue = %d, %v; want 1", n, err)
	}
	n, err = s.PublishDue(ctx, 0, 10, func(_ context.Context, due []store.DueJob) error {
		got = append(got, due...)
		return nil
	})
	if err != nil || n != 1 {
		t.Fatalf("second PublishDue = %d, %v; want 1", n, err)
	}
	want := []store.DueJob{
		{ID: retry.ID, Type: "send", Queue: "mail", Priority: 7},
		{ID: late.ID, Type: "echo", Queue: "default"},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("published %+v, want %+v", got, want)
	}
	if st := states(t, s, late, retry, early, queued, done); !slices.Equal(st, []job.State{job.Queued, job.Queued, job.Scheduled, job.Queued, job.Succeeded}) {
		t.Fatalf("states after dispatch: %v", st)
	}
	// Nothing is due any more.
	n, err = s.PublishDue(ctx, 0, 10, func(context.Context, []store.DueJob) error {
		t.Error("publish called with nothing due")
		return nil
	})
	if n != 0 || err != nil {
		t.Fatalf("third PublishDue = %d, %v", n, err)
	}
	if _, err := s.PublishDue(ctx, 1, 10, nil); !errors.Is(err, store.ErrBadShard) {
		t.Fatalf("shard 1 of 1: %v, want ErrBadShard", err)
	}
}

// Schedulers that dispatch at once take disjoint sets of the due jobs.
func TestPublishDueFromManySchedulersTakesEachJobOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := schedSetup(t, 1)
	var all []*job.Job
	for i := range 200 {
		all = append(all, waiting(0, job.Scheduled, time.Now().Add(-time.Duration(200-i)*time.Second)))
	}
	if err := s.Insert(ctx, all...); err != nil {
		t.Fatal(err)
	}
	var (
		mu   sync.Mutex
		seen = map[job.ID]int{}
		wg   sync.WaitGroup
	)
	for range 4 {
		wg.Go(func() {
			for {
				n, err := s.PublishDue(ctx, 0, 7, func(_ context.Context, due []store.DueJob) error {
					mu.Lock()
					defer mu.Unlock()
					for _, d := range due {
						seen[d.ID]++
					}
					return nil
				})
				if err != nil {
					t.Error(err)
					return
				}
				if n == 0 {
					return
				}
			}
		})
	}
	wg.Wait()
	if len(seen) != len(all) {
		t.Fatalf("%d of %d jobs published", len(seen), len(all))
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("job %s published %d times", id, n)
		}
	}
}

// The scheduler's queries must use the partial indexes, not scan the table:
// most rows of a real shard are finished jobs.
func TestSchedulerQueriesUseTheirIndexes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, raw := schedSetup(t, 1)
	db := raw[0]
	// 20,000 finished jobs with callbacks delivered, and a few waiting ones.
	_, err := db.ExecContext(ctx, `INSERT INTO jobs (id, tenant, type, queue, state, max_attempts, timeout_ms,
			payload, created_at, scheduled_at, callback_url, callback_state, callback_next_at)
		SELECT gen_random_uuid(), 'acme', 'echo', 'q' || (i % 3), CASE WHEN i % 1000 = 0 THEN 'scheduled' ELSE 'succeeded' END,
			3, 1000, '{}', now(), now() - interval '1 hour', 'https://example.com/',
			CASE WHEN i % 1000 = 1 THEN 'pending' ELSE 'delivered' END, now()
		FROM generate_series(1, 20000) i`)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `ANALYZE jobs`); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		query string
		args  []any
		index string
	}{
		{store.DueQuery, []any{1000}, "jobs_due"},
		{store.ClaimCallbacksQuery, []any{100, 120000}, "jobs_callbacks_due"},
	} {
		tx, err := db.BeginTxx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		var plan []string
		err = tx.SelectContext(ctx, &plan, "EXPLAIN "+tc.query, tc.args...)
		_ = tx.Rollback()
		if err != nil {
			t.Fatal(err)
		}
		text := strings.Join(plan, "\n")
		t.Logf("plan:\n%s", text)
		if !strings.Contains(text, tc.index) || strings.Contains(text, "Seq Scan") {
			t.Errorf("plan of %q does not use %s:\n%s", tc.query, tc.index, text)
		}
	}
}

func TestQueueNamesAcrossShards(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := schedSetup(t, 2)
	var jobs []*job.Job
	for i, q := range []string{"b", "a", "c", "a", "b"} {
		j := newJob(i%2, "acme")
		j.Queue = q
		jobs = append(jobs, j)
	}
	if err := s.Insert(ctx, jobs...); err != nil {
		t.Fatal(err)
	}
	got, err := s.QueueNames(ctx)
	if err != nil || !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("QueueNames = %v, %v", got, err)
	}
}

// finishedWithCallback stores a job with a callback URL and runs it to
// success, which makes its callback pending.
func finishedWithCallback(t *testing.T, s *store.Store, shard int) *job.Job {
	t.Helper()
	ctx := context.Background()
	j := newJob(shard, "acme")
	u := "https://example.com/hook"
	j.CallbackURL = &u
	if err := s.Insert(ctx, j); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Claim(ctx, j.ID, "w1", time.Minute); err != nil {
		t.Fatal(err)
	}
	done, err := s.Complete(ctx, j.ID, 1, job.JSON(`{"ok":true}`))
	if err != nil {
		t.Fatal(err)
	}
	if done.CallbackState == nil || *done.CallbackState != "pending" {
		t.Fatalf("callback state after success: %v", done.CallbackState)
	}
	return done
}

func TestClaimAndRecordCallbacks(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, raw := schedSetup(t, 1)
	j := finishedWithCallback(t, s, 0)

	cbs, err := s.ClaimCallbacks(ctx, 0, 10, time.Minute)
	if err != nil || len(cbs) != 1 {
		t.Fatalf("ClaimCallbacks = %d, %v", len(cbs), err)
	}
	c := cbs[0]
	if c.Job.ID != j.ID || c.Attempts != 0 || c.Job.State != job.Succeeded || string(c.Job.Result) != `{"ok": true}` {
		t.Fatalf("claimed %+v (result %s)", c, c.Job.Result)
	}
	// Claimed: not due for anyone else during the lease.
	if again, err := s.ClaimCallbacks(ctx, 0, 10, time.Minute); err != nil || len(again) != 0 {
		t.Fatalf("second claim = %d, %v; want none", len(again), err)
	}

	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := s.RecordCallback(ctx, c, job.CallbackAttempt{At: at, Status: 503, Error: "HTTP 503"}, store.CallbackRetry, 0); err != nil {
		t.Fatal(err)
	}
	// The claim is spent: recording with it again is refused.
	if err := s.RecordCallback(ctx, c, job.CallbackAttempt{At: at}, store.CallbackDelivered, 0); !errors.Is(err, store.ErrClaimLost) || !errors.Is(err, store.ErrConflict) {
		t.Fatalf("stale record: %v, want ErrClaimLost", err)
	}
	// Due again at once (retryIn 0), with one attempt recorded.
	cbs, err = s.ClaimCallbacks(ctx, 0, 10, time.Minute)
	if err != nil || len(cbs) != 1 || cbs[0].Attempts != 1 {
		t.Fatalf("reclaim = %+v, %v", cbs, err)
	}
	if err := s.RecordCallback(ctx, cbs[0], job.CallbackAttempt{At: at.Add(time.Second), Status: 200}, store.CallbackDelivered, 0); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, "acme", j.ID)
	if err != nil {
		t.Fatal(err)
	}
	var attempts []job.CallbackAttempt
	if err := json.Unmarshal(got.Callbacks, &attempts); err != nil {
		t.Fatal(err)
	}
	if *got.CallbackState != "delivered" || len(attempts) != 2 || attempts[0].Status != 503 || attempts[0].Error != "HTTP 503" ||
		!attempts[0].At.Equal(at) || attempts[1].Status != 200 {
		t.Fatalf("after delivery: state %s attempts %s", *got.CallbackState, got.Callbacks)
	}
	var next *time.Time
	if err := raw[0].GetContext(ctx, &next, `SELECT callback_next_at FROM jobs WHERE id = $1`, j.ID); err != nil || next != nil {
		t.Fatalf("callback_next_at after delivery = %v, %v; want NULL", next, err)
	}
}

func TestRecordCallbackRetryWaitsAndFailedIsFinal(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, raw := schedSetup(t, 1)
	a, b := finishedWithCallback(t, s, 0), finishedWithCallback(t, s, 0)
	cbs, err := s.ClaimCallbacks(ctx, 0, 10, time.Minute)
	if err != nil || len(cbs) != 2 {
		t.Fatalf("claim: %d, %v", len(cbs), err)
	}
	for _, c := range cbs {
		outcome := store.CallbackRetry
		if c.Job.ID == b.ID {
			outcome = store.CallbackFailed
		}
		if err := s.RecordCallback(ctx, c, job.CallbackAttempt{At: time.Now(), Error: "connection refused"}, outcome, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	var wait float64
	if err := raw[0].GetContext(ctx, &wait, `SELECT extract(epoch FROM callback_next_at - now()) FROM jobs WHERE id = $1`, a.ID); err != nil {
		t.Fatal(err)
	}
	if wait < 3500 || wait > 3601 {
		t.Fatalf("retry due in %.0fs, want about an hour", wait)
	}
	if again, err := s.ClaimCallbacks(ctx, 0, 10, time.Minute); err != nil || len(again) != 0 {
		t.Fatalf("claim during backoff = %d, %v; want none", len(again), err)
	}
	got, err := s.Get(ctx, "acme", b.ID)
	if err != nil || *got.CallbackState != "failed" {
		t.Fatalf("gave up: %v, %v", got.CallbackState, err)
	}
}

// A job retried (and finished again) while its callback was being delivered
// gets a fresh callback; the late result of the old delivery must not land
// on it.
func TestRecordCallbackAfterRetryOfTheJobIsRefused(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, raw := schedSetup(t, 1)
	j := finishedWithCallback(t, s, 0)
	cbs, err := s.ClaimCallbacks(ctx, 0, 10, time.Minute)
	if err != nil || len(cbs) != 1 {
		t.Fatalf("claim: %d, %v", len(cbs), err)
	}
	// What a manual retry and a second run do to the row.
	for _, q := range []string{
		`UPDATE jobs SET state = 'queued' WHERE id = $1`,
		`UPDATE jobs SET state = 'succeeded' WHERE id = $1`,
	} {
		if _, err := raw[0].ExecContext(ctx, q, j.ID); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.RecordCallback(ctx, cbs[0], job.CallbackAttempt{At: time.Now(), Status: 200}, store.CallbackDelivered, 0); !errors.Is(err, store.ErrClaimLost) {
		t.Fatalf("late record: %v, want ErrClaimLost", err)
	}
	got, err := s.Get(ctx, "acme", j.ID)
	if err != nil || *got.CallbackState != "pending" || len(got.Callbacks) != 0 {
		t.Fatalf("fresh callback: %v %s, %v", got.CallbackState, got.Callbacks, err)
	}
}

func TestReleaseCallbackMakesItDueWithoutAnAttempt(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := schedSetup(t, 1)
	j := finishedWithCallback(t, s, 0)
	cbs, err := s.ClaimCallbacks(ctx, 0, 10, time.Hour)
	if err != nil || len(cbs) != 1 {
		t.Fatalf("claim: %d, %v", len(cbs), err)
	}
	if err := s.ReleaseCallback(ctx, cbs[0]); err != nil {
		t.Fatal(err)
	}
	if err := s.ReleaseCallback(ctx, cbs[0]); !errors.Is(err, store.ErrClaimLost) {
		t.Fatalf("second release: %v, want ErrClaimLost", err)
	}
	again, err := s.ClaimCallbacks(ctx, 0, 10, time.Hour)
	if err != nil || len(again) != 1 || again[0].Attempts != 0 || again[0].Job.ID != j.ID {
		t.Fatalf("claim after release: %+v, %v", again, err)
	}
}
