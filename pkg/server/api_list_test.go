package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenhq/warren/pkg/broker"
	"github.com/warrenhq/warren/pkg/cache"
	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/server"
	"github.com/warrenhq/warren/pkg/stacktest"
	"github.com/warrenhq/warren/pkg/store"
)

func listPage(t *testing.T, s *stacktest.Stack, query string) server.JobPage {
	t.Helper()
	r := call(t, "GET", s.URL+"/v1/jobs"+query, stacktest.Token, "")
	if r.status != http.StatusOK {
		t.Fatalf("list %s: %d %s", query, r.status, r.body)
	}
	var p server.JobPage
	if err := json.Unmarshal(r.body, &p); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestListPaginationUnderConcurrentInserts(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 2})
	ctx := context.Background()
	var reqs []string
	for i := range 230 {
		reqs = append(reqs, fmt.Sprintf(`{"type":"page","payload":{"i":%d}}`, i))
	}
	for chunk := range 3 { // three batches: ids from several milliseconds
		body := `{"jobs":[` + strings.Join(reqs[chunk*100:min(len(reqs), chunk*100+100)], ",") + `]}`
		if r := call(t, "POST", s.URL+"/v1/jobs/batch", stacktest.Token, body); r.status != http.StatusAccepted {
			t.Fatal(r.status, string(r.body))
		}
	}
	before := map[job.ID]bool{}
	for j, err := range pages(ctx, s.Store, store.ListQuery{Tenant: "default", Limit: 500}) {
		if err != nil {
			t.Fatal(err)
		}
		before[j.ID] = true
	}
	if len(before) != 230 {
		t.Fatalf("%d jobs before the walk", len(before))
	}

	// Insert concurrently with the walk, on both shards.
	stop := make(chan struct{})
	var inserted atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := s.Client.Submit(ctx, job.Request{Type: "page"}); err != nil {
				t.Error(err)
				return
			}
			inserted.Add(1)
		}
	})
	seen := map[job.ID]bool{}
	var last []byte
	cursor, pagesRead := "", 0
	for {
		q := "?limit=17"
		if cursor != "" {
			q += "&cursor=" + url.QueryEscape(cursor)
		}
		p := listPage(t, s, q)
		pagesRead++
		for _, j := range p.Jobs {
			if seen[j.ID] {
				t.Fatalf("job %s seen twice", j.ID)
			}
			seen[j.ID] = true
			if last != nil && bytes.Compare(j.ID[:], last) >= 0 {
				t.Fatalf("job %s after %x: not strictly descending", j.ID, last)
			}
			last = append(last[:0], j.ID[:]...)
		}
		if p.NextCursor == nil {
			break
		}
		cursor = *p.NextCursor
		if pagesRead == 3 { // make sure inserts happen mid-walk
			stacktest.Eventually(t, 10*time.Second, "concurrent inserts", func() bool { return inserted.Load() >= 5 })
		}
	}
	close(stop)
	wg.Wait()
	for id := range before {
		if !seen[id] {
			t.Fatalf("job %s existed before the walk and was not listed", id)
		}
	}
	if pagesRead < 230/17 {
		t.Errorf("read %d pages", pagesRead)
	}
	t.Logf("walked %d pages, %d jobs; %d inserted during the walk", pagesRead, len(seen), inserted.Load())
}

