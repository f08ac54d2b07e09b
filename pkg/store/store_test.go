package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/store"
	"github.com/warrenhq/warren/pkg/store/storetest"
)

func newJob(shard int, tenant string) *job.Job {
	now := time.Now().UTC().Truncate(time.Microsecond)
	return &job.Job{
		ID: job.NewID(now, shard), Tenant: tenant, Type: "echo", Queue: "default",
		State: job.Queued, MaxAttempts: 3, TimeoutMS: 30_000,
		Payload: job.JSON(`{"hello":"world"}`), CreatedAt: now,
	}
}

// inserted stores newJob(shard, tenant) in s and returns it.
func inserted(t *testing.T, s *store.Store, shard int, tenant string) *job.Job {
	t.Helper()
	j := newJob(shard, tenant)
	if err := s.Insert(context.Background(), j); err != nil {
		t.Fatal(err)
	}
	return j
}

func TestInsertGetAcrossShards(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := storetest.New(t, 2)
	a, b := newJob(0, "acme"), newJob(1, "acme")
	if err := s.Insert(ctx, a, b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []*job.Job{a, b} {
		got, err := s.Get(ctx, "acme", want.ID)
		if err != nil {
			t.Fatalf("get %s: %v", want.ID, err)
		}
		if got.ID != want.ID || got.State != job.Queued || got.Type != "echo" || !got.CreatedAt.Equal(want.CreatedAt) {
			t.Errorf("got %+v, want %+v", got, want)
		}
		var p map[string]string
		if err := json.Unmarshal(got.Payload, &p); err != nil || p["hello"] != "world" {
			t.Errorf("payload: got %s", got.Payload)
		}
	}
	// The id routes the read: the other shard does not have the row.
	other := *a
	other.ID = job.NewID(time.Now(), 1)
	if _, err := s.Get(ctx, "acme", other.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown id: got %v, want ErrNotFound", err)
	}
	if _, err := s.Get(ctx, "acme", job.NewID(time.Now(), 9)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("id on a shard that does not exist: got %v, want ErrNotFound", err)
	}
}

func TestTenantSeesOnlyOwnJobs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := storetest.New(t, 1)
	j := inserted(t, s, 0, "acme")
	if _, err := s.Get(ctx, "globex", j.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("other tenant: got %v, want ErrNotFound", err)
	}
}

func TestClaimOnlyOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := storetest.New(t, 1)
	j := inserted(t, s, 0, "acme")
	const racers = 16
	var wg sync.WaitGroup
	wins := make(chan *job.Job, racers)
	for i := range racers {
		wg.Go(func() {
			got, err := s.Claim(ctx, j.ID, "w"+string(rune('a'+i)), time.Minute)
			if err == nil {
				wins <- got
				return
			}
			var se *store.StateError
			if !errors.As(err, &se) || se.State != job.Running {
				t.Errorf("losing claim: got %v, want a StateError in state running", err)
			}
		})
	}
	wg.Wait()
	close(wins)
	var n int
	for got := range wins {
		n++
		if got.State != job.Running || got.Attempt != 1 || got.StartedAt == nil {
			t.Errorf("claimed job: %+v", got)
		}
	}
	if n != 1 {
		t.Fatalf("%d claims won, want exactly 1", n)
	}
}

func TestCompleteIsFencedByAttempt(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := storetest.New(t, 1)
	j := inserted(t, s, 0, "acme")
	c, err := s.Claim(ctx, j.ID, "w1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Complete(ctx, j.ID, c.Attempt+1, job.JSON(`1`)); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("complete with a stale attempt: got %v, want ErrConflict", err)
	}
	done, err := s.Complete(ctx, j.ID, c.Attempt, job.JSON(`{"ok":true}`))
	if err != nil {
		t.Fatal(err)
	}
	if done.State != job.Succeeded || done.FinishedAt == nil || string(done.Result) != `{"ok": true}` {
		t.Fatalf("completed job: %+v result %s", done, done.Result)
	}
	// Succeeded is terminal: no second success, no claim.
	if _, err := s.Complete(ctx, j.ID, c.Attempt, job.JSON(`2`)); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("second completion: got %v, want ErrConflict", err)
	}
	if _, err := s.Claim(ctx, j.ID, "w2", time.Minute); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("claim of a finished job: got %v, want ErrConflict", err)
	}
}

