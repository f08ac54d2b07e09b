package store_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/warrenhq/warren/pkg/store"
	"github.com/warrenhq/warren/pkg/store/storetest"
)

// A frozen shard (SIGSTOPped, or a network that drops everything) accepts
// connections and never answers. Ping reports it down when its context ends,
// and the other shard up: a stalled shard must not make an api look unready.
func TestPingReportsAFrozenShardAlone(t *testing.T) {
	t.Parallel()
	frozen, err := net.Listen("tcp", "127.0.0.1:0") // never accepts: the kernel's backlog does
	if err != nil {
		t.Fatal(err)
	}
	defer frozen.Close()
	up := storetest.URLs(t, 1)[0]
	s, err := store.Open(store.Config{URLs: []string{"postgres://warren:x@" + frozen.Addr().String() + "/warren_0?sslmode=disable", up}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	errs := s.Ping(ctx)
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Ping took %s with a 500ms context", took)
	}
	if errs[0] == nil || errs[1] != nil {
		t.Errorf("Ping = %v; want shard 0 down, shard 1 up", errs)
	}
}
