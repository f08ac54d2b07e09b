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

// leaseStore is a store over two shards and a raw connection to each, to
// read the lease columns the store does not return.
func leaseStore(t *testing.T) (*store.Store, []*sqlx.DB) {
	t.Helper()
	urls := storetest.URLs(t, 2)
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
	s, dbs := leaseStore(t)
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
// does, costs the renewal only that shard: the other shard's leases are
// renewed, and the call returns when its context ends, naming the silent
// shard.
func TestExtendLeasesDoesNotWaitForASilentShard(t *testing.T) {
	t.Parallel()
	urls := storetest.URLs(t, 1)
	s, err := store.Open(store.Config{URLs: []string{urls[0], "postgres://warren:x@" + silentServer(t) + "/warren?sslmode=disable"}, MaxConns: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	j := inserted(t, s, 0, "acme")
	if _, err := s.Claim(context.Background(), j.ID, "w1", time.Second); err != nil {
		t.Fatal(err)
	}
	// The shards are taken in no fixed order: several rounds so that the
	// silent one comes first in some.
	for round := range 4 {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		var held []store.Held
		var err error
		returned := make(chan struct{})
		go func() {
			defer close(returned)
			held, err = s.ExtendLeases(ctx, "w1", time.Minute, []job.ID{j.ID, job.NewID(time.Now(), 1)})
		}()
		select {
		case <-returned:
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: ExtendLeases still waiting 10s after its context ended at 300ms", round)
		}
		cancel()
		var se *store.ShardError
		if !errors.As(err, &se) || se.Shard != 1 {
			t.Fatalf("round %d: error %v, want a ShardError for shard 1", round, err)
		}
		if len(held) != 1 || held[0].ID != j.ID {
			t.Fatalf("round %d: the answering shard's job: held %+v, error %v", round, held, err)
		}
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
