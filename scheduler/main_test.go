package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warrenhq/warren/pkg/servicetest"
	"github.com/warrenhq/warren/pkg/store/storetest"
)

// syncBuffer is a bytes.Buffer safe for the logger and the test at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func TestMigrateThenRunServesMetricsAndHealth(t *testing.T) {
	t.Parallel()
	urls := storetest.Blank(t, 2)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	vars := map[string]string{
		"DATABASE_URLS":          strings.Join(urls, ","),
		"RABBITMQ_URL":           servicetest.URL(t, servicetest.RabbitMQVar),
		"WARREN_NAMESPACE":       servicetest.Name("wsm"),
		"WARREN_SCHEDULER_TICK":  "100ms",
		"WARREN_SIGNING_SECRETS": "acme:0123456789abcdef",
		"PORT":                   fmt.Sprint(port),
	}
	var out syncBuffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := run(ctx, []string{"migrate"}, env(vars), &out); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "migrations applied") {
		t.Fatalf("migrate said %q", out.String())
	}

	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- run(runCtx, nil, env(vars), &out) }()
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(base + "/healthz")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.Contains(string(body), `"ok":true`) {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no healthy /healthz: %v\n%s", err, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "warren_scheduler_jobs_dispatched_total") {
		t.Errorf("/metrics lacks the scheduler's metrics")
	}
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not return after cancel")
	}
	for _, want := range []string{"scheduler alive", "scheduler stopped"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, out.String())
		}
	}
}

func TestUnknownArguments(t *testing.T) {
	t.Parallel()
	err := run(context.Background(), []string{"frobnicate"}, env(map[string]string{}), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "usage") {
		t.Fatalf("run(frobnicate) = %v", err)
	}
}

func TestBadAllowListNamesTheVariable(t *testing.T) {
	t.Parallel()
	err := run(context.Background(), nil, env(map[string]string{"WARREN_HTTP_ALLOW": "10.0.0.1,not a/host"}), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "WARREN_HTTP_ALLOW") {
		t.Fatalf("run = %v, want an error naming WARREN_HTTP_ALLOW", err)
	}
}
