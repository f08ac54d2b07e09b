package store_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/stacktest"
	"github.com/warrenhq/warren/pkg/store"
	"github.com/warrenhq/warren/pkg/store/storetest"
)

// relayAll takes every unpublished queued job of shard 0 (no grace) and
// returns their ids, publishing with ok.
func relayAll(t *testing.T, s *store.Store, publishErr error) []job.ID {
	t.Helper()
	var got []job.ID
	_, err := s.RelayUnpublished(context.Background(), 0, 100, 0, func(_ context.Context, jobs []store.DueJob) error {
		for _, j := range jobs {
			got = append(got, j.ID)
		}
		return publishErr
	})
	if !errors.Is(err, publishErr) {
		t.Fatalf("RelayUnpublished = %v, want %v", err, publishErr)
	}
	slices.SortFunc(got, func(a, b job.ID) int { return strings.Compare(a.String(), b.String()) })
	return got
}

func sortedIDs(jobs ...*job.Job) []job.ID {
	var out []job.ID
	for _, j := range jobs {
		out = append(out, j.ID)
	}
	slices.SortFunc(out, func(a, b job.ID) int { return strings.Compare(a.String(), b.String()) })
	return out
}

func TestOutboxEveryPathToQueuedIsPublishedOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := schedSetup(t, 1)

	// The api's insert: unpublished until marked.
	marked, lost := newJob(0, "acme"), newJob(0, "acme")
	due := waiting(0, job.Scheduled, time.Now().Add(-time.Second))
	later := waiting(0, job.Scheduled, time.Now().Add(time.Hour))
	if err := s.Insert(ctx, marked, lost, due, later); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkPublished(ctx, []job.ID{marked.ID}); err != nil {
		t.Fatal(err)
	}
	// Dispatch publishes and marks in its own transaction.
	if n, err := s.PublishDue(ctx, 0, 10, func(context.Context, []store.DueJob) error { return nil }); n != 1 || err != nil {
		t.Fatalf("PublishDue = %d, %v", n, err)
	}
	// A grace period keeps the relay off jobs the api is still publishing.
	if n, err := s.RelayUnpublished(ctx, 0, 10, time.Hour, func(context.Context, []store.DueJob) error {
		t.Error("relay took a job younger than its grace period")
		return nil
	}); n != 0 || err != nil {
		t.Fatalf("RelayUnpublished with a grace of 1h = %d, %v", n, err)
	}
	// Only the job that was never marked needs the relay.
	if got := relayAll(t, s, nil); !slices.Equal(got, sortedIDs(lost)) {
		t.Fatalf("relay took %v, want only %s", got, lost.ID)
	}
	// Once relayed, it is not relayed again.
	if got := relayAll(t, s, nil); len(got) != 0 {
		t.Fatalf("relayed again: %v", got)
	}

	// A relay whose publish fails marks nothing.
	other := inserted(t, s, 0, "acme")
	boom := errors.New("rabbitmq down")
	relayAll(t, s, boom)
	if got := relayAll(t, s, nil); !slices.Equal(got, sortedIDs(other)) {
		t.Fatalf("after a failed publish the relay took %v, want %s", got, other.ID)
	}

	// A worker's hand-back makes the job queued again without a message of
	// its own: the relay publishes it (the trigger stamps queued_at).
	c, err := s.Claim(ctx, marked.ID, "w1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Release(ctx, c.ID, c.Attempt); err != nil {
		t.Fatal(err)
	}
	// A retry by hand, published and marked by the api.
	c, err = s.Claim(ctx, lost.ID, "w1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Fail(ctx, c.ID, c.Attempt, "boom", time.Now(), true); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Retry(ctx, "acme", lost.ID); err != nil {
		t.Fatal(err)
	}
	if got := relayAll(t, s, boom); !slices.Equal(got, sortedIDs(marked, lost)) {
		t.Fatalf("after a hand-back and a retry the relay took %v, want %v", got, sortedIDs(marked, lost))
	}
	if err := s.MarkPublished(ctx, []job.ID{lost.ID}); err != nil {
		t.Fatal(err)
	}
	if got := relayAll(t, s, nil); !slices.Equal(got, sortedIDs(marked)) {
		t.Fatalf("relay took %v, want the handed-back job %s only", got, marked.ID)
	}
	// A mark for a job claimed meanwhile changes nothing.
	c, err = s.Claim(ctx, marked.ID, "w1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.MarkPublished(ctx, []job.ID{marked.ID}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Get(ctx, "acme", marked.ID); got.State != job.Running || got.Attempt != c.Attempt {
		t.Fatalf("mark changed a running job: %s attempt %d", got.State, got.Attempt)
	}
}

