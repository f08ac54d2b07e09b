package server_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/server"
	"github.com/warrenhq/warren/pkg/stacktest"
	"github.com/warrenhq/warren/pkg/store"
	"github.com/warrenhq/warren/pkg/store/storetest"
)

// TestIdempotencyKeyAfterShardAdded submits keys to an api over two shards,
// then replays them to an api over the same two shards and one appended, as
// after an operator adds a shard to DATABASE_URLS: every replay gets the
// original job, also for the keys that route to another shard now, and a
// different body under such a key gets 409.
func TestIdempotencyKeyAfterShardAdded(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 2})
	three, st := apiOver(t, s, append(append([]string(nil), s.DatabaseURLs...), storetest.URLs(t, 1)...))
	ctx := context.Background()
	const keys = 16
	body := func(i int) string { return fmt.Sprintf(`{"type":"echo","payload":{"i":%d}}`, i) }
	first := make([]*job.Job, keys)
	var moved []int
	for i := range keys {
		key := map[string]string{"Idempotency-Key": fmt.Sprintf("order-%d", i)}
		first[i] = decodeJob(t, callWith(t, "POST", s.URL+"/v1/jobs", stacktest.Token, body(i), key), http.StatusAccepted)
		if st.IdempotencyShard("default", key["Idempotency-Key"]) != first[i].ID.Shard() {
			moved = append(moved, i)
		}
	}
	if len(moved) == 0 {
		t.Fatalf("none of %d keys routes to another shard under three shards: the test proves nothing", keys)
	}
	t.Logf("%d of %d keys route to another shard under three shards", len(moved), keys)
	for i := range keys {
		key := map[string]string{"Idempotency-Key": fmt.Sprintf("order-%d", i)}
		r := callWith(t, "POST", three+"/v1/jobs", stacktest.Token, body(i), key)
		if got := decodeJob(t, r, http.StatusOK); got.ID != first[i].ID {
			t.Fatalf("replay of key %d over three shards: job %s, want %s", i, got.ID, first[i].ID)
		}
		if loc := r.header.Get("Location"); loc != "/v1/jobs/"+first[i].ID.String() {
			t.Errorf("replay of key %d: Location %q", i, loc)
		}
		r = callWith(t, "POST", three+"/v1/jobs", stacktest.Token, `{"type":"echo","payload":{"other":true}}`, key)
		if r.status != http.StatusConflict || !strings.Contains(problem(t, r).Detail, first[i].ID.String()) {
			t.Fatalf("different body under key %d over three shards: %d %s", i, r.status, r.body)
		}
	}
	// Concurrent replays of a moved key: all get the original job.
	key := map[string]string{"Idempotency-Key": fmt.Sprintf("order-%d", moved[0])}
	const n = 10
	var wg sync.WaitGroup
	answers := make([]response, n)
	for i := range n {
		wg.Go(func() {
			answers[i] = callWith(t, "POST", three+"/v1/jobs", stacktest.Token, body(moved[0]), key)
		})
	}
	wg.Wait()
	for i, r := range answers {
		if got := decodeJob(t, r, http.StatusOK); got.ID != first[moved[0]].ID {
			t.Fatalf("concurrent replay %d: job %s, want %s", i, got.ID, first[moved[0]].ID)
		}
	}
	jobs, _, err := st.List(ctx, store.ListQuery{Tenant: "default", Limit: 100})
	if err != nil || len(jobs) != keys {
		t.Fatalf("%d jobs stored (%v), want %d: one per key", len(jobs), err, keys)
	}
	// A new key over three shards goes to its shard under three.
	fresh := decodeJob(t, callWith(t, "POST", three+"/v1/jobs", stacktest.Token, `{"type":"echo"}`,
		map[string]string{"Idempotency-Key": "after-the-shard"}), http.StatusAccepted)
	if want := st.IdempotencyShard("default", "after-the-shard"); fresh.ID.Shard() != want {
		t.Errorf("new key stored on shard %d, want %d", fresh.ID.Shard(), want)
	}
}

// TestBatchItemsCarryNoIdempotencyKey: a batch has no way to carry a key, so
// the key rule has nothing to apply to there: the header is refused whole
// and a key in an item is an unknown field of that item.
func TestBatchItemsCarryNoIdempotencyKey(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 2})
	r, a := postBatch(t, s, `{"jobs":[{"type":"echo","idempotency_key":"k"},{"type":"echo"}]}`)
	if r.status != http.StatusAccepted || len(a.Jobs) != 2 {
		t.Fatalf("batch: %d %s", r.status, r.body)
	}
	if it := a.Jobs[0]; it.Job != nil || it.Error == nil || !strings.Contains(it.Error.Detail, "idempotency_key") {
		t.Errorf("item with a key: %+v", it)
	}
	if it := a.Jobs[1]; it.Job == nil {
		t.Errorf("item without a key: %+v", it)
	}
	r = callWith(t, "POST", s.URL+"/v1/jobs/batch", stacktest.Token, `{"jobs":[{"type":"echo"}]}`,
		map[string]string{"Idempotency-Key": "k"})
	if r.status != http.StatusBadRequest {
		t.Errorf("batch with an Idempotency-Key: %d %s", r.status, r.body)
	}
}

// apiOver starts a second api on s's RabbitMQ and Redis over the shards at
// urls, and returns its base URL and store.
func apiOver(t *testing.T, s *stacktest.Stack, urls []string) (string, *store.Store) {
	t.Helper()
	st, err := store.Open(store.Config{URLs: urls, MaxConns: 8})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	cfg := server.Config{Tenants: []server.Tenant{{Name: "default", Token: stacktest.Token}, {Name: "other", Token: stacktest.OtherToken}}}
	srv, err := server.New(cfg, st, s.Broker, s.Cache, s.Log)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	t.Cleanup(func() { _ = srv.Close() }) // before hs.Close: waiting requests answer at once
	return hs.URL, st
}
