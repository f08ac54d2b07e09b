// Command api is Warren's web process: the REST API behind the load balancer.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"github.com/warrenhq/warren/pkg/broker"
	"github.com/warrenhq/warren/pkg/cache"
	"github.com/warrenhq/warren/pkg/config"
	"github.com/warrenhq/warren/pkg/serve"
	"github.com/warrenhq/warren/pkg/server"
	"github.com/warrenhq/warren/pkg/store"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Getenv, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "api:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, getenv config.Getenv, out io.Writer) error {
	cfg, err := config.LoadAPI(getenv)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	log := cfg.Logger(out).With("process", "api")
	// Submits share one INSERT per shard (group commit), so the pool serves
	// reads mostly: sized to the cores, not to the concurrent requests.
	st, err := store.Open(store.Config{URLs: cfg.DatabaseURLs, MaxConns: max(8, 4*runtime.GOMAXPROCS(0))})
	if err != nil {
		return err
	}
	defer st.Close()
	ca, err := cache.New(cache.Config{URL: cfg.RedisURL, Prefix: cfg.Namespace + ":", TTL: cfg.ResultTTL})
	if err != nil {
		return err
	}
	defer ca.Close()
	br, err := broker.New(ctx, broker.Config{URL: cfg.RabbitMQURL, Prefix: cfg.Namespace, ConnectionName: "warren-api"}, log)
	if err != nil {
		return err
	}
	defer br.Close()
	tenants := make([]server.Tenant, len(cfg.Tenants))
	for i, t := range cfg.Tenants {
		tenants[i] = server.Tenant{Name: t.Name, Token: t.Token}
	}
	srv, err := server.New(server.Config{
		Tenants: tenants, Insecure: cfg.Insecure, MaxBodyBytes: int64(cfg.MaxBodyBytes),
		DefaultMaxAttempts: cfg.DefaultMaxAttempts, DefaultTimeout: cfg.DefaultTimeout,
		RateLimit:     cache.Rate{Limit: cfg.RateLimit, Window: cfg.RateWindow},
		MaxQueueDepth: cfg.MaxQueueDepth, MaxSubmitsInFlight: cfg.MaxSubmitsInFlight,
		Failpoint: failpoint(cfg.Failpoint, log),
	}, st, br, ca, log)
	if err != nil {
		return err
	}
	defer srv.Close()
	if cfg.Insecure {
		log.Warn("WARREN_INSECURE is set: requests without a token act as tenant \"default\"")
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s (WARREN_BIND, PORT): %w", cfg.Addr, err)
	}
	handler := srv.Handler()
	if cfg.Pprof {
		log.Warn("WARREN_PPROF is set: Go's profiles are served under /debug/pprof/ without authentication")
		handler = serve.Profiling(handler)
	}
	hs := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      90 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	log.Info("api listening", "addr", ln.Addr().String(), "shards", st.Shards())
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("api stopping: finishing open requests")
	_ = srv.Close() // answer requests held by ?wait now, not at the shutdown timeout
	sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("shutdown: %w", err)
	}
	log.Info("api stopped")
	return nil
}

// failpoint returns the test hook that WARREN_FAILPOINT asks for, or nil.
// "kill-after-commit" kills the process with SIGKILL right after a submit's
// INSERT commits and before its publish: the crash tests use it to leave a
// committed job without a message, for the scheduler's relay.
func failpoint(name string, log *slog.Logger) func(string) {
	if name != "kill-after-commit" {
		return nil
	}
	log.Warn("WARREN_FAILPOINT is set: this api kills itself after the first committed submit (a test hook)", "failpoint", name)
	return func(point string) {
		if point == "after-commit" {
			p, _ := os.FindProcess(os.Getpid())
			_ = p.Kill() // SIGKILL: no deferred function, no flush
		}
	}
}
