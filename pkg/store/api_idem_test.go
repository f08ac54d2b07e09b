package store_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/store"
	"github.com/warrenhq/warren/pkg/store/storetest"
)

// TestInsertIdempotentAfterShardAdded stores keys on two shards, appends a
// third, and inserts them again: each key finds its job, also the keys whose
// shard under three shards is not the one they were stored on.
func TestInsertIdempotentAfterShardAdded(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	urls := storetest.URLs(t, 3)
	two := openShards(t, urls[:2])
	three := openShards(t, urls)

	const keys = 24
	first := make(map[string]*job.Job)
	moved := 0
	for i := range keys {
		key := fmt.Sprintf("order-%d", i)
		j := keyedJob(two, "acme", key)
		got, created, err := two.InsertIdempotent(ctx, j)
		if err != nil || !created {
			t.Fatalf("key %s on two shards: created=%v, %v", key, created, err)
		}
		first[key] = got
		if three.IdempotencyShard("acme", key) != got.ID.Shard() {
			moved++
		}
	}
	if moved == 0 {
		t.Fatalf("none of %d keys routes to another shard under three shards: the test proves nothing", keys)
	}
	for key, want := range first {
		j := keyedJob(three, "acme", key)
		got, created, err := three.InsertIdempotent(ctx, j)
		if err != nil || created || got.ID != want.ID {
			t.Fatalf("key %s on three shards: created=%v, %v; got %v, want job %s", key, created, err, got, want.ID)
		}
	}
	// Another tenant's key is still new, wherever the first tenant's went.
	for key := range first {
		if _, created, err := three.InsertIdempotent(ctx, keyedJob(three, "globex", key)); err != nil || !created {
			t.Fatalf("globex, key %s: created=%v, %v", key, created, err)
		}
	}
	page, _, err := three.List(ctx, store.ListQuery{Tenant: "acme", Limit: 100})
	if err != nil || len(page) != keys {
		t.Fatalf("acme has %d jobs (%v), want %d", len(page), err, keys)
	}
	t.Logf("%d of %d keys route to another shard under three shards", moved, keys)
}

// TestInsertIdempotentConcurrentAfterShardAdded races many inserts of a key
// that moved, under the new shard count: they all get the old job.
func TestInsertIdempotentConcurrentAfterShardAdded(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	urls := storetest.URLs(t, 3)
	two := openShards(t, urls[:2])
	three := openShards(t, urls)
	key := movedKey(t, two, three, "acme")
	old, _, err := two.InsertIdempotent(ctx, keyedJob(two, "acme", key))
	noErr(t, err)
	const n = 20
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			got, created, err := three.InsertIdempotent(ctx, keyedJob(three, "acme", key))
			switch {
			case err != nil:
				errs[i] = err
			case created || got.ID != old.ID:
				errs[i] = fmt.Errorf("created=%v, job %s, want job %s", created, got.ID, old.ID)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

// TestInsertIdempotentStaysOnKeyShard: under one shard count a key's job is
// stored on the key's shard.
func TestInsertIdempotentStaysOnKeyShard(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := storetest.New(t, 3)
	for i := range 12 {
		key := fmt.Sprintf("k-%d", i)
		got, created, err := s.InsertIdempotent(ctx, keyedJob(s, "acme", key))
		if err != nil || !created || got.ID.Shard() != s.IdempotencyShard("acme", key) {
			t.Fatalf("key %s: created=%v, %v, on shard %d", key, created, err, got.ID.Shard())
		}
	}
}

// TestInsertIdempotentOldShardDown: a key that may be stored on a shard
// that does not answer is refused, not stored a second time elsewhere; a key
// that cannot be there goes in.
func TestInsertIdempotentOldShardDown(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	up := storetest.URLs(t, 2)
	// Shard 1 of the first two is down (nothing listens on port 1); shard 2
	// was appended.
	three := openShards(t, []string{up[0], "postgres://warren:x@127.0.0.1:1/warren_1?sslmode=disable", up[1]})
	two := openShards(t, up) // routes keys as two shards did
	var maybeThere, notThere string
	for i := 0; maybeThere == "" || notThere == ""; i++ {
		if i == 1000 {
			t.Fatal("no keys of both kinds")
		}
		key := fmt.Sprintf("k-%d", i)
		home, before := three.IdempotencyShard("acme", key), two.IdempotencyShard("acme", key)
		switch {
		case home != 1 && before == 1:
			maybeThere = key
		case home != 1 && before != 1:
			notThere = key
		}
	}
	_, _, err := three.InsertIdempotent(ctx, keyedJob(three, "acme", maybeThere))
	var se *store.ShardError
	if !errors.As(err, &se) || se.Shard != 1 {
		t.Fatalf("key that may be on the down shard: %v, want a ShardError of shard 1", err)
	}
	if _, created, err := three.InsertIdempotent(ctx, keyedJob(three, "acme", notThere)); err != nil || !created {
		t.Fatalf("key that cannot be on the down shard: created=%v, %v", created, err)
	}
}

// movedKey returns a key of tenant whose shard differs between the stores.
func movedKey(t *testing.T, before, after *store.Store, tenant string) string {
	t.Helper()
	for i := range 1000 {
		key := fmt.Sprintf("moved-%d", i)
		if before.IdempotencyShard(tenant, key) != after.IdempotencyShard(tenant, key) {
			return key
		}
	}
	t.Fatal("no key moved between shard counts")
	return ""
}

// keyedJob is a new job with key, on the key's shard in s.
func keyedJob(s *store.Store, tenant, key string) *job.Job {
	j := newJob(s.IdempotencyShard(tenant, key), tenant)
	j.IdempotencyKey, j.RequestHash = &key, []byte("h")
	return j
}

func openShards(t *testing.T, urls []string) *store.Store {
	t.Helper()
	s, err := store.Open(store.Config{URLs: slices.Clone(urls), MaxConns: 8})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}
