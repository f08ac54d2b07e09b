package server_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/stacktest"
	"github.com/warrenhq/warren/pkg/store"
)

// Many concurrent single submits: each is answered 202 with its own job,
// every job is stored exactly once and published exactly once.
func TestGroupCommitConcurrentSubmitsStoredOnce(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 2})
	const n = 200
	answers := make([]<-chan response, n)
	for i := range n {
		answers[i] = async(t, "POST", s.URL+"/v1/jobs", stacktest.Token, fmt.Sprintf(`{"type":"echo","queue":"grouped","payload":{"n":%d}}`, i))
	}
	ids := map[job.ID]int{}
	for i, ch := range answers {
		j := decodeJob(t, within(t, ch, time.Minute, fmt.Sprintf("submit %d", i)), http.StatusAccepted)
		if other, dup := ids[j.ID]; dup {
			t.Fatalf("submits %d and %d were answered with the same job %s", other, i, j.ID)
		}
		ids[j.ID] = i
		if got := payloadN(t, j.Payload); got != i {
			t.Fatalf("submit %d was answered with the job of submit %d", i, got)
		}
	}
	ctx := context.Background()
	for id, i := range ids {
		stored, err := s.Store.Get(ctx, "default", id)
		if err != nil {
			t.Fatalf("job %s of submit %d: %v", id, i, err)
		}
		if got := payloadN(t, stored.Payload); got != i || stored.State != job.Queued {
			t.Fatalf("job %s of submit %d holds submit %d's payload, state %s", id, i, got, stored.State)
		}
	}
	jobs, _, err := s.Store.List(ctx, store.ListQuery{Tenant: "default", Limit: 500})
	if err != nil || len(jobs) != n {
		t.Fatalf("%d jobs stored (%v), want exactly %d", len(jobs), err, n)
	}
	ready, _, err := s.Broker.QueueDepth(ctx, "grouped")
	if err != nil || ready != n {
		t.Fatalf("RabbitMQ holds %d messages (%v), want %d", ready, err, n)
	}
}

// Submits that arrive while their shard's INSERT runs share the next one:
// with the table locked, the first submit's statement waits and every
// other submit queues behind it; once the lock goes, they all commit in one
// more statement, each answered with its own job.
func TestGroupCommitSubmitsShareAStatement(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 1})
	tx := lockJobs(t, s, `LOCK TABLE jobs IN EXCLUSIVE MODE`)
	const n = 50
	answers := make([]<-chan response, n)
	for i := range n {
		answers[i] = async(t, "POST", s.URL+"/v1/jobs", stacktest.Token, fmt.Sprintf(`{"type":"echo","payload":{"n":%d}}`, i))
	}
	stacktest.Eventually(t, 30*time.Second, "every submit to wait for its group INSERT", func() bool {
		return inGroup(t, s, "insert") == n
	})
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	ids := map[job.ID]bool{}
	for i, ch := range answers {
		j := decodeJob(t, within(t, ch, time.Minute, fmt.Sprintf("submit %d", i)), http.StatusAccepted)
		if ids[j.ID] || payloadN(t, j.Payload) != i {
			t.Fatalf("submit %d: job %s is a duplicate or another submit's", i, j.ID)
		}
		ids[j.ID] = true
	}
	// One statement for the first submit, one for the rest (a straggler that
	// had not queued yet when the lock went may take a third).
	if stmts, _ := metric(t, s, "warren_api_group_jobs", map[string]string{"step": "insert"}); stmts < 2 || stmts > 3 {
		t.Fatalf("%v INSERT statements for %d submits, want 2 or 3", stmts, n)
	}
	jobs, _, err := s.Store.List(context.Background(), store.ListQuery{Tenant: "default", Limit: 500})
	if err != nil || len(jobs) != n {
		t.Fatalf("%d jobs stored (%v), want exactly %d", len(jobs), err, n)
	}
}

