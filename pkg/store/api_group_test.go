package store_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenhq/warren/pkg/coalesce"
	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/store"
	"github.com/warrenhq/warren/pkg/store/storetest"
)

// Concurrent inserts for a shard that cannot be dialled are routed, each
// with a fresh id, to the healthy shard, and stored there exactly once.
func TestCommitterRoutesAroundADownShard(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	up := storetest.URLs(t, 1)[0]
	// Shard 1 is down: nothing listens on port 1, so connections are refused.
	s, err := store.Open(store.Config{URLs: []string{up, "postgres://warren:x@127.0.0.1:1/warren_1?sslmode=disable"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var mu sync.Mutex
	stmts := map[int]int{}  // statements that ran, by shard
	jobsIn := map[int]int{} // jobs committed, by shard
	failed := map[int]int{} // statements that failed, by shard
	c := s.NewCommitter(store.CommitterConfig{Observe: func(shard, jobs int, _ time.Duration, err error) {
		mu.Lock()
		defer mu.Unlock()
		stmts[shard]++
		if err != nil {
			failed[shard]++
			return
		}
		jobsIn[shard] += jobs
	}})
	const n = 100
	jobs := make([]*job.Job, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		jobs[i] = newJob(1, "acme")
		jobs[i].Payload = job.JSON(fmt.Sprintf(`{"n":%d}`, i))
		wg.Go(func() { errs[i] = c.Insert(ctx, jobs[i]) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("insert %d with shard 1 down: %v", i, err)
		}
		if jobs[i].ID.Shard() != 0 {
			t.Fatalf("job %d stored with id on shard %d, want the healthy shard 0", i, jobs[i].ID.Shard())
		}
		got, err := s.Get(ctx, "acme", jobs[i].ID)
		if err != nil {
			t.Fatalf("routed job %d (%s) not readable: %v", i, jobs[i].ID, err)
		}
		var p struct{ N int }
		if err := json.Unmarshal(got.Payload, &p); err != nil || p.N != i {
			t.Fatalf("job %d holds payload %s", i, got.Payload)
		}
	}
	// Exactly once: as many distinct ids as jobs, and as many rows as ids.
	ids := map[job.ID]bool{}
	for _, j := range jobs {
		ids[j.ID] = true
	}
	healthy, err := store.Open(store.Config{URLs: []string{up}})
	if err != nil {
		t.Fatal(err)
	}
	defer healthy.Close()
	listed, _, err := healthy.List(ctx, store.ListQuery{Tenant: "acme", Limit: 500})
	if err != nil || len(listed) != n || len(ids) != n {
		t.Fatalf("%d rows, %d distinct ids (%v), want exactly %d", len(listed), len(ids), err, n)
	}
	if jobsIn[0] != n || jobsIn[1] != 0 || failed[0] != 0 || failed[1] == 0 {
		t.Fatalf("committed %v, failed statements %v: want all %d jobs on shard 0 and only shard 1 failing", jobsIn, failed, n)
	}
	t.Logf("%d jobs in %d statements on shard 0 after %d failed dials of shard 1", n, stmts[0], failed[1])

	// With every shard down, the error says so.
	down, err := store.Open(store.Config{URLs: []string{"postgres://warren:x@127.0.0.1:1/a?sslmode=disable", "postgres://warren:x@127.0.0.1:1/b?sslmode=disable"}})
	if err != nil {
		t.Fatal(err)
	}
	defer down.Close()
	if err := down.NewCommitter(store.CommitterConfig{}).Insert(ctx, newJob(0, "acme")); err == nil {
		t.Fatal("insert with every shard down: no error")
	}
}

// A job whose id names a shard the store lacks is refused, not stored.
func TestCommitterBadShard(t *testing.T) {
	t.Parallel()
	s := storetest.New(t, 1)
	if err := s.NewCommitter(store.CommitterConfig{}).Insert(context.Background(), newJob(3, "acme")); !errors.Is(err, store.ErrBadShard) {
		t.Fatalf("insert on shard 3 of 1: %v, want ErrBadShard", err)
	}
}

// A batch's jobs for a shard that cannot be dialled go, with fresh ids, to
// the next shard; a shard failing otherwise keeps its jobs out, with its
// error, and nothing of it is repeated elsewhere.
func TestInsertBatchRoutedAroundADownShard(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := downShardStore(t)
	var jobs []*job.Job
	for i := range 10 {
		j := newJob(i%2, "acme")
		j.Payload = job.JSON(fmt.Sprintf(`{"n":%d}`, i))
		jobs = append(jobs, j)
	}
	for i, err := range s.InsertBatchRouted(ctx, jobs) {
		if err != nil {
			t.Fatalf("job %d: %v", i, err)
		}
		if jobs[i].ID.Shard() != 0 {
			t.Fatalf("job %d on shard %d, want the healthy shard 0", i, jobs[i].ID.Shard())
		}
		if _, err := s.Get(ctx, "acme", jobs[i].ID); err != nil {
			t.Fatalf("job %d (%s) not stored: %v", i, jobs[i].ID, err)
		}
	}

	// A duplicate id is not a dial failure: its shard's jobs fail together,
	// the other shard's commit, and nothing is routed.
	two := storetest.New(t, 2)
	first := newJob(1, "acme")
	if errs := two.InsertBatchRouted(ctx, []*job.Job{first}); errs[0] != nil {
		t.Fatal(errs[0])
	}
	dup := *first
	a, b := newJob(0, "acme"), newJob(1, "acme")
	errs := two.InsertBatchRouted(ctx, []*job.Job{a, b, &dup})
	if errs[0] != nil || errs[1] == nil || errs[2] == nil {
		t.Fatalf("errors %v: want shard 0's job stored and shard 1's two refused", errs)
	}
	if b.ID.Shard() != 1 || dup.ID != first.ID {
		t.Fatal("a job of a shard that answered was routed elsewhere")
	}
	if _, err := two.Get(ctx, "acme", b.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("job of the failed statement: %v, want not stored", err)
	}
}

// A shard that stops answering keeps only the jobs of its running
// statement: the jobs that would queue behind it go, after the Patience,
// with fresh ids to the next shard, and each job is stored once, where its
// id says.
func TestCommitterRoutesAroundAFrozenShard(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, dbs := twoShardStore(t)
	db := dbs[0].DB
	// Shard 0's jobs table is locked: its INSERTs wait as on a frozen server.
	lock, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = lock.Rollback() }()
	if _, err := lock.ExecContext(ctx, `LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}

	var rerouted sync.Map // job count by shard left, for ErrBusy only
	c := s.NewCommitter(store.CommitterConfig{Patience: time.Second, Rerouted: func(shard int, err error) {
		if errors.Is(err, coalesce.ErrBusy) {
			n, _ := rerouted.LoadOrStore(shard, new(atomic.Int32))
			n.(*atomic.Int32).Add(1)
		}
	}})
	stuck := newJob(0, "acme")
	stuckDone := make(chan error, 1)
	go func() { stuckDone <- c.Insert(ctx, stuck) }()
	waitLockWaiter(t, db)

	var wg sync.WaitGroup
	routed := make([]*job.Job, 20)
	errs := make([]error, len(routed))
	for i := range routed {
		routed[i] = newJob(0, "acme")
		wg.Go(func() { errs[i] = c.Insert(ctx, routed[i]) })
	}
	wg.Wait()
	for i, j := range routed {
		if errs[i] != nil {
			t.Fatalf("insert %d behind the frozen shard: %v", i, errs[i])
		}
		if j.ID.Shard() != 1 {
			t.Fatalf("job %d has an id on shard %d, want 1", i, j.ID.Shard())
		}
		if _, err := s.Get(ctx, "acme", j.ID); err != nil {
			t.Fatalf("routed job %d not stored: %v", i, err)
		}
	}
	select {
	case err := <-stuckDone:
		t.Fatalf("the insert on the locked shard returned (%v) before the lock was released", err)
	default:
	}
	if n, ok := rerouted.Load(0); !ok || int(n.(*atomic.Int32).Load()) != len(routed) {
		t.Errorf("reroutes from shard 0 reported: %v, want %d, each with ErrBusy", n, len(routed))
	}

	if err := lock.Rollback(); err != nil {
		t.Fatal(err)
	}
	if err := <-stuckDone; err != nil {
		t.Fatalf("the insert on the locked shard, after the release: %v", err)
	}
	if stuck.ID.Shard() != 0 {
		t.Fatalf("the job of the running statement moved to shard %d", stuck.ID.Shard())
	}
	if _, err := s.Get(ctx, "acme", stuck.ID); err != nil {
		t.Fatalf("the job of the running statement is not stored: %v", err)
	}
	var rows int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM jobs`).Scan(&rows); err != nil || rows != 1 {
		t.Fatalf("shard 0 holds %d jobs (%v), want only the one of the running statement", rows, err)
	}
}

// waitLockWaiter waits until a session of db's database waits for a lock.
func waitLockWaiter(t *testing.T, db *sql.DB) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var n int
		err := db.QueryRow(`SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no session waits for the lock after 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
