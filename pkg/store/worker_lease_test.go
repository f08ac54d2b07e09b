package store_test

import (
	"context"
	"errors"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/store"
	"github.com/warrenhq/warren/pkg/store/storetest"
)

// twoShardStore is a store over two new shards and a raw connection to
// each, to read and write what the store does not (lease columns, locks).
func twoShardStore(t *testing.T) (*store.Store, []*sqlx.DB) {
	t.Helper()
	return storeWithConns(t, storetest.URLs(t, 2))
}

// storeWithConns is a store over the shards at urls and a raw connection
// to each (opened lazily: a shard that cannot be reached is fine until
// used), both closed when the test ends.
func storeWithConns(t *testing.T, urls []string) (*store.Store, []*sqlx.DB) {
	t.Helper()
	s, err := store.Open(store.Config{URLs: urls, MaxConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	var dbs []*sqlx.DB
	for _, u := range urls {
		db, err := sqlx.Open("postgres", u)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = db.Close() })
		dbs = append(dbs, db)
	}
	return s, dbs
}

type leaseRow struct {
	LeaseUntil  *time.Time `db:"lease_until"`
	HeartbeatAt *time.Time `db:"heartbeat_at"`
	WorkerID    *string    `db:"worker_id"`
}

func readLease(t *testing.T, dbs []*sqlx.DB, id job.ID) leaseRow {
	t.Helper()
	var r leaseRow
	if err := dbs[id.Shard()].Get(&r, `SELECT lease_until, heartbeat_at, worker_id FROM jobs WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestExtendLeasesRenewsOnlyTheWorkersRunningJobs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, dbs := twoShardStore(t)
	mine0, mine1, theirs, done, queued := newJob(0, "acme"), newJob(1, "acme"), newJob(0, "acme"), newJob(1, "acme"), newJob(0, "acme")
	if err := s.Insert(ctx, mine0, mine1, theirs, done, queued); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		j      *job.Job
		worker string
	}{{mine0, "w1"}, {mine1, "w1"}, {theirs, "w2"}, {done, "w1"}} {
		if _, err := s.Claim(ctx, c.j.ID, c.worker, time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Complete(ctx, done.ID, 1, job.JSON(`1`)); err != nil {
		t.Fatal(err)
	}
	before := readLease(t, dbs, mine0.ID)
	if before.HeartbeatAt != nil || before.LeaseUntil == nil {
		t.Fatalf("claimed job: %+v", before)
	}
	// An id naming a shard this store does not have is ignored, not an error.
	stray := job.NewID(time.Now(), 7)
	held, err := s.ExtendLeases(ctx, "w1", time.Hour, []job.ID{mine0.ID, mine1.ID, theirs.ID, done.ID, queued.ID, stray})
	if err != nil {
		t.Fatal(err)
	}
	want := []store.Held{{ID: mine0.ID, Attempt: 1}, {ID: mine1.ID, Attempt: 1}}
	if len(held) != 2 || !slices.Contains(held, want[0]) || !slices.Contains(held, want[1]) {
		t.Fatalf("held %+v, want %+v", held, want)
	}
	after := readLease(t, dbs, mine0.ID)
	if after.HeartbeatAt == nil || !after.LeaseUntil.After(before.LeaseUntil.Add(50*time.Minute)) {
		t.Fatalf("lease not extended: before %+v, after %+v", before, after)
	}
	if other := readLease(t, dbs, theirs.ID); other.HeartbeatAt != nil || *other.WorkerID != "w2" {
		t.Fatalf("another worker's job was touched: %+v", other)
	}
	if held, err := s.ExtendLeases(ctx, "w1", time.Hour, nil); err != nil || len(held) != 0 {
		t.Fatalf("no ids: %v, %v", held, err)
	}
}

func TestExtendLeasesReportsTheShardThatFailed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	urls := storetest.URLs(t, 2)
	// Shard 1 points at a schema without the jobs table.
	broken := storetest.Blank(t, 1)
	s, err := store.Open(store.Config{URLs: []string{urls[0], broken[0]}, MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	j := inserted(t, s, 0, "acme")
	if _, err := s.Claim(ctx, j.ID, "w1", time.Second); err != nil {
		t.Fatal(err)
	}
	held, err := s.ExtendLeases(ctx, "w1", time.Minute, []job.ID{j.ID, job.NewID(time.Now(), 1)})
	var se *store.ShardError
	if !errors.As(err, &se) || se.Shard != 1 {
		t.Fatalf("error %v, want a ShardError for shard 1", err)
	}
	if len(held) != 1 || held[0].ID != j.ID {
		t.Fatalf("the healthy shard's job: held %+v", held)
	}
}

func TestSetProgressIsFencedByAttempt(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := storetest.New(t, 1)
	j := inserted(t, s, 0, "acme")
	var se *store.StateError
	if err := s.SetProgress(ctx, j.ID, 0, job.JSON(`{"n":1}`)); !errors.As(err, &se) || se.State != job.Queued {
		t.Fatalf("progress of a queued job: %v", err)
	}
	if _, err := s.Claim(ctx, j.ID, "w1", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := s.SetProgress(ctx, j.ID, 1, job.JSON(`{"done":3,"total":10}`)); err != nil {
		t.Fatal(err)
	}
	if err := s.SetProgress(ctx, j.ID, 2, job.JSON(`{"done":9}`)); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("progress of another attempt: %v, want ErrConflict", err)
	}
	got, err := s.Get(ctx, "acme", j.ID)
	if err != nil || string(got.Progress) != `{"done": 3, "total": 10}` {
		t.Fatalf("progress %s, %v", got.Progress, err)
	}
	if _, err := s.Complete(ctx, j.ID, 1, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.SetProgress(ctx, j.ID, 1, job.JSON(`{"done":10}`)); !errors.As(err, &se) || se.State != job.Succeeded {
		t.Fatalf("progress after success: %v", err)
	}
	if err := s.SetProgress(ctx, job.NewID(time.Now(), 0), 1, nil); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("progress of no job: %v", err)
	}
}

// A shard that accepts connections and never answers, as a frozen server
// does, costs the calls that ask every shard only that shard: the other
// shard's leases are renewed, its publications marked and its queue
// statistics counted, and each call returns when its context ends, naming
// the silent shard (a list fails as a whole, since a page without a shard
// would skip its jobs).
func TestFanOutsDoNotWaitForASilentShard(t *testing.T) {
	t.Parallel()
	s, dbs := storeWithConns(t, []string{storetest.URLs(t, 1)[0], "postgres://warren:x@" + silentServer(t) + "/warren?sslmode=disable"})
	db := dbs[0]
	running := inserted(t, s, 0, "acme")
	if _, err := s.Claim(context.Background(), running.ID, "w1", time.Second); err != nil {
		t.Fatal(err)
	}
	queued := inserted(t, s, 0, "acme")
	silent := job.NewID(time.Now(), 1)

	// The shards are taken in no fixed order: several rounds so that the
	// silent one comes first in some.
	for round := range 4 {
		var held []store.Held
		leaseErr := returnsBy(t, func(ctx context.Context) (err error) {
			held, err = s.ExtendLeases(ctx, "w1", time.Minute, []job.ID{running.ID, silent})
			return err
		})
		var se *store.ShardError
		if !errors.As(leaseErr, &se) || se.Shard != 1 {
			t.Fatalf("round %d: renewal error %v, want a ShardError for shard 1", round, leaseErr)
		}
		if len(held) != 1 || held[0].ID != running.ID {
			t.Fatalf("round %d: the answering shard's job: held %+v", round, held)
		}

		markErr := returnsBy(t, func(ctx context.Context) error {
			return s.MarkPublished(ctx, []job.ID{queued.ID, silent})
		})
		if !errors.As(markErr, &se) || se.Shard != 1 {
			t.Fatalf("round %d: mark error %v, want a ShardError for shard 1", round, markErr)
		}
		var marked bool
		if err := db.Get(&marked, `SELECT published_at IS NOT NULL FROM jobs WHERE id = $1`, queued.ID); err != nil || !marked {
			t.Fatalf("round %d: the answering shard's job not marked published (%v)", round, err)
		}
		if _, err := db.Exec(`UPDATE jobs SET published_at = NULL WHERE id = $1`, queued.ID); err != nil {
			t.Fatal(err)
		}
	}

	var stats []store.QueueStats
	var statErrs []error
	_ = returnsBy(t, func(ctx context.Context) error {
		stats, statErrs = s.QueueStats(ctx, "acme")
		return nil
	})
	var se *store.ShardError
	if len(statErrs) != 1 || !errors.As(statErrs[0], &se) || se.Shard != 1 {
		t.Fatalf("queue stats errors %v, want one ShardError for shard 1", statErrs)
	}
	if len(stats) != 1 || stats[0].Ready != 1 || stats[0].Running != 1 {
		t.Fatalf("queue stats %+v, want shard 0's one ready and one running job", stats)
	}
	listErr := returnsBy(t, func(ctx context.Context) error {
		_, _, err := s.List(ctx, store.ListQuery{Tenant: "acme", Limit: 10})
		return err
	})
	if !errors.As(listErr, &se) || se.Shard != 1 {
		t.Fatalf("list error %v, want a ShardError for shard 1", listErr)
	}
}

// returnsBy calls fn with a context that ends after 300ms and returns its
// error, failing the test if fn has not returned 10s after that.
func returnsBy(t *testing.T, fn func(ctx context.Context) error) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("still waiting 10s after its context ended at 300ms")
		return nil
	}
}

// silentServer listens on a loopback port, accepts connections and never
// answers on them, until the test ends; it returns the address.
func silentServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}
