package builtin_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/warrenhq/warren/pkg/broker"
	"github.com/warrenhq/warren/pkg/builtin"
	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/netguard"
	"github.com/warrenhq/warren/pkg/stacktest"
	"github.com/warrenhq/warren/pkg/worker"
)

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func ptr[T any](v T) *T { return &v }

func TestFailFailsTheFirstAttempts(t *testing.T) {
	t.Parallel()
	for attempt := 1; attempt <= 3; attempt++ {
		res, err := builtin.Fail(context.Background(), &worker.Job[builtin.FailArgs]{Attempt: attempt, Args: builtin.FailArgs{Times: 2}})
		switch {
		case attempt <= 2 && (err == nil || !strings.Contains(err.Error(), fmt.Sprintf("attempt %d fails", attempt))):
			t.Errorf("attempt %d: %v", attempt, err)
		case attempt <= 2 && errors.As(err, new(*worker.NoRetryError)):
			t.Errorf("attempt %d: a failure that must be retried is final", attempt)
		case attempt == 3 && (err != nil || res.Attempt != 3):
			t.Errorf("attempt 3: %+v, %v", res, err)
		}
	}
	if _, err := builtin.Fail(context.Background(), &worker.Job[builtin.FailArgs]{Attempt: 1, Args: builtin.FailArgs{Times: -1}}); !errors.As(err, new(*worker.NoRetryError)) {
		t.Errorf("negative times: %v", err)
	}
}

func TestSleepHonoursItsContext(t *testing.T) {
	t.Parallel()
	res, err := builtin.Sleep(context.Background(), &worker.Job[builtin.SleepArgs]{Args: builtin.SleepArgs{MS: 5}})
	if err != nil || res.SleptMS != 5 {
		t.Fatalf("%+v, %v", res, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = builtin.Sleep(ctx, &worker.Job[builtin.SleepArgs]{Args: builtin.SleepArgs{MS: 60_000}})
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 10*time.Second {
		t.Fatalf("cut short after %v: %v", time.Since(start), err)
	}
	if _, err := builtin.Sleep(context.Background(), &worker.Job[builtin.SleepArgs]{Args: builtin.SleepArgs{MS: -1}}); !errors.As(err, new(*worker.NoRetryError)) {
		t.Fatalf("negative ms: %v", err)
	}
}

// target is an HTTP endpoint standing in for a handler in another language.
func target(t *testing.T) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("POST /json", func(w http.ResponseWriter, r *http.Request) {
		var in map[string]any
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil || r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		_ = json.NewEncoder(w).Encode(map[string]any{"got": in, "auth": r.Header.Get("Authorization"),
			"job": r.Header.Get("Warren-Job-Id") + "#" + r.Header.Get("Warren-Attempt")})
	})
	mux.HandleFunc("PUT /text", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "hello %s", b)
	})
	mux.HandleFunc("GET /empty", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("/fail", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "overloaded", http.StatusServiceUnavailable)
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(strings.Repeat("x", 2000)))
	})
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://169.254.169.254/latest/meta-data/", http.StatusFound)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func httpJob(payload string) *worker.Job[json.RawMessage] {
	return &worker.Job[json.RawMessage]{ID: "J1", Type: "http", Attempt: 1, Args: json.RawMessage(payload)}
}

func TestHTTPCallsTheURL(t *testing.T) {
	t.Parallel()
	srv := target(t)
	h, err := builtin.NewHTTP(builtin.Options{HTTPAllow: []string{"127.0.0.1"}, MaxResponseBytes: 1000})
	must(t, err)
	ctx := context.Background()
	for _, tc := range []struct {
		name, payload string
		status        int
		body          string // the result's body, compact JSON
	}{
		{"json", `{"url":"` + srv.URL + `/json","headers":{"Authorization":"Bearer s3cret"},"body":{"n":1}}`,
			200, `{"auth":"Bearer s3cret","got":{"n":1},"job":"J1#1"}`},
		{"text", `{"url":"` + srv.URL + `/text","method":"put","body":"world"}`, 200, `"hello \"world\""`},
		{"empty", `{"url":"` + srv.URL + `/empty","method":"GET","timeout":"5s"}`, 204, `null`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := h.Handle(ctx, httpJob(tc.payload))
			must(t, err)
			b, _ := json.Marshal(res.Body)
			if res.Status != tc.status || string(b) != tc.body {
				t.Fatalf("got %d %s, want %d %s", res.Status, b, tc.status, tc.body)
			}
		})
	}
}

