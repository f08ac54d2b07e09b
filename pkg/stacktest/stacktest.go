// Package stacktest runs a whole Warren stack in-process for tests and
// examples: the REST API on an httptest server and, on request, workers, all
// against the real Postgres, RabbitMQ and Redis that `make test` starts. Each
// stack has its own shards (schemas), RabbitMQ names and Redis key prefix.
package stacktest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/warrenhq/warren/pkg/broker"
	"github.com/warrenhq/warren/pkg/cache"
	"github.com/warrenhq/warren/pkg/client"
	"github.com/warrenhq/warren/pkg/server"
	"github.com/warrenhq/warren/pkg/servicetest"
	"github.com/warrenhq/warren/pkg/store"
	"github.com/warrenhq/warren/pkg/store/storetest"
	"github.com/warrenhq/warren/pkg/worker"
)

// Token is the bearer token of tenant "default" in every test stack;
// OtherToken is tenant "other"'s.
const (
	Token      = "test-token-default-0123456789"
	OtherToken = "test-token-other-0123456789ab"
)

// Stack is a running API with its services.
type Stack struct {
	URL          string // the API's base URL
	DatabaseURLs []string
	RabbitMQURL  string
	RedisURL     string
	Namespace    string
	Store        *store.Store
	Broker       *broker.Broker
	Cache        *cache.Cache
	Server       *server.Server // the API behind URL
	Client       *client.Client // tenant "default"
	Log          *slog.Logger
}

// Options shape a test stack.
type Options struct {
	Shards int // default 2
	// Server adjusts the API's configuration.
	Server func(*server.Config)
	// RedisURL overrides the cache's Redis (to test a Redis that is down).
	RedisURL string
}

// New starts a stack for the test and stops it when the test ends.
func New(tb testing.TB, opts Options) *Stack {
	tb.Helper()
	for _, v := range []string{servicetest.PostgresVar, servicetest.RabbitMQVar, servicetest.RedisVar} {
		servicetest.URL(tb, v) // fails clearly when `make test` did not start the services
	}
	s, stop, err := Start(opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(stop)
	return s
}

// Start starts a stack on the services `make test` started; stop ends it.
// Tests use New; Start serves runnable examples, which have no testing.TB.
func Start(opts Options) (s *Stack, stop func(), err error) {
	if opts.Shards == 0 {
		opts.Shards = 2
	}
	s = &Stack{
		RabbitMQURL: os.Getenv(servicetest.RabbitMQVar),
		RedisURL:    os.Getenv(servicetest.RedisVar),
		Namespace:   servicetest.Name("t"),
		Log:         logger(),
	}
	if s.RabbitMQURL == "" || s.RedisURL == "" {
		return nil, nil, errors.New("the test services are not set: run the tests with `make test`")
	}
	var cleanups []func()
	stop = func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	}
	fail := func(err error) (*Stack, func(), error) {
		stop()
		return nil, nil, err
	}
	urls, drop, err := storetest.Shards(os.Getenv(servicetest.PostgresVar), opts.Shards)
	if err != nil {
		return fail(err)
	}
	s.DatabaseURLs = urls
	cleanups = append(cleanups, func() { _ = drop() })
	cacheURL := s.RedisURL
	if opts.RedisURL != "" {
		cacheURL = opts.RedisURL
	}
	if s.Store, err = store.Open(store.Config{URLs: s.DatabaseURLs, MaxConns: 8}); err != nil {
		return fail(err)
	}
	cleanups = append(cleanups, s.Store.Close)
	if s.Cache, err = cache.New(cache.Config{URL: cacheURL, Prefix: s.Namespace + ":"}); err != nil {
		return fail(err)
	}
	cleanups = append(cleanups, func() { _ = s.Cache.Close() })
	if s.Broker, err = broker.New(context.Background(), broker.Config{URL: s.RabbitMQURL, Prefix: s.Namespace, ConnectionName: s.Namespace + "-api"}, s.Log); err != nil {
		return fail(err)
	}
	cleanups = append(cleanups, func() { _ = s.Broker.Close() })
	cfg := server.Config{Tenants: []server.Tenant{{Name: "default", Token: Token}, {Name: "other", Token: OtherToken}}}
	if opts.Server != nil {
		opts.Server(&cfg)
	}
	srv, err := server.New(cfg, s.Store, s.Broker, s.Cache, s.Log)
	if err != nil {
		return fail(err)
	}
	s.Server = srv
	hs := httptest.NewServer(srv.Handler())
	cleanups = append(cleanups, hs.Close)
	// Runs before hs.Close: requests still waiting (?wait) answer at once.
	cleanups = append(cleanups, func() { _ = srv.Close() })
	s.URL = hs.URL
	if s.Client, err = client.New(s.URL, Token); err != nil {
		return fail(err)
	}
	return s, stop, nil
}

// WorkerConfig returns a worker configuration for this stack's services.
func (s *Stack) WorkerConfig() worker.Config {
	return worker.Config{
		DatabaseURLs: s.DatabaseURLs, RabbitMQURL: s.RabbitMQURL, RedisURL: s.RedisURL,
		Namespace: s.Namespace, Concurrency: 4, ShutdownGrace: 5 * time.Second, Logger: s.Log,
	}
}

// StartWorker runs w until the returned stop function is called (or the test
// ends); stop returns Run's error.
func StartWorker(tb testing.TB, w *worker.Worker) (stop func() error) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(time.Minute):
				err = errors.New("worker did not stop within a minute")
			}
		})
		return err
	}
	tb.Cleanup(func() {
		if err := stop(); err != nil && !errors.Is(err, context.Canceled) {
			tb.Errorf("worker: %v", err)
		}
	})
	return stop
}

// Eventually polls cond every few milliseconds until it is true, failing the
// test with msg if it is not within d.
func Eventually(tb testing.TB, d time.Duration, msg string, cond func() bool) {
	tb.Helper()
	if !Until(d, cond) {
		tb.Fatalf("not within %v: %s", d, msg)
	}
}

// Until polls cond, backing off from 1ms to 100ms, until it holds (true) or
// d has passed (false), for callers that report the failure themselves.
func Until(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for delay := time.Millisecond; !cond(); delay = min(delay*2, 100*time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(delay)
	}
	return true
}

func logger() *slog.Logger {
	if os.Getenv("WARREN_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// String describes the stack for failure messages.
func (s *Stack) String() string { return fmt.Sprintf("stack %s at %s", s.Namespace, s.URL) }
