package store_test

import (
	"context"
	"testing"

	"github.com/warrenhq/warren/pkg/store"
	"github.com/warrenhq/warren/pkg/store/storetest"
)

// downShardStore opens a store of two shards: shard 0 a test database, and
// shard 1 down (nothing listens on port 1, so connections are refused).
func downShardStore(t *testing.T) *store.Store {
	t.Helper()
	up := storetest.URLs(t, 1)[0]
	s, err := store.Open(store.Config{URLs: []string{up, "postgres://warren:x@127.0.0.1:1/warren_1?sslmode=disable"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func TestInsertRoutesAroundADownShard(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := downShardStore(t)
	for range 6 {
		j := newJob(s.NextShard(), "acme")
		if err := s.InsertRouted(ctx, j); err != nil {
			t.Fatalf("insert with one shard down: %v", err)
		}
		if j.ID.Shard() != 0 {
			t.Fatalf("job stored with id on shard %d, want the healthy shard 0", j.ID.Shard())
		}
		if _, err := s.Get(ctx, "acme", j.ID); err != nil {
			t.Fatalf("routed job %s not readable: %v", j.ID, err)
		}
	}
	// With every shard down, the error says so.
	down, err := store.Open(store.Config{URLs: []string{"postgres://warren:x@127.0.0.1:1/a?sslmode=disable", "postgres://warren:x@127.0.0.1:1/b?sslmode=disable"}})
	if err != nil {
		t.Fatal(err)
	}
	defer down.Close()
	if err := down.InsertRouted(ctx, newJob(0, "acme")); err == nil {
		t.Fatal("insert with every shard down: no error")
	}
}