func TestListFiltersAndErrors(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 2})
	a := submit(t, s, `{"type":"alpha","queue":"qa"}`)
	b := submit(t, s, `{"type":"beta","queue":"qb"}`)
	c := submit(t, s, `{"type":"alpha","queue":"qb","delay":"1h"}`)
	call(t, "POST", s.URL+"/v1/jobs", stacktest.OtherToken, `{"type":"alpha"}`)
	finish(t, s, b.ID, `1`)
	for _, tc := range []struct {
		q    string
		want []job.ID
	}{
		{"", []job.ID{c.ID, b.ID, a.ID}},
		{"?type=alpha", []job.ID{c.ID, a.ID}},
		{"?queue=qb", []job.ID{c.ID, b.ID}},
		{"?state=succeeded", []job.ID{b.ID}},
		{"?state=scheduled&type=alpha&queue=qb", []job.ID{c.ID}},
		{"?state=dead", nil},
	} {
		p := listPage(t, s, tc.q)
		var got []job.ID
		for _, j := range p.Jobs {
			got = append(got, j.ID)
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) || p.NextCursor != nil {
			t.Errorf("%s: got %v (next %v), want %v", tc.q, got, p.NextCursor, tc.want)
		}
	}
	if r := call(t, "GET", s.URL+"/v1/jobs?state=dead", stacktest.Token, ""); !strings.Contains(string(r.body), `"jobs":[]`) || !strings.Contains(string(r.body), `"next_cursor":null`) {
		t.Errorf("empty page: %s", r.body)
	}
	p := listPage(t, s, "?limit=2")
	if len(p.Jobs) != 2 || p.NextCursor == nil {
		t.Fatalf("limit=2: %d jobs, next %v", len(p.Jobs), p.NextCursor)
	}
	if p2 := listPage(t, s, "?limit=2&cursor="+*p.NextCursor); len(p2.Jobs) != 1 || p2.Jobs[0].ID != a.ID || p2.NextCursor != nil {
		t.Fatalf("second page: %+v", p2)
	}
	for _, tc := range []struct {
		q      string
		status int
		want   string
	}{
		{"?state=finished", 422, `"finished" is not a state`},
		{"?limit=0", 422, "between 1 and 500"},
		{"?limit=501", 422, "between 1 and 500"},
		{"?limit=ten", 400, "not a whole number"},
		{"?cursor=%21%21", 400, "not a cursor"},
		{"?cursor=AAAA", 400, "not a cursor"},
		{"?queue=a%2Fb", 422, "letters, digits"},
	} {
		r := call(t, "GET", s.URL+"/v1/jobs"+tc.q, stacktest.Token, "")
		if r.status != tc.status {
			t.Errorf("%s: %d, want %d: %s", tc.q, r.status, tc.status, r.body)
			continue
		}
		p := problem(t, r)
		text := p.Detail
		for _, f := range p.Errors {
			text += " | " + f.Field + ": " + f.Detail
		}
		if !strings.Contains(text, tc.want) {
			t.Errorf("%s: %q does not say %q", tc.q, text, tc.want)
		}
	}
}

func TestQueues(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 2})
	ctx := context.Background()
	submit(t, s, `{"type":"a","queue":"stats-a"}`)
	submit(t, s, `{"type":"a","queue":"stats-a"}`)
	done := submit(t, s, `{"type":"a","queue":"stats-a"}`)
	finish(t, s, done.ID, `1`)
	dead := submit(t, s, `{"type":"a","queue":"stats-a"}`)
	kill(t, s, dead.ID)
	// One running (claimed by a worker, its handler busy) and one retrying
	// (its first attempt failed, the next one due in an hour).
	running := submit(t, s, `{"type":"a","queue":"stats-a"}`)
	if _, err := s.Store.Claim(ctx, running.ID, "test-worker", time.Minute); err != nil {
		t.Fatalf("claim: %v", err)
	}
	retrying := submit(t, s, `{"type":"a","queue":"stats-a","max_attempts":3}`)
	c, err := s.Store.Claim(ctx, retrying.ID, "test-worker", time.Minute)
	if err != nil {
		t.Fatalf("claim: %v", err)
	}
	if r, err := s.Store.Fail(ctx, retrying.ID, c.Attempt, "boom", time.Now().Add(time.Hour), false); err != nil || r.State != job.Retrying {
		t.Fatalf("fail the first attempt: %+v, %v", r, err)
	}
	submit(t, s, `{"type":"a","queue":"stats-b","delay":"1h"}`)
	call(t, "POST", s.URL+"/v1/jobs", stacktest.OtherToken, `{"type":"a","queue":"stats-a"}`)
	// A consumer on stats-a.
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	consumed := make(chan error, 1)
	go func() {
		consumed <- s.Broker.Consume(cctx, "stats-a", 1, func(context.Context, *broker.Delivery) {})
	}()
	defer func() { cancel(); <-consumed }()

	var ans server.QueuesAnswer
	stacktest.Eventually(t, 10*time.Second, "the consumer to show", func() bool {
		r := call(t, "GET", s.URL+"/v1/queues", stacktest.Token, "")
		if r.status != http.StatusOK {
			t.Fatalf("queues: %d %s", r.status, r.body)
		}
		ans = server.QueuesAnswer{}
		if err := json.Unmarshal(r.body, &ans); err != nil {
			t.Fatal(err)
		}
		return len(ans.Queues) == 2 && ans.Queues[0].Consumers != nil && *ans.Queues[0].Consumers == 1
	})
	a, b := ans.Queues[0], ans.Queues[1]
	if a.Name != "stats-a" || a.Ready != 2 || a.Dead != 1 || a.Running != 1 || a.Retrying != 1 || a.Scheduled != 0 ||
		a.ThroughputLastMinute != 2 || a.OldestReadyAgeSeconds <= 0 {
		t.Errorf("stats-a: %+v", a)
	}
	if b.Name != "stats-b" || b.Scheduled != 1 || b.Ready != 0 || b.Consumers == nil || *b.Consumers != 0 {
		t.Errorf("stats-b (never declared in RabbitMQ): %+v", b)
	}
	if len(ans.UnavailableShards) != 0 {
		t.Errorf("unavailable shards: %v", ans.UnavailableShards)
	}
}

