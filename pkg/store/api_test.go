package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/store"
	"github.com/warrenhq/warren/pkg/store/storetest"
)

func TestInsertBatchOneStatementPerShard(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := storetest.New(t, 2)
	var jobs []*job.Job
	for i := range 10 {
		j := newJob(i%2, "acme")
		j.Payload = job.JSON(fmt.Sprintf(`{"n":%d}`, i))
		jobs = append(jobs, j)
	}
	at := time.Now().UTC().Add(time.Hour).Truncate(time.Microsecond)
	url, key := "https://example.com/hook", "k1"
	jobs[3].State, jobs[3].ScheduledAt, jobs[3].CallbackURL = job.Scheduled, &at, &url
	jobs[4].IdempotencyKey, jobs[4].RequestHash = &key, []byte{1, 2, 3}
	jobs[5].Payload = job.JSON(`null`) // stored as {}
	for shard, err := range s.InsertBatch(ctx, jobs) {
		if err != nil {
			t.Fatalf("shard %d: %v", shard, err)
		}
	}
	for _, want := range jobs {
		got, err := s.Get(ctx, "acme", want.ID)
		if err != nil {
			t.Fatalf("job %s not stored: %v", want.ID, err)
		}
		if got.State != want.State || got.Queue != "default" || got.MaxAttempts != 3 || got.TimeoutMS != 30_000 || !got.CreatedAt.Equal(want.CreatedAt) {
			t.Errorf("stored %+v, want %+v", got, want)
		}
	}
	got, _ := s.Get(ctx, "acme", jobs[3].ID)
	if got.ScheduledAt == nil || !got.ScheduledAt.Equal(at) || got.CallbackURL == nil || *got.CallbackURL != url {
		t.Errorf("scheduled job: %+v", got)
	}
	got, _ = s.Get(ctx, "acme", jobs[4].ID)
	if got.IdempotencyKey == nil || *got.IdempotencyKey != key || !bytes.Equal(got.RequestHash, []byte{1, 2, 3}) {
		t.Errorf("idempotency columns: %v %x", got.IdempotencyKey, got.RequestHash)
	}
	got, _ = s.Get(ctx, "acme", jobs[5].ID)
	if string(got.Payload) != `{}` {
		t.Errorf("null payload stored as %s", got.Payload)
	}
	if got, _ := s.Get(ctx, "acme", jobs[7].ID); string(got.Payload) != `{"n": 7}` {
		t.Errorf("payload %s", got.Payload)
	}
}

func TestInsertBatchShardsCommitIndependently(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := storetest.New(t, 2)
	existing := inserted(t, s, 1, "acme")
	good0, good1 := newJob(0, "acme"), newJob(1, "acme")
	dup := *existing // same id: shard 1's statement fails as a whole
	errs := s.InsertBatch(ctx, []*job.Job{good0, good1, &dup, newJob(5, "acme")})
	if len(errs) != 6 || errs[0] != nil || errs[1] == nil || errs[5] == nil {
		t.Fatalf("per-shard errors: %v", errs)
	}
	var se *store.ShardError
	if !errors.As(errs[1], &se) || se.Shard != 1 {
		t.Errorf("shard 1's error %v is not a ShardError for shard 1", errs[1])
	}
	if !errors.Is(errs[5], store.ErrBadShard) {
		t.Errorf("missing shard: %v", errs[5])
	}
	if _, err := s.Get(ctx, "acme", good0.ID); err != nil {
		t.Errorf("shard 0's job was not committed: %v", err)
	}
	if _, err := s.Get(ctx, "acme", good1.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("shard 1's other job was committed (%v): the shard's statement is not atomic", err)
	}
}

