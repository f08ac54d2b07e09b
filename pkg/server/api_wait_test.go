package server_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/server"
	"github.com/warrenhq/warren/pkg/stacktest"
)

func TestGetWaitWakesWhenTheJobFinishes(t *testing.T) {
	t.Parallel()
	// No fallback re-reads within the test: only the Done event can wake.
	s := stacktest.New(t, stacktest.Options{Shards: 2, Server: func(c *server.Config) { c.FallbackPoll = time.Hour }})
	j := submit(t, s, `{"type":"slow"}`)
	url := s.URL + "/v1/jobs/" + j.ID.String()

	// Many waiters on one job, all woken by one event.
	const n = 5
	chans := make([]<-chan response, n)
	for i := range chans {
		chans[i] = async(t, "GET", url+"?wait=30s", stacktest.Token, "")
	}
	stacktest.Eventually(t, 10*time.Second, "the waiters to register", func() bool { return waiters(t, s) == n })
	start := time.Now()
	finish(t, s, j.ID, `"done"`)
	for i, ch := range chans {
		got := decodeJob(t, within(t, ch, 5*time.Second, "GET ?wait after the job finished"), http.StatusOK)
		if got.State != job.Succeeded || string(got.Result) != `"done"` {
			t.Fatalf("waiter %d: %+v", i, got)
		}
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("waiters answered %v after the job finished", d)
	}
	stacktest.Eventually(t, 5*time.Second, "no waiters left", func() bool { return waiters(t, s) == 0 })

	// A terminal job answers at once, whatever the wait.
	start = time.Now()
	decodeJob(t, call(t, "GET", url+"?wait=60s", stacktest.Token, ""), http.StatusOK)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("a finished job took %v to answer", d)
	}
}

func TestGetWaitEndsWithTheLatestState(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 1})
	j := submit(t, s, `{"type":"slow"}`)
	start := time.Now()
	got := decodeJob(t, call(t, "GET", s.URL+"/v1/jobs/"+j.ID.String()+"?wait=1", stacktest.Token, ""), http.StatusOK)
	if d := time.Since(start); d < time.Second || d > 5*time.Second {
		t.Errorf("wait=1 answered after %v", d)
	}
	if got.State != job.Queued {
		t.Errorf("state %s", got.State)
	}
	for _, tc := range []struct {
		q      string
		status int
		want   string
	}{
		{"?wait=forever", 400, "not a duration"},
		{"?wait=2m", 422, "between 0s and 1m0s"},
	} {
		r := call(t, "GET", s.URL+"/v1/jobs/"+j.ID.String()+tc.q, stacktest.Token, "")
		if r.status != tc.status || !strings.Contains(problem(t, r).Detail, tc.want) {
			t.Errorf("%s: %d %s", tc.q, r.status, r.body)
		}
	}
	// An unknown job is 404 at once, not after the wait.
	start = time.Now()
	r := call(t, "GET", s.URL+"/v1/jobs/"+job.NewID(time.Now(), 0).String()+"?wait=30s", stacktest.Token, "")
	if r.status != http.StatusNotFound || time.Since(start) > 2*time.Second {
		t.Errorf("unknown job: %d after %v", r.status, time.Since(start))
	}
	// Another tenant's job is unknown too.
	if r := call(t, "GET", s.URL+"/v1/jobs/"+j.ID.String()+"?wait=30s", stacktest.OtherToken, ""); r.status != http.StatusNotFound {
		t.Errorf("other tenant: %d", r.status)
	}
}

func TestGetWaitFallsBackToRereadsWhenRedisIsDown(t *testing.T) {
	t.Parallel()
	// Port 1 refuses connections: no cache, no events.
	s := stacktest.New(t, stacktest.Options{Shards: 1, RedisURL: "redis://127.0.0.1:1/0",
		Server: func(c *server.Config) { c.FallbackPoll = 200 * time.Millisecond }})
	j := submit(t, s, `{"type":"slow"}`)
	ch := async(t, "GET", s.URL+"/v1/jobs/"+j.ID.String()+"?wait=30s", stacktest.Token, "")
	stacktest.Eventually(t, 10*time.Second, "the waiter to register", func() bool { return waiters(t, s) == 1 })
	finish(t, s, j.ID, `1`) // its cache write and event go nowhere
	got := decodeJob(t, within(t, ch, 5*time.Second, "GET ?wait with Redis down"), http.StatusOK)
	if got.State != job.Succeeded {
		t.Fatalf("state %s", got.State)
	}
	if v, _ := metric(t, s, "warren_api_cache_reads_total", map[string]string{"result": "error"}); v == 0 {
		t.Error("no cache read errors counted with Redis down")
	}
}

func TestCloseAnswersWaitingRequests(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 1})
	j := submit(t, s, `{"type":"slow"}`)
	ch := async(t, "GET", s.URL+"/v1/jobs/"+j.ID.String()+"?wait=60s", stacktest.Token, "")
	stacktest.Eventually(t, 10*time.Second, "the waiter to register", func() bool { return waiters(t, s) == 1 })
	if err := s.Server.Close(); err != nil {
		t.Fatal(err)
	}
	got := decodeJob(t, within(t, ch, 5*time.Second, "a waiting GET after Close"), http.StatusOK)
	if got.State != job.Queued {
		t.Errorf("state %s", got.State)
	}
	if err := s.Server.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