func TestHTTPFailures(t *testing.T) {
	t.Parallel()
	srv := target(t)
	allowed, err := builtin.NewHTTP(builtin.Options{HTTPAllow: []string{"127.0.0.1"}, MaxResponseBytes: 1000})
	must(t, err)
	guarded, err := builtin.NewHTTP(builtin.Options{})
	must(t, err)
	for _, tc := range []struct {
		name    string
		h       *builtin.HTTP
		payload string
		final   bool   // NoRetry
		want    string // in the error
	}{
		{"non-2xx is retried", allowed, `{"url":"` + srv.URL + `/fail"}`, false, "status 503: overloaded"},
		{"timeout is retried", allowed, `{"url":"` + srv.URL + `/slow","timeout":"100ms"}`, false, "no response within 100ms"},
		{"loopback refused without the allow list", guarded, `{"url":"` + srv.URL + `/json","body":{}}`, true, netguard.ErrBlocked.Error()},
		{"redirect to the metadata address refused", allowed, `{"url":"` + srv.URL + `/redirect"}`, true, netguard.ErrBlocked.Error()},
		{"oversize response", allowed, `{"url":"` + srv.URL + `/big"}`, true, "larger than 1000 bytes"},
		{"no url", allowed, `{"method":"GET"}`, true, "url is required"},
		{"bad scheme", allowed, `{"url":"file:///etc/passwd"}`, true, `scheme "file"`},
		{"unknown field", allowed, `{"url":"` + srv.URL + `","tiemout":"1s"}`, true, `unknown field "tiemout"`},
		{"bad timeout", allowed, `{"url":"` + srv.URL + `","timeout":"soon"}`, true, "not a duration"},
		{"bad method", allowed, `{"url":"` + srv.URL + `","method":"GET /x"}`, true, "not an HTTP method"},
		{"bad header", allowed, `{"url":"` + srv.URL + `","headers":{"X-A":"1\r\nX-B: 2"}}`, true, "line break"},
		{"not an object", allowed, `[1]`, true, "payload"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := tc.h.Handle(context.Background(), httpJob(tc.payload))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			if final := errors.As(err, new(*worker.NoRetryError)); final != tc.final {
				t.Fatalf("NoRetry %v, want %v: %v", final, tc.final, err)
			}
		})
	}
}

func TestRegisterRejectsABadAllowList(t *testing.T) {
	t.Parallel()
	w, err := worker.New(worker.Config{DatabaseURLs: []string{"postgres://x/y"}, RabbitMQURL: "amqp://x", RedisURL: "redis://x"})
	must(t, err)
	if err := builtin.Register(w, builtin.Options{HTTPAllow: []string{"not a host/"}}); err == nil || !strings.Contains(err.Error(), "WARREN_HTTP_ALLOW") {
		t.Fatalf("got %v", err)
	}
}

// The built-ins as the stock worker process runs them, against the real stack.
func TestBuiltinsOnTheStack(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 1})
	srv := target(t)
	cfg := s.WorkerConfig()
	w, err := worker.New(cfg)
	must(t, err)
	must(t, builtin.Register(w, builtin.Options{HTTPAllow: []string{"127.0.0.1"}}))
	stacktest.StartWorker(t, w)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	run := func(req job.Request) *job.Job {
		t.Helper()
		j, err := s.Client.Submit(ctx, req)
		must(t, err)
		j, err = s.Client.Wait(ctx, j.ID.String())
		must(t, err)
		return j
	}
	result := func(j *job.Job, v any) {
		t.Helper()
		if j.State != job.Succeeded {
			t.Fatalf("%s job: %s (%v)", j.Type, j.State, deref(j.Error))
		}
		must(t, json.Unmarshal(j.Result, v))
	}

	var echo map[string]int
	result(run(job.Request{Type: "echo", Payload: json.RawMessage(`{"a":1}`)}), &echo)
	if echo["a"] != 1 {
		t.Errorf("echo: %v", echo)
	}
	var slept builtin.SleepResult
	result(run(job.Request{Type: "sleep", Payload: json.RawMessage(`{"ms":20}`)}), &slept)
	if slept.SleptMS != 20 {
		t.Errorf("sleep: %+v", slept)
	}
	var resp struct {
		Status int `json:"status"`
		Body   struct {
			Got map[string]string `json:"got"`
		} `json:"body"`
	}
	result(run(job.Request{Type: "http", Payload: json.RawMessage(`{"url":"` + srv.URL + `/json","body":{"k":"v"}}`)}), &resp)
	if resp.Status != 200 || resp.Body.Got["k"] != "v" {
		t.Errorf("http: %+v", resp)
	}
	if d := run(job.Request{Type: "http", Payload: json.RawMessage(`{"url":"http://169.254.169.254/"}`)}); d.State != job.Dead || !strings.Contains(deref(d.Error), "not allowed") {
		t.Errorf("http to the metadata address: %s %v", d.State, deref(d.Error))
	}

	// fail {"times":1}: the first attempt fails and is retried; the second
	// succeeds. The test moves the job back to queued as the scheduler would.
	f, err := s.Client.Submit(ctx, job.Request{Type: "fail", Payload: json.RawMessage(`{"times":1}`), MaxAttempts: ptr(3)})
	must(t, err)
	stacktest.Eventually(t, 30*time.Second, "first attempt fails", func() bool {
		j, err := s.Store.Get(ctx, "default", f.ID)
		return err == nil && j.State == job.Retrying && j.Attempt == 1
	})
	db, err := sqlx.Open("postgres", s.DatabaseURLs[f.ID.Shard()])
	must(t, err)
	defer db.Close()
	_, err = db.Exec(`UPDATE jobs SET state = 'queued' WHERE id = $1 AND state = 'retrying'`, f.ID)
	must(t, err)
	body, _ := json.Marshal(job.Message{ID: f.ID, Type: f.Type})
	must(t, s.Broker.Publish(ctx, broker.Message{Queue: f.Queue, MessageID: f.ID.String(), Body: body}))
	f, err = s.Client.Wait(ctx, f.ID.String())
	must(t, err)
	var fr builtin.FailResult
	result(f, &fr)
	if fr.Attempt != 2 || f.Attempt != 2 {
		t.Errorf("fail: result %+v, job attempt %d", fr, f.Attempt)
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