func TestInsertIdempotentRace(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := storetest.New(t, 1)
	key := "order-42"
	const n = 20
	var wg sync.WaitGroup
	type outcome struct {
		id      job.ID
		created bool
		err     error
	}
	out := make([]outcome, n)
	for i := range n {
		wg.Go(func() {
			j := newJob(0, "acme")
			j.IdempotencyKey, j.RequestHash = &key, []byte("h")
			got, created, err := s.InsertIdempotent(ctx, j)
			out[i] = outcome{err: err, created: created}
			if err == nil {
				out[i].id = got.ID
			}
		})
	}
	wg.Wait()
	created := 0
	for i, o := range out {
		if o.err != nil {
			t.Fatalf("call %d: %v", i, o.err)
		}
		if o.created {
			created++
		}
		if o.id != out[0].id {
			t.Fatalf("call %d got job %s, call 0 got %s", i, o.id, out[0].id)
		}
	}
	if created != 1 {
		t.Fatalf("%d calls created a job, want exactly 1", created)
	}
	// Another tenant's key space is its own.
	j := newJob(0, "globex")
	j.IdempotencyKey = &key
	if _, created, err := s.InsertIdempotent(ctx, j); err != nil || !created {
		t.Fatalf("other tenant, same key: created=%v, %v", created, err)
	}
	page, _, err := s.List(ctx, store.ListQuery{Tenant: "acme", Limit: 100})
	if err != nil || len(page) != 1 {
		t.Fatalf("acme has %d jobs (%v), want 1", len(page), err)
	}
}

func TestCancelAndRetryTransitions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := storetest.New(t, 2)
	for _, from := range []job.State{job.Scheduled, job.Queued, job.Running, job.Retrying} {
		j := newJob(1, "acme")
		j.State = from
		noErr(t, s.Insert(ctx, j))
		got, err := s.Cancel(ctx, "acme", j.ID)
		if err != nil || got.State != job.Cancelled || got.FinishedAt == nil {
			t.Fatalf("cancel from %s: %+v, %v", from, got, err)
		}
	}
	j := newJob(0, "acme")
	noErr(t, s.Insert(ctx, j))
	if _, err := s.Cancel(ctx, "globex", j.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("another tenant cancelled: %v", err)
	}
	// A running attempt is fenced off by the cancel.
	claimed, err := s.Claim(ctx, j.ID, "w1", time.Minute)
	noErr(t, err)
	if _, err := s.Cancel(ctx, "acme", j.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Complete(ctx, j.ID, claimed.Attempt, job.JSON(`1`)); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("complete after cancel: %v, want a conflict", err)
	}
	var se *store.StateError
	if _, err := s.Cancel(ctx, "acme", j.ID); !errors.As(err, &se) || se.State != job.Cancelled {
		t.Fatalf("second cancel: %v, want StateError cancelled", err)
	}
	if _, err := s.Retry(ctx, "globex", j.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("another tenant retried: %v", err)
	}
	got, err := s.Retry(ctx, "acme", j.ID)
	if err != nil || got.State != job.Queued || got.Attempt != 0 || got.FinishedAt != nil || got.StartedAt != nil || got.Error != nil || got.Result != nil {
		t.Fatalf("retry: %+v, %v", got, err)
	}
	if _, err := s.Retry(ctx, "acme", j.ID); !errors.As(err, &se) || se.State != job.Queued {
		t.Fatalf("retry of a queued job: %v", err)
	}
	// dead → retry; succeeded → neither.
	d := newJob(0, "acme")
	noErr(t, s.Insert(ctx, d))
	c, err := s.Claim(ctx, d.ID, "w1", time.Minute)
	noErr(t, err)
	_, err = s.Fail(ctx, d.ID, c.Attempt, "boom", time.Now(), true)
	noErr(t, err)
	if got, err := s.Retry(ctx, "acme", d.ID); err != nil || got.State != job.Queued || got.Error != nil {
		t.Fatalf("retry dead: %+v, %v", got, err)
	}
	c, err = s.Claim(ctx, d.ID, "w1", time.Minute)
	noErr(t, err)
	_, err = s.Complete(ctx, d.ID, c.Attempt, job.JSON(`"ok"`))
	noErr(t, err)
	if _, err := s.Cancel(ctx, "acme", d.ID); !errors.As(err, &se) || se.State != job.Succeeded {
		t.Fatalf("cancel succeeded: %v", err)
	}
	if _, err := s.Retry(ctx, "acme", d.ID); !errors.As(err, &se) || se.State != job.Succeeded {
		t.Fatalf("retry succeeded: %v", err)
	}
	if _, err := s.Cancel(ctx, "acme", job.NewID(time.Now(), 9)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("cancel on a missing shard: %v", err)
	}
}

