package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/server"
	"github.com/warrenhq/warren/pkg/stacktest"
	"github.com/warrenhq/warren/pkg/store"
)

type batchAnswer struct {
	Jobs []server.BatchItem `json:"jobs"`
}

func postBatch(t *testing.T, s *stacktest.Stack, body string) (response, batchAnswer) {
	t.Helper()
	r := call(t, "POST", s.URL+"/v1/jobs/batch", stacktest.Token, body)
	var a batchAnswer
	if r.status == http.StatusAccepted {
		if err := json.Unmarshal(r.body, &a); err != nil {
			t.Fatalf("batch answer %s: %v", r.body, err)
		}
	}
	return r, a
}

func TestBatchOfAThousandIsStoredAndPublished(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 2})
	ctx := context.Background()
	items := make([]string, server.MaxBatch)
	for i := range items {
		items[i] = fmt.Sprintf(`{"type":"bulk","queue":"bulkq","payload":{"i":%d}}`, i)
	}
	r, a := postBatch(t, s, `{"jobs":[`+strings.Join(items, ",")+`]}`)
	if r.status != http.StatusAccepted || len(a.Jobs) != server.MaxBatch {
		t.Fatalf("batch: %d, %d entries; %.300s", r.status, len(a.Jobs), r.body)
	}
	perShard := map[int]int{}
	for i, it := range a.Jobs {
		if it.Index != i || it.Job == nil || it.Error != nil || it.Job.State != job.Queued {
			t.Fatalf("entry %d: %+v", i, it)
		}
		var p struct{ I int }
		if err := json.Unmarshal(it.Job.Payload, &p); err != nil || p.I != i {
			t.Fatalf("entry %d carries payload %s", i, it.Job.Payload)
		}
		perShard[it.Job.ID.Shard()]++
	}
	if perShard[0] != 500 || perShard[1] != 500 {
		t.Errorf("jobs per shard: %v, want 500 each", perShard)
	}
	stored := 0
	for j, err := range pages(ctx, s.Store, store.ListQuery{Tenant: "default", Queue: "bulkq", Limit: 500}) {
		if err != nil {
			t.Fatal(err)
		}
		if j.State != job.Queued {
			t.Fatalf("stored job %s is %s", j.ID, j.State)
		}
		stored++
	}
	if stored != server.MaxBatch {
		t.Fatalf("%d jobs stored, want %d", stored, server.MaxBatch)
	}
	// All published: RabbitMQ holds a message for each (nobody consumes).
	stacktest.Eventually(t, 10*time.Second, "1000 messages in RabbitMQ", func() bool {
		ready, _, err := s.Broker.QueueDepth(ctx, "bulkq")
		return err == nil && ready == server.MaxBatch
	})
	if v, _ := metric(t, s, "warren_api_publish_confirms_total", map[string]string{"result": "ok"}); v != server.MaxBatch {
		t.Errorf("confirms ok = %v, want %d", v, server.MaxBatch)
	}
	if v, _ := metric(t, s, "warren_api_jobs_submitted_total", map[string]string{"queue": "bulkq", "type": "bulk"}); v != server.MaxBatch {
		t.Errorf("submits = %v, want %d", v, server.MaxBatch)
	}
}