// A statement that fails answers every submit it carried with 503, none
// with 202, and stores none of them; the next statement is unaffected.
func TestGroupCommitFailureAnswersEveryCaller(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 1})
	// The constraint refuses "doomed" jobs once committed; until then its
	// lock holds every INSERT, so the submits below queue up together.
	tx := lockJobs(t, s, `ALTER TABLE jobs ADD CONSTRAINT no_doomed_jobs CHECK (type <> 'doomed')`)
	first := async(t, "POST", s.URL+"/v1/jobs", stacktest.Token, `{"type":"doomed"}`)
	stacktest.Eventually(t, 30*time.Second, "the first submit's INSERT to wait for the lock", func() bool {
		return lockWaiters(t, tx) == 1
	})
	// The next statement mixes doomed jobs with good ones: one statement,
	// one outcome for all of them.
	const n = 30
	answers := []<-chan response{first}
	for i := range n {
		typ := "echo"
		if i%2 == 0 {
			typ = "doomed"
		}
		answers = append(answers, async(t, "POST", s.URL+"/v1/jobs", stacktest.Token, fmt.Sprintf(`{"type":%q}`, typ)))
	}
	stacktest.Eventually(t, 30*time.Second, "every submit to wait for its group INSERT", func() bool {
		return inGroup(t, s, "insert") == n+1
	})
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	for i, ch := range answers {
		r := within(t, ch, time.Minute, fmt.Sprintf("submit %d", i))
		if r.status != http.StatusServiceUnavailable {
			t.Fatalf("submit %d: status %d, want 503; body %s", i, r.status, r.body)
		}
		if r.header.Get("Retry-After") == "" {
			t.Errorf("submit %d: 503 without Retry-After", i)
		}
		problem(t, r)
	}
	ctx := context.Background()
	jobs, _, err := s.Store.List(ctx, store.ListQuery{Tenant: "default", Limit: 500})
	if err != nil || len(jobs) != 0 {
		t.Fatalf("%d jobs stored (%v), want none", len(jobs), err)
	}
	if ok, _ := metric(t, s, "warren_api_publish_confirms_total", map[string]string{"result": "ok"}); ok != 0 {
		t.Fatalf("%v messages published for jobs that were refused", ok)
	}
	if stmts, _ := metric(t, s, "warren_api_group_jobs", map[string]string{"step": "insert"}); stmts > 3 {
		t.Fatalf("%v INSERT statements for %d submits: they did not share one", stmts, n+1)
	}
	// The group is not stuck: a good job commits.
	submit(t, s, `{"type":"echo"}`)
}

// lockJobs runs stmt in a transaction on the stack's first shard and returns
// the transaction, holding the lock stmt took; the test's end rolls it back.
func lockJobs(t *testing.T, s *stacktest.Stack, stmt string) *sql.Tx {
	t.Helper()
	db, err := sql.Open("postgres", s.DatabaseURLs[0])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback() })
	if _, err := tx.Exec(stmt); err != nil {
		t.Fatal(err)
	}
	return tx
}

// lockWaiters is the number of statements waiting for a lock on the jobs
// table of tx's shard.
func lockWaiters(t *testing.T, tx *sql.Tx) int {
	t.Helper()
	var n int
	if err := tx.QueryRow(`SELECT count(*) FROM pg_locks WHERE relation = 'jobs'::regclass AND NOT granted`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// inGroup is the number of single submits in the step's group.
func inGroup(t *testing.T, s *stacktest.Stack, step string) float64 {
	t.Helper()
	v, _ := metric(t, s, "warren_api_group_submits_in_progress", map[string]string{"step": step})
	return v
}

// payloadN reads the "n" of a test payload.
func payloadN(t *testing.T, p job.JSON) int {
	t.Helper()
	var v struct{ N int }
	if err := json.Unmarshal(p, &v); err != nil {
		t.Fatalf("payload %s: %v", p, err)
	}
	return v.N
}

// A shard whose statement does not come back (its table locked here) holds
// only the submits in that statement: those queued behind it go on to the
// next shard once they have waited the Committer's patience (2 s), are
// answered while the shard is still stuck, and are counted by shard and
// reason.
func TestSubmitsLeaveAShardThatDoesNotAnswer(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 2})
	tx := lockJobs(t, s, `LOCK TABLE jobs IN EXCLUSIVE MODE`) // shard 0
	const n = 40
	answers := make([]response, n)
	var answered atomic.Int64
	for i := range n {
		ch := async(t, "POST", s.URL+"/v1/jobs", stacktest.Token, fmt.Sprintf(`{"type":"echo","payload":{"n":%d}}`, i))
		go func() {
			answers[i] = <-ch
			answered.Add(1)
		}()
	}
	rerouted := func() float64 {
		v, _ := metric(t, s, "warren_api_submits_rerouted_total", map[string]string{"shard": "0", "reason": "not_answering"})
		return v
	}
	// While shard 0 is stuck: every submit is answered but those in its
	// statement, and some were sent on.
	stacktest.Eventually(t, 30*time.Second, "every submit answered but those in shard 0's statement", func() bool {
		stuck := inGroup(t, s, "insert")
		return stuck >= 1 && int(answered.Load())+int(stuck) == n && rerouted() >= 1
	})
	moved := rerouted()
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	stacktest.Eventually(t, time.Minute, "every submit answered", func() bool { return answered.Load() == n })
	onShard := map[int]int{}
	for i, r := range answers {
		j := decodeJob(t, r, http.StatusAccepted)
		if payloadN(t, j.Payload) != i {
			t.Fatalf("submit %d was answered with another submit's job", i)
		}
		onShard[j.ID.Shard()]++
	}
	jobs, _, err := s.Store.List(context.Background(), store.ListQuery{Tenant: "default", Limit: 500})
	if err != nil || len(jobs) != n {
		t.Fatalf("%d jobs stored (%v), want exactly %d", len(jobs), err, n)
	}
	if float64(onShard[1]) < moved {
		t.Fatalf("%v submits counted as sent on from shard 0, but only %d jobs are on shard 1", moved, onShard[1])
	}
	t.Logf("%v submits sent on from shard 0; jobs by shard: %v", moved, onShard)
}
