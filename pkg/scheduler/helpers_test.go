package scheduler_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

	"github.com/warrenhq/warren/pkg/broker"
	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/scheduler"
	"github.com/warrenhq/warren/pkg/servicetest"
	"github.com/warrenhq/warren/pkg/store"
	"github.com/warrenhq/warren/pkg/store/storetest"
)

func TestMain(m *testing.M) {
	if os.Getenv("WARREN_FAKE_WORKER") != "" {
		os.Exit(fakeWorker())
	}
	goleak.VerifyTestMain(m)
}

// fakeWorker stands in for a worker process of a local fleet (the test
// binary runs itself): it says it is up, and on SIGTERM, as the worker SDK
// drains, leaves a file saying so in FAKE_DIR and exits.
func fakeWorker() int {
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	fmt.Printf("up pid=%d\n", os.Getpid())
	<-term
	name := filepath.Join(os.Getenv("FAKE_DIR"), strconv.Itoa(os.Getpid())+".done")
	if err := os.WriteFile(name, []byte("drained"), 0o600); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// bundle is one test's isolated world: fresh shards, a unique broker
// prefix, and what it starts on them.
type bundle struct {
	t      *testing.T
	urls   []string
	st     *store.Store
	prefix string
}

func setup(t *testing.T, shards int) *bundle {
	t.Helper()
	b := &bundle{t: t, urls: storetest.URLs(t, shards), prefix: servicetest.Name("ws")}
	b.st = b.store()
	t.Cleanup(b.deleteTopology)
	return b
}

// store opens another Store over the bundle's shards, as a second
// scheduler process would.
func (b *bundle) store() *store.Store {
	b.t.Helper()
	s, err := store.Open(store.Config{URLs: b.urls, MaxConns: 8})
	if err != nil {
		b.t.Fatal(err)
	}
	b.t.Cleanup(s.Close)
	return s
}

// broker connects to RabbitMQ at url (the test RabbitMQ when empty) under
// the bundle's prefix.
func (b *bundle) broker(url string) *broker.Broker {
	b.t.Helper()
	if url == "" {
		url = servicetest.URL(b.t, servicetest.RabbitMQVar)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	br, err := broker.New(ctx, broker.Config{URL: url, Prefix: b.prefix, ConnectionName: b.prefix}, testLogger(b.t))
	if err != nil {
		b.t.Fatal(err)
	}
	b.t.Cleanup(func() { _ = br.Close() })
	return br
}

// start runs a scheduler until the test ends (or the returned stop is
// called, which waits for Run to return).
func (b *bundle) start(cfg scheduler.Config, st *store.Store, br scheduler.Broker) (*scheduler.Scheduler, func()) {
	b.t.Helper()
	s, err := scheduler.New(cfg, st, br, testLogger(b.t))
	if err != nil {
		b.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					b.t.Errorf("Run: %v", err)
				}
			case <-time.After(20 * time.Second):
				b.t.Errorf("Run did not return within 20s of cancel")
			}
		})
	}
	b.t.Cleanup(stop)
	return s, stop
}

// deleteTopology removes the bundle's RabbitMQ exchange and queues.
func (b *bundle) deleteTopology() {
	conn, err := amqp.Dial(servicetest.URL(b.t, servicetest.RabbitMQVar))
	if err != nil {
		b.t.Logf("clean up RabbitMQ: %v", err)
		return
	}
	defer conn.Close()
	for _, q := range []string{"default", "other", "mail"} {
		for _, name := range []string{b.prefix + ".q." + q, b.prefix + ".park." + q} {
			if ch, err := conn.Channel(); err == nil {
				_, _ = ch.QueueDelete(name, false, false, false)
				_ = ch.Close()
			}
		}
	}
	if ch, err := conn.Channel(); err == nil {
		_ = ch.ExchangeDelete(b.prefix, false, false)
		_ = ch.Close()
	}
}

// received is what a test consumer saw: how often each job id arrived, and
// when first.
type received struct {
	mu    sync.Mutex
	count map[job.ID]int
	first map[job.ID]time.Time
	total int
}

// consume acks every message of queue on br and records it.
func (b *bundle) consume(br *broker.Broker, queue string) *received {
	b.t.Helper()
	r := &received{count: map[job.ID]int{}, first: map[job.ID]time.Time{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- br.Consume(ctx, queue, 500, func(_ context.Context, d *broker.Delivery) {
			var id job.ID
			if err := id.UnmarshalText([]byte(d.MessageID)); err != nil {
				b.t.Errorf("message id %q: %v", d.MessageID, err)
			}
			r.mu.Lock()
			r.count[id]++
			r.total++
			if _, ok := r.first[id]; !ok {
				r.first[id] = time.Now()
			}
			r.mu.Unlock()
			_ = d.Ack()
		})
	}()
	b.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, broker.ErrClosed) {
			b.t.Errorf("Consume: %v", err)
		}
	})
	return r
}