func TestRelaySkipsJobsLockedByAClaim(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, raw := schedSetup(t, 1)
	a, b := newJob(0, "acme"), newJob(0, "acme")
	if err := s.Insert(ctx, a, b); err != nil {
		t.Fatal(err)
	}
	tx, err := raw[0].BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, `SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE`, a.ID); err != nil {
		t.Fatal(err)
	}
	if got := relayAll(t, s, nil); !slices.Equal(got, sortedIDs(b)) {
		t.Fatalf("relay took %v, want only the unlocked %s", got, b.ID)
	}
}

// expire ends the lease of a running job now.
func expire(t *testing.T, db *sqlx.DB, id job.ID) {
	t.Helper()
	if _, err := db.Exec(`UPDATE jobs SET lease_until = now() - interval '1 second' WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}
}

func TestReapExpiredRequeuesCountingTheAttemptAndFencesTheLateWorker(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, raw := schedSetup(t, 1)
	lostJob, lastTry, alive := newJob(0, "acme"), newJob(0, "acme"), newJob(0, "acme")
	lastTry.MaxAttempts = 1
	if err := s.Insert(ctx, lostJob, lastTry, alive); err != nil {
		t.Fatal(err)
	}
	for _, j := range []*job.Job{lostJob, lastTry, alive} {
		if _, err := s.Claim(ctx, j.ID, "w-old", time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	expire(t, raw[0], lostJob.ID)
	expire(t, raw[0], lastTry.ID)

	var published []store.DueJob
	r, err := s.ReapExpired(ctx, 0, 10, func(_ context.Context, jobs []store.DueJob) error {
		published = jobs
		return nil
	})
	if err != nil || r != (store.Reaped{Requeued: 1, Dead: 1}) {
		t.Fatalf("ReapExpired = %+v, %v", r, err)
	}
	if len(published) != 1 || published[0].ID != lostJob.ID {
		t.Fatalf("published %+v, want the job with attempts left", published)
	}
	got, _ := s.Get(ctx, "acme", lostJob.ID)
	if got.State != job.Queued || got.Attempt != 1 || got.Error == nil || !strings.HasPrefix(*got.Error, "worker lost: lease expired") {
		t.Fatalf("reaped job: %s attempt %d error %v", got.State, got.Attempt, got.Error)
	}
	got, _ = s.Get(ctx, "acme", lastTry.ID)
	if got.State != job.Dead || got.FinishedAt == nil || !strings.Contains(*got.Error, "no attempts left") {
		t.Fatalf("job without attempts left: %s error %v", got.State, got.Error)
	}
	if got, _ := s.Get(ctx, "acme", alive.ID); got.State != job.Running {
		t.Fatalf("a job with a live lease was reaped: %s", got.State)
	}
	// Published in the reaper's transaction: nothing for the relay.
	if ids := relayAll(t, s, nil); len(ids) != 0 {
		t.Fatalf("the relay took reaped and published jobs: %v", ids)
	}
	// Nothing is reaped twice.
	if r, err := s.ReapExpired(ctx, 0, 10, nil); err != nil || r != (store.Reaped{}) {
		t.Fatalf("second ReapExpired = %+v, %v", r, err)
	}

	// Another worker claims the next attempt; the lost worker comes back
	// late with the outcome of the first: refused, whatever it says.
	next, err := s.Claim(ctx, lostJob.ID, "w-new", time.Minute)
	if err != nil || next.Attempt != 2 {
		t.Fatalf("reclaim: attempt %v, %v", next, err)
	}
	var se *store.StateError
	if _, err := s.Complete(ctx, lostJob.ID, 1, job.JSON(`{"late":true}`)); !errors.As(err, &se) {
		t.Fatalf("late Complete of attempt 1 = %v, want a *StateError", err)
	}
	if _, err := s.Fail(ctx, lostJob.ID, 1, "late", time.Now(), true); !errors.As(err, &se) {
		t.Fatalf("late Fail of attempt 1 = %v, want a *StateError", err)
	}
	if held, err := s.ExtendLeases(ctx, "w-old", time.Minute, []job.ID{lostJob.ID}); err != nil || len(held) != 0 {
		t.Fatalf("the lost worker still renews the lease: %v, %v", held, err)
	}
	done, err := s.Complete(ctx, lostJob.ID, 2, job.JSON(`{"ok":true}`))
	if err != nil || done.State != job.Succeeded || !strings.Contains(string(done.Result), `"ok"`) || done.Error != nil {
		t.Fatalf("Complete of attempt 2 = %+v, %v", done, err)
	}
	// Even after the job ended, attempt 1 cannot overwrite it.
	if _, err := s.Complete(ctx, lostJob.ID, 1, job.JSON(`{"late":true}`)); !errors.As(err, &se) || se.State != job.Succeeded {
		t.Fatalf("late Complete after success = %v", err)
	}
}

func TestReapExpiredWithoutRabbitMQLeavesTheJobsToTheRelay(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, raw := schedSetup(t, 1)
	a, b := newJob(0, "acme"), newJob(0, "acme")
	if err := s.Insert(ctx, a, b); err != nil {
		t.Fatal(err)
	}
	for _, j := range []*job.Job{a, b} {
		if _, err := s.Claim(ctx, j.ID, "w", time.Minute); err != nil {
			t.Fatal(err)
		}
		expire(t, raw[0], j.ID)
	}
	boom := errors.New("rabbitmq down")
	r, err := s.ReapExpired(ctx, 0, 1, func(context.Context, []store.DueJob) error { return boom })
	if !errors.Is(err, boom) || r != (store.Reaped{Requeued: 1, Unpublished: 1}) {
		t.Fatalf("ReapExpired with a failing publish = %+v, %v", r, err)
	}
	r, err = s.ReapExpired(ctx, 0, 10, nil) // RabbitMQ known to be down: no publish
	if err != nil || r != (store.Reaped{Requeued: 1, Unpublished: 1}) {
		t.Fatalf("ReapExpired without publish = %+v, %v", r, err)
	}
	if got := relayAll(t, s, nil); !slices.Equal(got, sortedIDs(a, b)) {
		t.Fatalf("relay took %v, want both requeued jobs", got)
	}
}

// finish puts a job in a terminal state that ended age ago.
func finish(t *testing.T, db *sqlx.DB, j *job.Job, st job.State, age time.Duration, callback string) {
	t.Helper()
	var cb any
	if callback != "" {
		cb = callback
	}
	if _, err := db.Exec(`UPDATE jobs SET state = $2, finished_at = now() - $3 * interval '1 millisecond',
			callback_state = $4 WHERE id = $1`, j.ID, string(st), age.Milliseconds(), cb); err != nil {
		t.Fatal(err)
	}
}

func TestDeleteFinishedInBatchesByStateAndAge(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, raw := schedSetup(t, 1)
	week, month := 7*24*time.Hour, 30*24*time.Hour
	var old, keep []*job.Job
	add := func(st job.State, age time.Duration, callback string, expired bool) {
		j := inserted(t, s, 0, "acme")
		if st != job.Queued {
			finish(t, raw[0], j, st, age, callback)
		}
		if expired {
			old = append(old, j)
		} else {
			keep = append(keep, j)
		}
	}
	for range 5 {
		add(job.Succeeded, week+time.Hour, "", true)
	}
	add(job.Cancelled, week+time.Hour, "delivered", true)
	add(job.Succeeded, week-time.Hour, "", false)        // not old enough
	add(job.Succeeded, week+time.Hour, "pending", false) // callback still to deliver
	add(job.Dead, week+time.Hour, "", false)             // dead jobs are kept longer
	add(job.Dead, month+time.Hour, "", true)
	add(job.Queued, 0, "", false)

	finished := []job.State{job.Succeeded, job.Cancelled}
	var batches []int
	for {
		n, err := s.DeleteFinished(ctx, 0, finished, week, 2)
		if err != nil {
			t.Fatal(err)
		}
		batches = append(batches, n)
		if n < 2 {
			break
		}
	}
	if !slices.Equal(batches, []int{2, 2, 2, 0}) {
		t.Fatalf("batches deleted %v, want [2 2 2 0]", batches)
	}
	if n, err := s.DeleteFinished(ctx, 0, []job.State{job.Dead}, month, 500); n != 1 || err != nil {
		t.Fatalf("dead jobs: deleted %d, %v; want 1", n, err)
	}
	for _, j := range old {
		if _, err := s.Get(ctx, "acme", j.ID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("expired job %s: %v, want deleted", j.ID, err)
		}
	}
	for _, j := range keep {
		if _, err := s.Get(ctx, "acme", j.ID); err != nil {
			t.Errorf("job %s should be kept: %v", j.ID, err)
		}
	}
	if _, err := s.DeleteFinished(ctx, 0, []job.State{job.Queued}, week, 1); err == nil {
		t.Error("DeleteFinished accepted a state that is not terminal")
	}
}

func TestCronTickNeverGoesBackForOneSchedule(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := storetest.New(t, 2)
	t0 := time.Date(2030, 1, 1, 3, 0, 0, 0, time.UTC)
	for _, step := range []struct {
		schedule string
		tick     time.Time
		want     time.Time
	}{
		{"0 3 * * *", t0, t0},
		{"0 3 * * *", t0.Add(24 * time.Hour), t0.Add(24 * time.Hour)},
		{"0 3 * * *", t0, t0.Add(24 * time.Hour)}, // a deposed leader, late
		{"0 4 * * *", t0, t0},                     // a new schedule starts afresh
	} {
		if err := s.RecordCronTick(ctx, "nightly", step.schedule, step.tick); err != nil {
			t.Fatal(err)
		}
		ticks, err := s.CronTicks(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got := ticks["nightly"]
		if got.Schedule != step.schedule || !got.LastTick.Equal(step.want) {
			t.Fatalf("after recording %s for %q: %+v, want %s", step.tick, step.schedule, got, step.want)
		}
	}
	for _, key := range []string{"a", "cron:nightly:1893466800", "x"} {
		if n := s.IdempotencyShard("default", key); n < 0 || n >= 2 || n != s.IdempotencyShard("default", key) {
			t.Fatalf("IdempotencyShard(%q) = %d", key, n)
		}
	}
}

func TestElectorOneLeaderPerClusterAndLossOfTheSession(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	urls := storetest.URLs(t, 1)
	open := func(urls []string) *store.Store {
		s, err := store.Open(store.Config{URLs: urls, MaxConns: 2})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		return s
	}
	s1, s2 := open(urls), open(urls)
	a, b := s1.NewElector(5*time.Second), s2.NewElector(5*time.Second)
	t.Cleanup(a.Drop)
	t.Cleanup(b.Drop)
	if _, ok, err := s1.LeaderPID(ctx); ok || err != nil {
		t.Fatalf("LeaderPID before any election: %v, %v", ok, err)
	}
	if got, err := a.TryAcquire(ctx); !got || err != nil {
		t.Fatalf("first TryAcquire = %v, %v", got, err)
	}
	if got, err := b.TryAcquire(ctx); got || err != nil {
		t.Fatalf("second TryAcquire = %v, %v; want false", got, err)
	}
	if err := a.Check(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Check(ctx); !errors.Is(err, store.ErrNotLeader) {
		t.Fatalf("Check of the standby = %v", err)
	}
	// Another cluster (its own schema) elects its own leader.
	other := open(storetest.URLs(t, 1)).NewElector(0)
	t.Cleanup(other.Drop)
	if got, err := other.TryAcquire(ctx); !got || err != nil {
		t.Fatalf("TryAcquire in another schema = %v, %v", got, err)
	}

	// Cutting the leader's session (as a network failure or a restart of
	// Postgres would) loses the leadership; the standby then takes it.
	pid, ok, err := s2.LeaderPID(ctx)
	if err != nil || !ok {
		t.Fatalf("LeaderPID = %v, %v", ok, err)
	}
	terminate(t, urls[0], pid)
	if err := a.Check(ctx); err == nil || a.Held() {
		t.Fatal("Check passed after the leader's session was terminated")
	}
	if !stacktest.Until(10*time.Second, func() bool {
		var got bool
		got, err = b.TryAcquire(ctx)
		return got
	}) {
		t.Fatalf("the standby did not take over: %v", err)
	}
	if got, err := a.TryAcquire(ctx); got || err != nil {
		t.Fatalf("the old leader took the lock back: %v, %v", got, err)
	}
	// A clean Drop frees it as soon as Postgres has ended the session.
	b.Drop()
	if !stacktest.Until(5*time.Second, func() bool {
		var got bool
		got, err = a.TryAcquire(ctx)
		return got
	}) {
		t.Fatalf("TryAcquire after the leader dropped = false, %v", err)
	}
}

func TestElectorSessionTimeoutFreesTheLockOfAFrozenLeader(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	urls := storetest.URLs(t, 1)
	s, err := store.Open(store.Config{URLs: urls, MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	frozen, standby := s.NewElector(time.Second), s.NewElector(time.Second)
	t.Cleanup(frozen.Drop)
	t.Cleanup(standby.Drop)
	if got, err := frozen.TryAcquire(ctx); !got || err != nil {
		t.Fatalf("TryAcquire = %v, %v", got, err)
	}
	// The leader runs no Check (it froze); Postgres ends its idle session.
	start := time.Now()
	if !stacktest.Until(15*time.Second, func() bool {
		got, _ := standby.TryAcquire(ctx)
		return got
	}) {
		t.Fatal("the lock of a silent leader was never freed")
	}
	t.Logf("a silent leader's lock was freed after %s", time.Since(start).Round(time.Millisecond))
	if err := frozen.Check(ctx); err == nil {
		t.Fatal("the frozen leader's Check passed after its session ended")
	}
}

// terminate ends a Postgres backend, as an admin would.
func terminate(t *testing.T, url string, pid int) {
	t.Helper()
	db, err := sqlx.Open("postgres", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var ok bool
	if err := db.Get(&ok, `SELECT pg_terminate_backend($1)`, pid); err != nil || !ok {
		t.Fatalf("pg_terminate_backend(%d) = %v, %v", pid, ok, err)
	}
}

// The leader duties' queries use their indexes: most rows of a real shard
// are finished jobs.
func TestLeaderDutyQueriesUseTheirIndexes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, raw := schedSetup(t, 1)
	db := raw[0]
	_, err := db.ExecContext(ctx, `INSERT INTO jobs (id, tenant, type, queue, state, max_attempts, timeout_ms,
			payload, created_at, finished_at, published_at, lease_until)
		SELECT gen_random_uuid(), 'acme', 'echo', 'default',
			CASE i % 100 WHEN 0 THEN 'queued' WHEN 1 THEN 'running' WHEN 2 THEN 'scheduled' ELSE 'succeeded' END,
			3, 1000, '{}', now(),
			CASE WHEN i % 100 > 2 THEN now() - (i % 20) * interval '1 day' END,
			CASE WHEN i % 200 = 0 THEN now() END,
			CASE WHEN i % 100 = 1 THEN now() + interval '1 minute' END
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
		{store.QueueDueQuery, []any{1000}, "jobs_due"},
		{store.RelayQuery, []any{1000, 3000}, "jobs_unpublished"},
		{store.ExpiredQuery, []any{500}, "jobs_lease"},
		{store.ExpiredFinishedQuery, []any{"{succeeded,cancelled}", int64(7 * 24 * 3600 * 1000), 500}, "jobs_finished_at"},
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

// A worker may get a message the moment RabbitMQ confirms it. Its claim
// must then succeed: the job has to be queued, committed, before the
// publish. (A claim locks its row by id before it tests the state: a
// publish made while the transaction that queued the job still held the row
// would have the claim below wait for that transaction, which waits for
// the publish, and fail after 10 s.)
func TestAClaimDuringThePublishSucceeds(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, raw := schedSetup(t, 1)
	due := waiting(0, job.Retrying, time.Now().Add(-time.Second))
	lost, queued := newJob(0, "acme"), newJob(0, "acme")
	if err := s.Insert(ctx, due, lost, queued); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Claim(ctx, lost.ID, "w-dead", time.Minute); err != nil {
		t.Fatal(err)
	}
	expire(t, raw[0], lost.ID)
	fastWorker := func(_ context.Context, jobs []store.DueJob) error {
		for _, j := range jobs {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			c, err := s.Claim(cctx, j.ID, "w-fast", time.Minute)
			cancel()
			if err != nil {
				t.Errorf("claim of %s during its publish: %v", j.ID, err)
				continue
			}
			if _, err := s.Complete(ctx, c.ID, c.Attempt, nil); err != nil {
				t.Error(err)
			}
		}
		return nil
	}
	if n, err := s.PublishDue(ctx, 0, 10, fastWorker); n != 1 || err != nil {
		t.Fatalf("PublishDue = %d, %v", n, err)
	}
	if r, err := s.ReapExpired(ctx, 0, 10, fastWorker); r.Requeued != 1 || err != nil {
		t.Fatalf("ReapExpired = %+v, %v", r, err)
	}
	// The relay holds its rows while it publishes: they are queued, so a
	// claim waits for the relay's commit and then succeeds.
	claimed := make(chan error, 1)
	_, err := s.RelayUnpublished(ctx, 0, 10, 0, func(_ context.Context, jobs []store.DueJob) error {
		if len(jobs) != 1 || jobs[0].ID != queued.ID {
			t.Errorf("relay took %+v", jobs)
		}
		go func() {
			_, err := s.Claim(ctx, queued.ID, "w-fast", time.Minute)
			claimed <- err
		}()
		select {
		case err := <-claimed:
			t.Errorf("the claim did not wait for the relay's commit: %v", err)
		case <-time.After(200 * time.Millisecond):
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-claimed; err != nil {
		t.Fatalf("claim after the relay's commit: %v", err)
	}
	for _, j := range []*job.Job{due, lost} {
		if got, _ := s.Get(ctx, "acme", j.ID); got.State != job.Succeeded {
			t.Errorf("job %s is %s", j.ID, got.State)
		}
	}
}

func TestPublishDueLeavesAFailedBatchToTheRelay(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := schedSetup(t, 1)
	a, b := waiting(0, job.Scheduled, time.Now().Add(-time.Second)), waiting(0, job.Retrying, time.Now().Add(-time.Second))
	if err := s.Insert(ctx, a, b); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("rabbitmq down")
	n, err := s.PublishDue(ctx, 0, 10, func(context.Context, []store.DueJob) error { return boom })
	if n != 2 || !errors.Is(err, boom) {
		t.Fatalf("PublishDue with a failing publish = %d, %v", n, err)
	}
	if st := states(t, s, a, b); !slices.Equal(st, []job.State{job.Queued, job.Queued}) {
		t.Fatalf("states: %v", st)
	}
	if got := relayAll(t, s, nil); !slices.Equal(got, sortedIDs(a, b)) {
		t.Fatalf("relay took %v, want both jobs", got)
	}
}