func TestWorkers(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 1})
	now := time.Now().UTC().Truncate(time.Millisecond)
	w := cache.WorkerInfo{ID: "w-1", Host: "box", PID: 42, Queues: []string{"default"}, Types: []string{"echo"},
		Concurrency: 8, Busy: 3, StartedAt: now.Add(-time.Hour), LastHeartbeat: now}
	if err := s.Cache.PutWorker(context.Background(), w, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	r := call(t, "GET", s.URL+"/v1/workers", stacktest.Token, "")
	var ans struct{ Workers []cache.WorkerInfo }
	if r.status != http.StatusOK || json.Unmarshal(r.body, &ans) != nil {
		t.Fatalf("workers: %d %s", r.status, r.body)
	}
	if len(ans.Workers) != 1 || ans.Workers[0].ID != "w-1" || ans.Workers[0].Busy != 3 || !ans.Workers[0].LastHeartbeat.Equal(now) {
		t.Fatalf("workers: %+v", ans.Workers)
	}
	if r := call(t, "GET", s.URL+"/v1/workers", "", ""); r.status != http.StatusUnauthorized {
		t.Errorf("no token: %d", r.status)
	}

	// A worker dedicated to tenant "other" is shown to it, not to "default";
	// the shared one is shown to both.
	ded := w
	ded.ID, ded.Tenants = "w-other", []string{"other"}
	if err := s.Cache.PutWorker(context.Background(), ded, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		token string
		want  []string
	}{
		{stacktest.Token, []string{"w-1"}},
		{stacktest.OtherToken, []string{"w-1", "w-other"}},
	} {
		r := call(t, "GET", s.URL+"/v1/workers", tc.token, "")
		var ans struct{ Workers []cache.WorkerInfo }
		if r.status != http.StatusOK || json.Unmarshal(r.body, &ans) != nil {
			t.Fatalf("workers: %d %s", r.status, r.body)
		}
		var got []string
		for _, w := range ans.Workers {
			got = append(got, w.ID)
		}
		slices.Sort(got)
		if !slices.Equal(got, tc.want) {
			t.Errorf("token %s… sees workers %v, want %v", tc.token[:16], got, tc.want)
		}
	}

	down := stacktest.New(t, stacktest.Options{Shards: 1, RedisURL: "redis://127.0.0.1:1/0"})
	r = call(t, "GET", down.URL+"/v1/workers", stacktest.Token, "")
	if r.status != http.StatusServiceUnavailable || !strings.Contains(problem(t, r).Detail, "Redis") {
		t.Errorf("Redis down: %d %s", r.status, r.body)
	}
}
