package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/warrenhq/warren/pkg/job"
)

// Result is the outcome of one item of a batch: the job as the transition
// left it, or the item's own error (a *StateError, ErrNotFound, ErrBadShard,
// or the error of the statement that carried it).
type Result struct {
	Job *job.Job
	Err error
}

// Completion is the success of a running attempt, for CompleteBatch.
type Completion struct {
	ID      job.ID
	Attempt int
	// Result is the handler's result, any JSON value; empty stores NULL.
	Result job.JSON
}

// ClaimBatch claims many jobs at once, one statement per shard: for each id
// it does what Claim does, with the same outcome. A job that is not queued
// gets a *StateError, a missing one ErrNotFound, and an id that appears twice
// is claimed once (the later copy gets a *StateError). With tenants, only
// those tenants' jobs are claimed: a queued job of another tenant is left
// queued and gets ErrNotServed. Results are in the order of ids; a shard
// that fails gives its items the error.
func (s *Store) ClaimBatch(ctx context.Context, ids []job.ID, workerID string, lease time.Duration, tenants []string) []Result {
	out := make([]Result, len(ids))
	for n, idx := range s.byShard(ids, out) {
		s.claimShard(ctx, n, ids, idx, workerID, lease, tenants, out)
	}
	return out
}

// claimShard claims the jobs ids[idx...] of shard n into out. Rows are locked
// in id order, so that batches racing on the same jobs queue up instead of
// deadlocking.
func (s *Store) claimShard(ctx context.Context, n int, ids []job.ID, idx []int, workerID string, lease time.Duration, tenants []string, out []Result) {
	db := s.shards[n]
	keys := uniqueKeys(ids, idx)
	var got []*job.Job
	err := selectRetrying(ctx, s, n, &got, claimBatchQuery, pq.Array(keys), workerID, lease.Milliseconds(), pq.Array(tenants))
	if err != nil {
		fail(out, idx, &ShardError{Shard: n, Err: fmt.Errorf("claim %d jobs: %w", len(keys), err)})
		return
	}
	s.answer(ctx, db, n, ids, nil, idx, got, tenants, out)
}

// CompleteBatch records the success of many running attempts at once, one
// statement per shard: for each item it does what Complete does, with the
// same fencing. An attempt that is no longer the job's running one gets a
// *StateError (or ErrNotFound) and changes nothing; so does a second copy of
// an item (same id and attempt). Results are in the order of items; a shard that fails gives its
// items the error, and a result that is not valid JSON fails its item alone.
func (s *Store) CompleteBatch(ctx context.Context, items []Completion) []Result {
	out := make([]Result, len(items))
	ids := make([]job.ID, len(items))
	attempts := make([]int, len(items))
	for i, c := range items {
		ids[i], attempts[i] = c.ID, c.Attempt
	}
	for n, idx := range s.byShard(ids, out) {
		s.completeShard(ctx, n, items, ids, attempts, idx, out)
	}
	return out
}

// completeShard completes the items[idx...] of shard n into out, locking
// rows in id order as claimShard does.
func (s *Store) completeShard(ctx context.Context, n int, items []Completion, ids []job.ID, attempts []int, idx []int, out []Result) {
	doc, sent, count := completionDoc(items, idx, out)
	if len(sent) == 0 {
		return
	}
	var got []*job.Job
	err := selectRetrying(ctx, s, n, &got, completeBatchQuery, doc)
	if err != nil {
		fail(out, sent, &ShardError{Shard: n, Err: fmt.Errorf("complete %d jobs: %w", count, err)})
		return
	}
	s.answer(ctx, s.shards[n], n, ids, attempts, sent, got, nil, out)
}