func (r *received) distinct() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.count)
}

func (r *received) times(id job.ID) (int, time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.count[id], r.first[id]
}

// newJob returns a job of tenant acme on shard, in state st, due at at.
func newJob(shard int, st job.State, at time.Time) *job.Job {
	now := time.Now().UTC().Truncate(time.Microsecond)
	at = at.UTC().Truncate(time.Microsecond)
	return &job.Job{
		ID: job.NewID(now, shard), Tenant: "acme", Type: "echo", Queue: "default",
		State: st, MaxAttempts: 3, TimeoutMS: 30_000,
		Payload: job.JSON(`{}`), CreatedAt: now, ScheduledAt: &at,
	}
}

// insert stores jobs in chunks (Postgres allows 65,535 parameters a statement).
func (b *bundle) insert(jobs ...*job.Job) {
	b.t.Helper()
	for len(jobs) > 0 {
		n := min(len(jobs), 500)
		if err := b.st.Insert(context.Background(), jobs[:n]...); err != nil {
			b.t.Fatal(err)
		}
		jobs = jobs[n:]
	}
}

// get reads a job of tenant acme or other.
func (b *bundle) get(j *job.Job) *job.Job {
	b.t.Helper()
	got, err := b.st.Get(context.Background(), j.Tenant, j.ID)
	if err != nil {
		b.t.Fatal(err)
	}
	return got
}

// countStates returns how many of the test's jobs (on all its shards) are in
// each state.
func (b *bundle) countStates() map[job.State]int {
	b.t.Helper()
	out := map[job.State]int{}
	for _, u := range b.urls {
		db, err := sqlx.Open("postgres", u)
		if err != nil {
			b.t.Fatal(err)
		}
		var rows []struct {
			State job.State `db:"state"`
			N     int       `db:"n"`
		}
		err = db.Select(&rows, `SELECT state, count(*) AS n FROM jobs GROUP BY state`)
		_ = db.Close()
		if err != nil {
			b.t.Fatal(err)
		}
		for _, r := range rows {
			out[r.State] += r.N
		}
	}
	return out
}

// eventually polls cond until it holds, failing the test after timeout.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for delay := time.Millisecond; !cond(); delay = min(2*delay, 50*time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(delay)
	}
}

// testLogger logs through t, so output shows only for failing tests.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// proxy is a TCP proxy to RabbitMQ that the test can cut and restore, to
// make RabbitMQ unreachable for one broker only.
type proxy struct {
	t      *testing.T
	target string
	addr   string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	p := &proxy{t: t, target: target, conns: map[net.Conn]bool{}}
	p.listen("127.0.0.1:0")
	t.Cleanup(func() {
		p.cut()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) listen(addr string) {
	p.t.Helper()
	var ln net.Listener
	var err error
	// Restoring reuses the port; it may linger briefly.
	for range 50 {
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		p.t.Fatal(err)
	}
	p.mu.Lock()
	p.ln, p.addr = ln, ln.Addr().String()
	p.mu.Unlock()
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Go(func() { p.pipe(c) })
		}
	})
}

func (p *proxy) pipe(c net.Conn) {
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		_ = c.Close()
		return
	}
	p.mu.Lock()
	if p.ln == nil { // cut meanwhile
		p.mu.Unlock()
		_ = c.Close()
		_ = up.Close()
		return
	}
	p.conns[c], p.conns[up] = true, true
	p.mu.Unlock()
	var wg sync.WaitGroup
	wg.Go(func() { _, _ = io.Copy(up, c); _ = up.Close() })
	wg.Go(func() { _, _ = io.Copy(c, up); _ = c.Close() })
	wg.Wait()
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, up)
	p.mu.Unlock()
}

// cut closes the listener and every proxied connection: connecting through
// the proxy is refused until restore.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		_ = p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		_ = c.Close()
	}
}

// restore listens again on the same address.
func (p *proxy) restore() { p.listen(p.addr) }

// url returns the AMQP URL of RabbitMQ through the proxy.
func (p *proxy) url(direct string) string {
	u, err := url.Parse(direct)
	if err != nil {
		p.t.Fatal(err)
	}
	u.Host = p.addr
	return u.String()
}

// rabbitHost returns the host:port of the AMQP URL.
func rabbitHost(t *testing.T, raw string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}