func TestFailRetriesThenDies(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := storetest.New(t, 1)
	j := newJob(0, "acme")
	j.MaxAttempts = 2
	if err := s.Insert(ctx, j); err != nil {
		t.Fatal(err)
	}
	c, err := s.Claim(ctx, j.ID, "w1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	retryAt := time.Now().Add(time.Minute).UTC().Truncate(time.Microsecond)
	f, err := s.Fail(ctx, j.ID, c.Attempt, "boom", retryAt, false)
	if err != nil {
		t.Fatal(err)
	}
	if f.State != job.Retrying || f.Error == nil || *f.Error != "boom" || f.ScheduledAt == nil || !f.ScheduledAt.Equal(retryAt) || f.FinishedAt != nil {
		t.Fatalf("after first failure: %+v", f)
	}
	if _, err := s.Claim(ctx, j.ID, "w1", time.Minute); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("claim of a retrying job: got %v, want ErrConflict", err)
	}
}

func TestFailFinalAndExhausted(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := storetest.New(t, 1)
	for _, tc := range []struct {
		name        string
		maxAttempts int
		final       bool
	}{{"attempts used up", 1, false}, {"final error", 5, true}} {
		j := newJob(0, "acme")
		j.MaxAttempts = tc.maxAttempts
		if err := s.Insert(ctx, j); err != nil {
			t.Fatal(err)
		}
		c, err := s.Claim(ctx, j.ID, "w1", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		f, err := s.Fail(ctx, j.ID, c.Attempt, "boom", time.Now(), tc.final)
		if err != nil {
			t.Fatal(err)
		}
		if f.State != job.Dead || f.FinishedAt == nil {
			t.Errorf("%s: got state %s finished %v, want dead", tc.name, f.State, f.FinishedAt)
		}
	}
}

func TestReleaseHandsBackWithoutCountingAttempt(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := storetest.New(t, 1)
	j := inserted(t, s, 0, "acme")
	c, err := s.Claim(ctx, j.ID, "w1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.Release(ctx, j.ID, c.Attempt)
	if err != nil {
		t.Fatal(err)
	}
	if r.State != job.Queued || r.Attempt != 0 {
		t.Fatalf("released: state %s attempt %d, want queued 0", r.State, r.Attempt)
	}
	c2, err := s.Claim(ctx, j.ID, "w2", time.Minute)
	if err != nil || c2.Attempt != 1 {
		t.Fatalf("reclaim: %+v, %v", c2, err)
	}
}

func TestMigrateIsIdempotent(t *testing.T) {
	t.Parallel()
	s := storetest.New(t, 2) // already migrated once
	if err := s.Migrate(context.Background()); err != nil {
		t.Fatalf("second migrate: %v", err)
	}
}

func TestOpenRejectsBadURLs(t *testing.T) {
	t.Parallel()
	for _, u := range []string{"", "mysql://x/y", "postgres://host-only", "postgres://u:secret@:5432/db"} {
		_, err := store.Open(store.Config{URLs: []string{u}})
		if err == nil {
			t.Errorf("Open(%q): no error", u)
			continue
		}
		if contains(err.Error(), "secret") {
			t.Errorf("error leaks the password: %v", err)
		}
	}
}

func TestRedact(t *testing.T) {
	t.Parallel()
	got := store.Redact("postgres://warren:hunter2@127.0.0.1:5432/warren_0")
	if contains(got, "hunter2") || !contains(got, "warren@127.0.0.1") && !contains(got, "warren:xxxxx@") {
		t.Fatalf("Redact: %s", got)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func TestTerminalStateQueuesCallback(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := storetest.New(t, 1)
	j := newJob(0, "acme")
	url := "https://hooks.example/warren"
	j.CallbackURL = &url
	plain := newJob(0, "acme")
	if err := s.Insert(ctx, j, plain); err != nil {
		t.Fatal(err)
	}
	for _, x := range []*job.Job{j, plain} {
		c, err := s.Claim(ctx, x.ID, "w1", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		done, err := s.Complete(ctx, x.ID, c.Attempt, job.JSON(`1`))
		if err != nil {
			t.Fatal(err)
		}
		want := x.CallbackURL != nil
		if got := done.CallbackState != nil && *done.CallbackState == "pending"; got != want {
			t.Errorf("job with callback %v: callback_state %v", want, done.CallbackState)
		}
	}
}