func TestBatchReportsInvalidItemsAndKeepsTheRest(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 2, Server: func(c *server.Config) { c.MaxBodyBytes = 2048 }})
	ctx := context.Background()
	body := `{"jobs":[
		{"type":"echo","queue":"mixq"},
		{"type":""},
		{"type":"echo","colour":"red"},
		42,
		{"type":"echo","queue":"mixq","delay":"1h"},
		{"type":"echo","priority":99,"timeout":"nope"},
		{"type":"echo","payload":"` + strings.Repeat("x", 3000) + `"},
		{"type":"echo","queue":"mixq","payload":null}
	]}`
	r, a := postBatch(t, s, body)
	if r.status != http.StatusAccepted || len(a.Jobs) != 8 {
		t.Fatalf("batch: %d %s", r.status, r.body)
	}
	wantErr := map[int]struct {
		status int
		says   string
	}{
		1: {422, "required"},
		2: {422, `unknown field "colour"`},
		3: {400, "expected a JSON object"},
		5: {422, "between 0 and 9"},
		6: {413, "at most 2048"},
	}
	for i, it := range a.Jobs {
		if it.Index != i {
			t.Fatalf("entry %d has index %d", i, it.Index)
		}
		want, bad := wantErr[i]
		if !bad {
			if it.Job == nil || it.Error != nil {
				t.Errorf("entry %d: want a job, got %+v", i, it.Error)
			}
			continue
		}
		if it.Job != nil || it.Error == nil {
			t.Errorf("entry %d: want an error, got job %+v", i, it.Job)
			continue
		}
		text := it.Error.Detail
		for _, f := range it.Error.Errors {
			text += " | " + f.Field + ": " + f.Detail
		}
		if it.Error.Status != want.status || it.Error.Title == "" || !strings.Contains(text, want.says) {
			t.Errorf("entry %d: problem %+v, want %d saying %q", i, it.Error, want.status, want.says)
		}
	}
	if a.Jobs[4].Job.State != job.Scheduled {
		t.Errorf("delayed item: %s", a.Jobs[4].Job.State)
	}
	if string(a.Jobs[7].Job.Payload) != `{}` {
		t.Errorf("null payload became %s", a.Jobs[7].Job.Payload)
	}
	for _, i := range []int{0, 4, 7} {
		if _, err := s.Store.Get(ctx, "default", a.Jobs[i].Job.ID); err != nil {
			t.Errorf("entry %d not stored: %v", i, err)
		}
	}
	stacktest.Eventually(t, 10*time.Second, "the two runnable jobs in RabbitMQ", func() bool {
		ready, _, err := s.Broker.QueueDepth(ctx, "mixq")
		return err == nil && ready == 2
	})
}

func TestBatchRequestErrors(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 1, Server: func(c *server.Config) { c.MaxBatchBodyBytes = 64 << 10 }})
	many := `{"jobs":[` + strings.TrimSuffix(strings.Repeat(`{"type":"e"},`, server.MaxBatch+1), ",") + `]}`
	for _, tc := range []struct {
		name, body string
		hdr        map[string]string
		status     int
		want       string
	}{
		{"too many", many, nil, 422, "has 1001 job requests, at most 1000"},
		{"empty", `{"jobs":[]}`, nil, 422, "is empty"},
		{"missing", `{}`, nil, 422, "required"},
		{"not an array", `{"jobs":{}}`, nil, 422, `"jobs" must be an array`},
		{"unknown field", `{"jobs":[],"x":1}`, nil, 422, `unknown field "x"`},
		{"malformed", `{"jobs":[`, nil, 400, "malformed JSON"},
		{"too large", `{"jobs":[{"type":"echo","payload":"` + strings.Repeat("x", 70<<10) + `"}]}`, nil, 413, "exceeds 65536 bytes"},
		{"idempotency key", `{"jobs":[{"type":"echo"}]}`, map[string]string{"Idempotency-Key": "k"}, 400, "not supported"},
	} {
		r := callWith(t, "POST", s.URL+"/v1/jobs/batch", stacktest.Token, tc.body, tc.hdr)
		if r.status != tc.status {
			t.Errorf("%s: %d, want %d; %.200s", tc.name, r.status, tc.status, r.body)
			continue
		}
		p := problem(t, r)
		text := p.Detail
		for _, f := range p.Errors {
			text += " | " + f.Field + ": " + f.Detail
		}
		if !strings.Contains(text, tc.want) {
			t.Errorf("%s: %q does not say %q", tc.name, text, tc.want)
		}
	}
	if r := call(t, "POST", s.URL+"/v1/jobs/batch", "", `{"jobs":[{"type":"echo"}]}`); r.status != http.StatusUnauthorized {
		t.Errorf("no token: %d", r.status)
	}
}

// pages iterates over every job a list query pages through.
func pages(ctx context.Context, st *store.Store, q store.ListQuery) func(func(*job.Job, error) bool) {
	return func(yield func(*job.Job, error) bool) {
		for {
			page, more, err := st.List(ctx, q)
			if err != nil {
				yield(nil, err)
				return
			}
			for _, j := range page {
				if !yield(j, nil) {
					return
				}
			}
			if !more {
				return
			}
			q.Before = page[len(page)-1].ID
		}
	}
}
