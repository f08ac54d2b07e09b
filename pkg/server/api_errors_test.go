package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/server"
	"github.com/warrenhq/warren/pkg/stacktest"
	"github.com/warrenhq/warren/pkg/store"
)

// Every authed route, reads included, refuses a request without a token or
// with a wrong one: 401, a problem saying which, and WWW-Authenticate.
func TestEveryAuthedRouteNeedsAValidToken(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 1})
	j := submit(t, s, `{"type":"nobody.handles.this"}`)
	id := j.ID.String()
	for _, rt := range []struct{ method, path, body string }{
		{"GET", "/v1/jobs", ""},
		{"GET", "/v1/jobs?state=queued&limit=5", ""},
		{"GET", "/v1/jobs/" + id, ""},
		{"GET", "/v1/jobs/" + id + "?wait=5s", ""},
		{"GET", "/v1/queues", ""},
		{"GET", "/v1/workers", ""},
		{"POST", "/v1/jobs", `{"type":"echo"}`},
		{"POST", "/v1/jobs/batch", `{"jobs":[{"type":"echo"}]}`},
		{"POST", "/v1/jobs/" + id + "/cancel", ""},
		{"POST", "/v1/jobs/" + id + "/retry", ""},
	} {
		for _, tc := range []struct{ name, token, want string }{
			{"no token", "", "missing bearer token"},
			{"bad token", "not-a-real-token-at-all", "invalid bearer token"},
		} {
			what := tc.name + ": " + rt.method + " " + rt.path
			start := time.Now()
			r := call(t, rt.method, s.URL+rt.path, tc.token, rt.body)
			if r.status != http.StatusUnauthorized {
				t.Errorf("%s: status %d, want 401; body %s", what, r.status, r.body)
				continue
			}
			if p := problem(t, r); !strings.Contains(p.Detail, tc.want) {
				t.Errorf("%s: detail %q, want it to say %q", what, p.Detail, tc.want)
			}
			if r.header.Get("WWW-Authenticate") == "" {
				t.Errorf("%s: no WWW-Authenticate header", what)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("%s: refused after %v: the wait ran before the token check", what, d)
			}
		}
	}
	// Nothing happened: the job is untouched, and nothing else was stored.
	list := call(t, "GET", s.URL+"/v1/jobs", stacktest.Token, "")
	var page server.JobPage
	if err := json.Unmarshal(list.body, &page); err != nil || list.status != http.StatusOK {
		t.Fatalf("list: %d %s", list.status, list.body)
	}
	if len(page.Jobs) != 1 || page.Jobs[0].ID != j.ID || page.Jobs[0].State != job.Queued {
		t.Fatalf("after refused requests the tenant has %d jobs: %s", len(page.Jobs), list.body)
	}
}

// downShardURL is a shard that does not answer: nothing listens on port 1.
const downShardURL = "postgres://warren:x@127.0.0.1:1/warren_down?sslmode=disable&connect_timeout=1"

// apiOn serves the API of stack s over the given shards instead of its own,
// with s's broker and cache.
func apiOn(t *testing.T, s *stacktest.Stack, urls []string) string {
	t.Helper()
	st, err := store.Open(store.Config{URLs: urls, MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	srv, err := server.New(server.Config{Tenants: []server.Tenant{{Name: "default", Token: stacktest.Token}}}, st, s.Broker, s.Cache, s.Log)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	t.Cleanup(func() { _ = srv.Close() })
	return hs.URL
}

// unavailableProblem checks a 503 problem with Retry-After whose detail
// says want.
func unavailableProblem(t *testing.T, what string, r response, want string) {
	t.Helper()
	if r.status != http.StatusServiceUnavailable {
		t.Errorf("%s: status %d, want 503; body %s", what, r.status, r.body)
		return
	}
	if p := problem(t, r); !strings.Contains(p.Detail, want) {
		t.Errorf("%s: detail %q, want it to say %q", what, p.Detail, want)
	}
	if r.header.Get("Retry-After") == "" {
		t.Errorf("%s: no Retry-After", what)
	}
}

// One shard down: reads of the other shard's jobs go on; queue statistics
// name the missing shard; answers that need every shard, and reads of the
// down shard's jobs, are 503 problems saying which shard.
func TestReadsWithAShardDown(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 1})
	up := submit(t, s, `{"type":"nobody.handles.this","queue":"shard-down"}`) // on shard 0
	api := apiOn(t, s, []string{s.DatabaseURLs[0], downShardURL})
	onDown := job.NewID(time.Now(), 1).String()

	if r := call(t, "GET", api+"/v1/jobs/"+up.ID.String(), stacktest.Token, ""); r.status != http.StatusOK {
		t.Errorf("a job on the shard that is up: %d %s", r.status, r.body)
	}
	unavailableProblem(t, "GET /v1/jobs/{id} on the down shard",
		call(t, "GET", api+"/v1/jobs/"+onDown, stacktest.Token, ""), "the job's shard (1) is unavailable")
	unavailableProblem(t, "GET /v1/jobs/{id}?wait on the down shard",
		call(t, "GET", api+"/v1/jobs/"+onDown+"?wait=5s", stacktest.Token, ""), "the job's shard (1) is unavailable")
	unavailableProblem(t, "GET /v1/jobs",
		call(t, "GET", api+"/v1/jobs", stacktest.Token, ""), "shard 1 is unavailable")
	unavailableProblem(t, "GET /v1/jobs?queue=",
		call(t, "GET", api+"/v1/jobs?queue=shard-down&limit=10", stacktest.Token, ""), "shard 1 is unavailable")

	r := call(t, "GET", api+"/v1/queues", stacktest.Token, "")
	var ans server.QueuesAnswer
	if r.status != http.StatusOK || json.Unmarshal(r.body, &ans) != nil {
		t.Fatalf("GET /v1/queues with a shard down: %d %s", r.status, r.body)
	}
	if !slices.Equal(ans.UnavailableShards, []int{1}) {
		t.Errorf("unavailable_shards %v, want [1]", ans.UnavailableShards)
	}
	if len(ans.Queues) != 1 || ans.Queues[0].Name != "shard-down" || ans.Queues[0].Ready != 1 {
		t.Errorf("queues from the shard that is up: %+v", ans.Queues)
	}
	if !strings.Contains(string(r.body), `"unavailable_shards":[1]`) {
		t.Errorf("body %s does not name the down shard in unavailable_shards", r.body)
	}
}

// No shard answers: GET /v1/queues has nothing to count and says so with a
// 503, as do the other reads.
func TestReadsWithEveryShardDown(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 1})
	api := apiOn(t, s, []string{downShardURL, strings.Replace(downShardURL, "warren_down", "warren_down2", 1)})
	unavailableProblem(t, "GET /v1/queues", call(t, "GET", api+"/v1/queues", stacktest.Token, ""), "no shard answered")
	unavailableProblem(t, "GET /v1/jobs", call(t, "GET", api+"/v1/jobs", stacktest.Token, ""), "is unavailable")
	unavailableProblem(t, "GET /v1/jobs/{id}",
		call(t, "GET", api+"/v1/jobs/"+job.NewID(time.Now(), 0).String(), stacktest.Token, ""), "the job's shard (0) is unavailable")
	// The api still answers its health check, and says it is not ready.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", api+"/readyz", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("readyz with every shard down: %d, want 503", resp.StatusCode)
	}
}