// completionDoc encodes the items[idx...] as the one JSON array the
// completion statements take: [{"id":…,"attempt":…,"result":…}]. A result
// too malformed to embed fails its own item in out, not the batch; a second
// copy of an item (same id and attempt) is sent once, and the statement's
// answer finds the job moved on for it. It returns the items sent (the
// indexes to answer) and how many distinct ones the array holds.
func completionDoc(items []Completion, idx []int, out []Result) (doc []byte, sent []int, count int) {
	var b bytes.Buffer
	b.WriteByte('[')
	seen := make(map[Held]bool, len(idx))
	sent = idx[:0:0]
	for _, i := range idx {
		c := items[i]
		if len(c.Result) > 0 && !json.Valid(c.Result) {
			out[i].Err = fmt.Errorf("complete job %s: the result is not valid JSON", c.ID)
			continue
		}
		sent = append(sent, i)
		k := Held{ID: c.ID, Attempt: c.Attempt}
		if seen[k] {
			continue
		}
		seen[k] = true
		if b.Len() > 1 {
			b.WriteByte(',')
		}
		v, _ := c.ID.Value()
		b.WriteString(`{"id":"`)
		b.WriteString(v.(string))
		b.WriteString(`","attempt":`)
		b.WriteString(strconv.Itoa(c.Attempt))
		if len(c.Result) > 0 {
			b.WriteString(`,"result":`)
			b.Write(c.Result)
		}
		b.WriteByte('}')
	}
	b.WriteByte(']')
	return b.Bytes(), sent, len(seen)
}

// The batch statements find their rows by primary key alone and test the
// state on the locked row, never in the WHERE clause of the jobs scan. A
// state there matches the predicate of a partial index (jobs_queued_since,
// jobs_lease, jobs_unpublished), and with statistics taken while the queue
// was empty the planner prefers scanning that index to a few primary-key
// lookups; under load the index holds the whole backlog and its dead
// entries, and every claim scanned them all.

// claimBatchQuery claims the queued jobs among the ids $1 for worker $2
// with a lease of $3 ms; only jobs of the tenants $4 unless it is empty.
var claimBatchQuery = `WITH ` + claimCTEs("$1", "$2", "$3", "$4") + `
	SELECT ` + columns + ` FROM claimed`

// completeBatchQuery records the successes in $1, a JSON array of
// {"id", "attempt", "result"}, of attempts that are still running.
var completeBatchQuery = `WITH ` + completeCTEs("$1") + `
	SELECT ` + columns + ` FROM done`

// claimCTEs is the claim as WITH queries ending in "claimed", the claimed
// rows with op 'claimed': the queued jobs among the ids in parameter ids,
// for worker, with a lease of lease ms; only jobs of the tenants in
// parameter tenants unless it is empty. Rows are locked in id order, so
// that batches racing on the same jobs queue up instead of deadlocking.
func claimCTEs(ids, worker, lease, tenants string) string {
	return `claim_locked AS (
		SELECT id, state, tenant FROM jobs WHERE id = ANY(` + ids + `::uuid[])
		ORDER BY id FOR UPDATE),
	claimed AS (
		UPDATE jobs SET state = 'running', attempt = attempt + 1,
			started_at = now(), finished_at = NULL, worker_id = ` + worker + `,
			lease_until = now() + ` + lease + ` * interval '1 millisecond'
		FROM claim_locked
		WHERE jobs.id = claim_locked.id AND claim_locked.state = 'queued'
			AND (coalesce(cardinality(` + tenants + `::text[]), 0) = 0 OR claim_locked.tenant = ANY(` + tenants + `::text[]))
		RETURNING 'claimed' AS op, ` + qualified + `)`
}

// completeCTEs is the completion as WITH queries ending in "done", the
// completed rows with op 'completed': the successes in parameter items, a
// JSON array of {"id", "attempt", "result"}, of attempts that are still
// running. Rows are locked in id order, as claimCTEs does.
func completeCTEs(items string) string {
	return `items AS (
		SELECT * FROM jsonb_to_recordset(` + items + `::jsonb) AS r(id uuid, attempt int, result jsonb)),
	done_locked AS (
		SELECT id, state, attempt FROM jobs WHERE id = ANY(ARRAY(SELECT id FROM items))
		ORDER BY id FOR UPDATE),
	done AS (
		UPDATE jobs SET state = 'succeeded', result = items.result, error = NULL,
			finished_at = now(), worker_id = NULL, lease_until = NULL
		FROM done_locked JOIN items ON items.id = done_locked.id AND items.attempt = done_locked.attempt
		WHERE jobs.id = done_locked.id AND done_locked.state = 'running'
		RETURNING 'completed' AS op, ` + qualified + `)`
}