func TestListMergesShardsNewestFirst(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := storetest.New(t, 3)
	base := time.Now().UTC().Truncate(time.Millisecond)
	var all []*job.Job
	for i := range 30 {
		j := newJob(i%3, "acme")
		j.ID = job.NewID(base.Add(time.Duration(i)*time.Millisecond), i%3)
		if i%5 == 0 {
			j.Queue, j.Type = "mail", "send"
		}
		all = append(all, j)
	}
	noErr(t, s.Insert(ctx, all...))
	noErr(t, s.Insert(ctx, newJob(0, "globex")))
	var seen []job.ID
	before := job.ID{}
	for range 20 {
		page, more, err := s.List(ctx, store.ListQuery{Tenant: "acme", Limit: 7, Before: before})
		noErr(t, err)
		for _, j := range page {
			seen = append(seen, j.ID)
		}
		if !more {
			break
		}
		before = page[len(page)-1].ID
	}
	if len(seen) != 30 {
		t.Fatalf("walked %d jobs, want 30", len(seen))
	}
	for i, id := range seen {
		if want := all[29-i].ID; id != want {
			t.Fatalf("position %d: %s, want %s", i, id, want)
		}
	}
	page, more, err := s.List(ctx, store.ListQuery{Tenant: "acme", Queue: "mail", Type: "send", State: job.Queued, Limit: 100})
	if err != nil || more || len(page) != 6 {
		t.Fatalf("filtered: %d jobs, more=%v, %v", len(page), more, err)
	}
	if page, _, _ := s.List(ctx, store.ListQuery{Tenant: "acme", State: job.Dead, Limit: 5}); len(page) != 0 {
		t.Fatalf("dead filter: %d jobs", len(page))
	}
	if _, _, err := s.List(ctx, store.ListQuery{Tenant: "acme"}); err == nil {
		t.Fatal("limit 0 accepted")
	}
}

func TestQueueStats(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := storetest.New(t, 2)
	old := time.Now().UTC().Add(-time.Minute).Truncate(time.Microsecond)
	a := newJob(0, "acme")
	a.CreatedAt = old
	b, c := newJob(1, "acme"), newJob(1, "acme")
	sch := newJob(0, "acme")
	sch.State = job.Scheduled
	mail := newJob(1, "acme")
	mail.Queue = "mail"
	noErr(t, s.Insert(ctx, a, b, c, sch, mail, newJob(0, "globex")))
	cl, err := s.Claim(ctx, c.ID, "w", time.Minute)
	noErr(t, err)
	_, err = s.Complete(ctx, c.ID, cl.Attempt, nil)
	noErr(t, err)
	cl, err = s.Claim(ctx, mail.ID, "w", time.Minute)
	noErr(t, err)
	_, err = s.Fail(ctx, mail.ID, cl.Attempt, "x", time.Now(), true)
	noErr(t, err)

	stats, errs := s.QueueStats(ctx, "acme")
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	if len(stats) != 2 || stats[0].Queue != "default" || stats[1].Queue != "mail" {
		t.Fatalf("queues: %+v", stats)
	}
	d, m := stats[0], stats[1]
	if d.Ready != 2 || d.Scheduled != 1 || d.Running != 0 || d.FinishedLastMinute != 1 || d.Dead != 0 {
		t.Errorf("default: %+v", d)
	}
	if d.OldestReadyAge < 55 || d.OldestReadyAge > 120 {
		t.Errorf("oldest ready age %.1fs, want about 60", d.OldestReadyAge)
	}
	if m.Dead != 1 || m.Ready != 0 || m.OldestReadyAge != 0 || m.FinishedLastMinute != 1 {
		t.Errorf("mail: %+v", m)
	}
}

func noErr(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
