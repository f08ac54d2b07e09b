package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/stacktest"
)

// syncBuffer is a log sink safe for the process's goroutines.
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

func TestRunServesMetricsAndRunsBuiltins(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 2})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	target := http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"pong":true}`)
	})}
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = target.Serve(tl) }()
	defer target.Close()

	env := map[string]string{
		"DATABASE_URLS":     strings.Join(s.DatabaseURLs, ","),
		"RABBITMQ_URL":      s.RabbitMQURL,
		"REDIS_URL":         s.RedisURL,
		"WARREN_NAMESPACE":  s.Namespace,
		"WARREN_HTTP_ALLOW": tl.Addr().String(),
		"PORT":              fmt.Sprint(port),
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out syncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, func(k string) string { return env[k] }, &out) }()

	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	stacktest.Eventually(t, 30*time.Second, "/healthz answers", func() bool {
		resp, err := http.Get(base + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	// The http built-in may call the allow-listed target.
	j, err := s.Client.Submit(ctx, job.Request{Type: "http", Payload: json.RawMessage(`{"url":"http://` + tl.Addr().String() + `/"}`)})
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	if j, err = s.Client.Wait(wctx, j.ID.String()); err != nil || j.State != job.Succeeded || !strings.Contains(string(j.Result), "pong") {
		t.Fatalf("http job: %+v, %v\n%s", j, err, out.String())
	}
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `warren_worker_jobs_finished_total{outcome="succeeded",queue="default",type="http"} 1`) {
		t.Fatalf("metrics:\n%s", body)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v\n%s", err, out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not return after its context ended")
	}
}

func TestRunRejectsABadAllowList(t *testing.T) {
	t.Parallel()
	env := map[string]string{"WARREN_HTTP_ALLOW": "bad/host/"}
	err := run(context.Background(), func(k string) string { return env[k] }, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "WARREN_HTTP_ALLOW") {
		t.Fatalf("got %v", err)
	}
}
