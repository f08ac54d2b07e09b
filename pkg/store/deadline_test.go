package store_test

import (
	"context"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/warrenhq/warren/pkg/store"
	"github.com/warrenhq/warren/pkg/store/storetest"
)

// A shard that stops answering in the middle of its connections (a proxy
// that stops passing bytes on, as a frozen server or a stalled host does)
// holds a statement only as long as the statement's context, on a single
// job as on a fan-out; once it answers again, the store uses it again.
func TestStatementsEndWithTheirContextOnAFrozenShard(t *testing.T) {
	t.Parallel()
	p := newFreezer(t, storetest.URLs(t, 1)[0])
	open := func(conns int) *store.Store {
		s, err := store.Open(store.Config{URLs: []string{p.url}, MaxConns: conns})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		return s
	}
	s := open(4)
	j := inserted(t, s, 0, "acme")
	queued := inserted(t, s, 0, "acme")
	// A store with one connection, made before the freeze, for the INSERT
	// below: its statement is sent, not stuck in a handshake.
	submits := open(1)
	if _, err := submits.Get(context.Background(), "acme", j.ID); err != nil {
		t.Fatal(err)
	}

	p.freeze()
	// A submit's INSERT is the exception: its caller must learn whether it
	// committed, so it waits for the server's answer.
	submitted := newJob(0, "acme")
	inserting := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		inserting <- submits.Insert(ctx, submitted)
	}()
	for round := range 3 {
		if err := returnsBy(t, func(ctx context.Context) error {
			_, err := s.Get(ctx, "acme", j.ID)
			return err
		}); err == nil {
			t.Fatalf("round %d: Get on a frozen shard succeeded", round)
		}
		if err := returnsBy(t, func(ctx context.Context) error {
			_, err := s.Claim(ctx, queued.ID, "w1", time.Minute)
			return err
		}); err == nil {
			t.Fatalf("round %d: Claim on a frozen shard succeeded", round)
		}
	}
	select {
	case err := <-inserting:
		t.Fatalf("a submit's INSERT on the frozen shard was cut short: %v", err)
	default:
	}
	p.thaw()

	// Its answer is the truth: committed if and only if it says so.
	insertErr := <-inserting
	_, getErr := s.Get(context.Background(), "acme", submitted.ID)
	if (insertErr == nil) != (getErr == nil) {
		t.Fatalf("the INSERT said %v, and the job's lookup says %v", insertErr, getErr)
	}

	got, err := s.Get(context.Background(), "acme", j.ID)
	if err != nil || got.ID != j.ID {
		t.Fatalf("Get after the thaw: %v, %v", got, err)
	}
	claimed, err := s.Claim(context.Background(), queued.ID, "w1", time.Minute)
	if err != nil || claimed.ID != queued.ID {
		t.Fatalf("Claim after the thaw: %v, %v", claimed, err)
	}
}

// freezer is a loopback proxy to a Postgres URL's server that can stop
// passing bytes on (freeze) and start again (thaw), for every connection
// through it, as a frozen server would.
type freezer struct {
	url string

	mu   sync.Mutex
	gate chan struct{} // closed while bytes pass
}

func newFreezer(t *testing.T, target string) *freezer {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{gate: make(chan struct{})}
	close(f.gate)
	backend := u.Host
	u.Host = ln.Addr().String()
	f.url = u.String()

	var mu sync.Mutex
	var conns []net.Conn
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", backend)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, b)
			mu.Unlock()
			wg.Go(func() { f.pass(b, c) })
			wg.Go(func() { f.pass(c, b) })
		}
	})
	t.Cleanup(func() {
		f.thaw()
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return f
}

// pass copies from src to dst, each chunk once the gate is open.
func (f *freezer) pass(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			f.mu.Lock()
			gate := f.gate
			f.mu.Unlock()
			<-gate
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (f *freezer) freeze() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gate = make(chan struct{})
}

func (f *freezer) thaw() {
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-f.gate:
	default:
		close(f.gate)
	}
}
