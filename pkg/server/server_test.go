package server_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/warrenhq/warren/pkg/builtin"
	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/server"
	"github.com/warrenhq/warren/pkg/stacktest"
	"github.com/warrenhq/warren/pkg/worker"
)

type response struct {
	status int
	header http.Header
	body   []byte
}

func call(t *testing.T, method, url, token, body string) response {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{resp.StatusCode, resp.Header, b}
}

func problem(t *testing.T, r response) server.Problem {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("content type %q, want application/problem+json; body %s", ct, r.body)
	}
	var p server.Problem
	if err := json.Unmarshal(r.body, &p); err != nil {
		t.Fatalf("problem body %s: %v", r.body, err)
	}
	if p.Status != r.status || p.Title == "" || p.Detail == "" {
		t.Fatalf("incomplete problem %+v for status %d", p, r.status)
	}
	return p
}

func TestSubmitAndReadResult(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{})
	w, err := worker.New(s.WorkerConfig())
	if err != nil {
		t.Fatal(err)
	}
	if err := builtin.Register(w); err != nil {
		t.Fatal(err)
	}
	stacktest.StartWorker(t, w)

	r := call(t, "POST", s.URL+"/v1/jobs", stacktest.Token, `{"type":"echo","payload":{"hello":"world"}}`)
	if r.status != http.StatusAccepted {
		t.Fatalf("submit: %d %s", r.status, r.body)
	}
	var j job.Job
	if err := json.Unmarshal(r.body, &j); err != nil {
		t.Fatal(err)
	}
	if j.State != job.Queued || j.Type != "echo" || j.Queue != "default" || j.MaxAttempts != 5 || j.Attempt != 0 {
		t.Fatalf("accepted job: %s", r.body)
	}
	if loc := r.header.Get("Location"); loc != "/v1/jobs/"+j.ID.String() {
		t.Fatalf("Location %q", loc)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done, err := s.Client.Wait(ctx, j.ID.String())
	if err != nil {
		t.Fatal(err)
	}
	if done.State != job.Succeeded || done.Attempt != 1 || done.StartedAt == nil || done.FinishedAt == nil {
		t.Fatalf("finished job: %+v", done)
	}
	var res map[string]string
	if err := json.Unmarshal(done.Result, &res); err != nil || res["hello"] != "world" {
		t.Fatalf("result %s", done.Result)
	}
	// Served from the cache and from Postgres alike, for the owner only.
	if _, err := s.Cache.GetJob(ctx, "default", j.ID); err != nil {
		t.Fatalf("finished job not cached: %v", err)
	}
	other := call(t, "GET", s.URL+"/v1/jobs/"+j.ID.String(), stacktest.OtherToken, "")
	if other.status != http.StatusNotFound {
		t.Fatalf("another tenant read the job: %d %s", other.status, other.body)
	}
	problem(t, other)
}

func TestReadsFallBackToPostgresWhenRedisIsDown(t *testing.T) {
	t.Parallel()
	// Port 1 refuses connections: the cache is down for this whole stack.
	s := stacktest.New(t, stacktest.Options{RedisURL: "redis://127.0.0.1:1/0"})
	r := call(t, "POST", s.URL+"/v1/jobs", stacktest.Token, `{"type":"nobody.handles.this"}`)
	if r.status != http.StatusAccepted {
		t.Fatalf("submit with Redis down: %d %s", r.status, r.body)
	}
	var j job.Job
	if err := json.Unmarshal(r.body, &j); err != nil {
		t.Fatal(err)
	}
	g := call(t, "GET", s.URL+"/v1/jobs/"+j.ID.String(), stacktest.Token, "")
	if g.status != http.StatusOK || !strings.Contains(string(g.body), `"state":"queued"`) {
		t.Fatalf("read with Redis down: %d %s", g.status, g.body)
	}
	ready := call(t, "GET", s.URL+"/readyz", "", "")
	if ready.status != http.StatusOK || !strings.Contains(string(ready.body), "degraded") {
		t.Fatalf("readyz with Redis down: %d %s", ready.status, ready.body)
	}
}

func TestAuth(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 1})
	for _, tc := range []struct {
		name, header, want string
	}{
		{"no token", "", "missing bearer token"},
		{"wrong token", "Bearer not-a-real-token-at-all", "invalid bearer token"},
		{"not bearer", "Basic dXNlcjpwYXNz", "malformed Authorization header"},
		{"empty bearer", "Bearer ", "malformed Authorization header"},
	} {
		req, _ := http.NewRequest("POST", s.URL+"/v1/jobs", strings.NewReader(`{"type":"echo"}`))
		if tc.header != "" {
			req.Header.Set("Authorization", tc.header)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		r := response{resp.StatusCode, resp.Header, b}
		if r.status != http.StatusUnauthorized {
			t.Errorf("%s: status %d, want 401", tc.name, r.status)
			continue
		}
		if p := problem(t, r); !strings.Contains(p.Detail, tc.want) {
			t.Errorf("%s: detail %q, want it to say %q", tc.name, p.Detail, tc.want)
		}
		if r.header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s: no WWW-Authenticate header", tc.name)
		}
	}
}