// selectRetrying runs a batch statement, once more should Postgres abort it
// as a deadlock victim. The batch locks its rows in id order, but a
// statement elsewhere that locks the same rows in another order (marking
// jobs published, say) can still close a cycle; the aborted statement
// changed nothing, so running it again is safe, and better than failing a
// whole batch of claims or leaving completed jobs to their leases.
func selectRetrying[T any](ctx context.Context, s *Store, shard int, dest *[]T, query string, args ...any) error {
	err := s.selectPrepared(ctx, shard, dest, query, args...)
	var pe *pq.Error
	if errors.As(err, &pe) && pe.Code == "40P01" { // deadlock_detected
		*dest = nil
		err = s.selectPrepared(ctx, shard, dest, query, args...)
	}
	return err
}

// qualified is columns with each name qualified by the jobs table, for
// UPDATE … FROM, whose other relation may share column names.
var qualified = qualify(columns)

// byShard groups the indexes of ids by shard; ids on a shard this store does
// not have are answered at once with ErrBadShard.
func (s *Store) byShard(ids []job.ID, out []Result) map[int][]int {
	groups := make(map[int][]int)
	for i, id := range ids {
		if _, err := s.shard(id); err != nil {
			out[i].Err = err
			continue
		}
		groups[id.Shard()] = append(groups[id.Shard()], i)
	}
	return groups
}

// answer hands each item of idx its row from got: the first item with the
// row's id (and, given attempts, the attempt the row was updated for) takes
// it. Items without a row are explained by one more query; given tenants
// (a claim's), a queued job of another tenant is ErrNotServed.
func (s *Store) answer(ctx context.Context, db *sqlx.DB, n int, ids []job.ID, attempts []int, idx []int, got []*job.Job, tenants []string, out []Result) {
	rows := make(map[job.ID]*job.Job, len(got))
	for _, j := range got {
		rows[j.ID] = j
	}
	var missed []int
	for _, i := range idx {
		if j, ok := rows[ids[i]]; ok && (attempts == nil || j.Attempt == attempts[i]) {
			out[i].Job = j
			delete(rows, ids[i]) // a second copy finds the job moved on
			continue
		}
		missed = append(missed, i)
	}
	if len(missed) == 0 {
		return
	}
	var states []struct {
		ID     job.ID    `db:"id"`
		State  job.State `db:"state"`
		Tenant string    `db:"tenant"`
	}
	err := db.SelectContext(ctx, &states, `SELECT id, state, tenant FROM jobs WHERE id = ANY($1::uuid[])`,
		pq.Array(uniqueKeys(ids, missed)))
	if err != nil {
		fail(out, missed, &ShardError{Shard: n, Err: fmt.Errorf("read state of %d jobs: %w", len(missed), err)})
		return
	}
	byID := make(map[job.ID]job.State, len(states))
	for _, st := range states {
		byID[st.ID] = st.State
		if st.State == job.Queued && len(tenants) > 0 && !slices.Contains(tenants, st.Tenant) {
			byID[st.ID] = "" // queued for someone else
		}
	}
	for _, i := range missed {
		st, ok := byID[ids[i]]
		switch {
		case !ok:
			out[i].Err = ErrNotFound
		case st == "":
			out[i].Err = fmt.Errorf("claim job %s: %w", ids[i], ErrNotServed)
		default:
			out[i].Err = &StateError{ID: ids[i], State: st}
		}
	}
}

// uniqueKeys returns the distinct ids of ids[idx...] in their text form.
func uniqueKeys(ids []job.ID, idx []int) []string {
	seen := make(map[job.ID]bool, len(idx))
	keys := make([]string, 0, len(idx))
	for _, i := range idx {
		if seen[ids[i]] {
			continue
		}
		seen[ids[i]] = true
		v, _ := ids[i].Value()
		keys = append(keys, v.(string))
	}
	return keys
}

func fail(out []Result, idx []int, err error) {
	for _, i := range idx {
		out[i].Err = err
	}
}

// qualify prefixes each name of a comma-separated column list with "jobs.".
func qualify(cols string) string {
	var b bytes.Buffer
	for i, c := range bytes.Split([]byte(cols), []byte(",")) {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("jobs.")
		b.Write(bytes.TrimSpace(c))
	}
	return b.String()
}