func TestBadRequestsGetPreciseProblems(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 1, Server: func(c *server.Config) { c.MaxBodyBytes = 4096 }})
	for _, tc := range []struct {
		name, body string
		status     int
		want       string // in the detail or a field error
	}{
		{"empty body", ``, 400, "empty body"},
		{"malformed", `{"type":`, 400, "malformed JSON"},
		{"syntax error", `{"type" "echo"}`, 400, "malformed JSON at byte"},
		{"not an object", `[1,2]`, 400, "expected a JSON object"},
		{"trailing data", `{"type":"echo"} {}`, 400, "data after the JSON object"},
		{"unknown field", `{"type":"echo","colour":"red"}`, 422, `unknown field "colour"`},
		{"wrong type", `{"type":42}`, 422, `field "type" must be a string`},
		{"missing type", `{"payload":{}}`, 422, "required"},
		{"bad type name", `{"type":"has space"}`, 422, "letters, digits"},
		{"bad queue", `{"type":"echo","queue":"a/b"}`, 422, "letters, digits"},
		{"priority too high", `{"type":"echo","priority":10}`, 422, "between 0 and 9"},
		{"negative priority", `{"type":"echo","priority":-1}`, 422, "between 0 and 9"},
		{"huge number", `{"type":"echo","max_attempts":1e400}`, 422, `field "max_attempts" must be a number`},
		{"zero attempts", `{"type":"echo","max_attempts":0}`, 422, "between 1 and 100"},
		{"bad timeout", `{"type":"echo","timeout":"soon"}`, 422, "not a duration"},
		{"timeout too long", `{"type":"echo","timeout":"48h"}`, 422, "between 1s and 24h"},
		{"too large", `{"type":"echo","payload":"` + strings.Repeat("x", 5000) + `"}`, 413, "exceeds 4096 bytes"},
	} {
		r := call(t, "POST", s.URL+"/v1/jobs", stacktest.Token, tc.body)
		if r.status != tc.status {
			t.Errorf("%s: status %d, want %d; body %s", tc.name, r.status, tc.status, r.body)
			continue
		}
		p := problem(t, r)
		text := p.Detail
		for _, f := range p.Errors {
			text += " | " + f.Field + ": " + f.Detail
		}
		if !strings.Contains(text, tc.want) {
			t.Errorf("%s: problem %q does not say %q", tc.name, text, tc.want)
		}
	}
	// The process keeps serving.
	if r := call(t, "GET", s.URL+"/healthz", "", ""); r.status != 200 {
		t.Fatalf("healthz after bad requests: %d", r.status)
	}
}

func TestBadAndUnknownIDs(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 1})
	for _, tc := range []struct {
		id     string
		status int
		want   string
	}{
		{"nope", 400, "is not a job id"},
		{strings.Repeat("Z", 26), 400, "is not a job id"},
		{job.NewID(time.Now(), 0).String(), 404, "no job"},
		{job.NewID(time.Now(), 7).String(), 404, "no job"}, // a shard this stack lacks
	} {
		r := call(t, "GET", s.URL+"/v1/jobs/"+tc.id, stacktest.Token, "")
		if r.status != tc.status {
			t.Errorf("%s: status %d, want %d", tc.id, r.status, tc.status)
			continue
		}
		if p := problem(t, r); !strings.Contains(p.Detail, tc.want) {
			t.Errorf("%s: detail %q", tc.id, p.Detail)
		}
	}
	if r := call(t, "GET", s.URL+"/v2/anything", stacktest.Token, ""); r.status != 404 {
		t.Errorf("unknown route: %d", r.status)
	} else {
		problem(t, r)
	}
	if r := call(t, "DELETE", s.URL+"/v1/jobs", stacktest.Token, ""); r.status != 405 && r.status != 404 {
		t.Errorf("wrong method: %d", r.status)
	}
}

func TestSubmitSpreadsAcrossShards(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 2})
	seen := map[int]int{}
	for range 10 {
		j, err := s.Client.Submit(context.Background(), job.Request{Type: "nobody.handles.this"})
		if err != nil {
			t.Fatal(err)
		}
		seen[j.ID.Shard()]++
		got, err := s.Store.Get(context.Background(), "default", j.ID)
		if err != nil || got.State != job.Queued {
			t.Fatalf("job %s not committed on shard %d: %v", j.ID, j.ID.Shard(), err)
		}
	}
	if seen[0] == 0 || seen[1] == 0 {
		t.Fatalf("jobs per shard: %v, want both shards used", seen)
	}
}
