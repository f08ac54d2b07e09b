package store

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/warrenhq/warren/pkg/job"
)

// InsertBatch stores new jobs with one INSERT statement per shard, the shards
// in parallel, and returns one error per shard (indexed by shard number; nil
// for a shard that committed or had no jobs).
//
// What is atomic: the jobs of one shard are one statement, so they commit
// together or not at all; shards commit independently, so when a shard
// fails only the jobs whose ids name it are missing. A job whose id names a
// shard this store lacks fails that shard's entry with ErrBadShard.
//
// Only the columns of a new job are written: id, tenant, type, queue,
// priority, state, attempt, max_attempts, timeout_ms, payload, created_at,
// scheduled_at, callback_url, idempotency_key and request_hash.
func (s *Store) InsertBatch(ctx context.Context, jobs []*job.Job) []error {
	n := len(s.shards)
	for _, j := range jobs {
		n = max(n, j.ID.Shard()+1)
	}
	errs := make([]error, n)
	byShard := make(map[int][]*job.Job)
	for _, j := range jobs {
		byShard[j.ID.Shard()] = append(byShard[j.ID.Shard()], j)
	}
	var wg sync.WaitGroup
	for shard, js := range byShard {
		if shard >= len(s.shards) {
			errs[shard] = fmt.Errorf("insert %d jobs: %w %d", len(js), ErrBadShard, shard)
			continue
		}
		wg.Go(func() {
			if err := s.insertNewJobs(awaitAnswer(ctx), shard, js); err != nil {
				errs[shard] = &ShardError{Shard: shard, Err: fmt.Errorf("insert %d jobs: %w", len(js), err)}
			}
		})
	}
	wg.Wait()
	return errs
}

// InsertIdempotent stores a new job that carries an idempotency key, unless
// the tenant already has a job with that key, on the job's shard or on a
// shard the key was routed to before shards were appended. It returns the
// job now stored under the key (the earliest, should there be several) and
// whether this call created it. The caller compares RequestHash to tell a
// replay from a different request.
//
// Routing: the caller puts j on the key's shard under the current shard
// count N (IdempotencyShard). A key stored earlier, when there were k < N
// shards, lives on its shard under k; shards are only ever appended, so
// those are the shards hash mod k, k = 1…N-1 (keyShards). When any of them
// differs from j's shard, they are read in parallel, with j's shard, before
// the INSERT: one more round trip for such keys, none for the others (with
// one shard, or two shards and a key at home on shard 0), and none for jobs
// without a key. A shard that cannot be read fails the call, since it may
// hold the key: an idempotent submit waits rather than make a second job.
//
// Concurrent calls with one key under one shard count are serialised by the
// unique index (tenant, idempotency_key) on the key's shard: exactly one
// creates the job, the others wait for its commit and then return it.
//
// The window when a shard is added: while some callers count N shards and
// others still count N-1 (a rolling restart of the api processes), a key
// whose shard differs between N-1 and N and whose requests reach both kinds
// can get two jobs, one on each shard (each kind still makes only one): an
// old caller never reads the new shard, and a new caller may read the old
// shard before an old caller's INSERT commits there. Keys whose shard did
// not move, keys stored before the window and keys sent only to callers of
// one kind are not exposed. Once every caller counts N shards no new
// duplicate can arise, and every replay gets the earliest of the two jobs.
func (s *Store) InsertIdempotent(ctx context.Context, j *job.Job) (stored *job.Job, created bool, err error) {
	if j.IdempotencyKey == nil {
		return nil, false, errors.New("insert idempotent job: no idempotency key")
	}
	db, err := s.shard(j.ID)
	if err != nil {
		return nil, false, fmt.Errorf("insert job: %w", err)
	}
	if shards := s.keyShards(j.Tenant, *j.IdempotencyKey, j.ID.Shard()); len(shards) > 1 {
		found, err := s.findByKey(ctx, j.Tenant, *j.IdempotencyKey, shards)
		if err != nil {
			return nil, false, fmt.Errorf("insert job %s: %w", j.ID, err)
		}
		if found != nil {
			return found, false, nil
		}
	}
	// A row that wins the race and is then deleted (retention) between our
	// INSERT and SELECT is vanishingly rare; a second round settles it.
	for range 2 {
		rows, err := newJobRowsJSON([]*job.Job{j})
		if err != nil {
			return nil, false, err
		}
		var id job.ID
		err = db.GetContext(awaitAnswer(ctx), &id, `INSERT INTO jobs (`+newJobColumns+`)
			SELECT `+newJobColumns+` FROM jsonb_to_recordset($1::jsonb) AS r(`+newJobRecord+`)
			ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
			RETURNING id`, rows)
		if err == nil {
			return j, true, nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return nil, false, &ShardError{Shard: j.ID.Shard(), Err: fmt.Errorf("insert job %s: %w", j.ID, err)}
		}
		var got job.Job
		err = db.GetContext(ctx, &got, byKeyQuery, j.Tenant, *j.IdempotencyKey)
		if err == nil {
			return &got, false, nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return nil, false, &ShardError{Shard: j.ID.Shard(), Err: fmt.Errorf("read job by idempotency key: %w", err)}
		}
	}
	return nil, false, fmt.Errorf("insert job %s: idempotency key conflict did not settle", j.ID)
}

// byKeyQuery reads tenant $1's job with the idempotency key $2.
const byKeyQuery = `SELECT ` + columns + ` FROM jobs WHERE tenant = $1 AND idempotency_key = $2`

// keyShards returns the shards that may hold tenant's key: home (where the
// new job goes) first, then the key's shard under every smaller shard
// count, each once.
func (s *Store) keyShards(tenant, key string, home int) []int {
	h := keyHash(tenant, key)
	shards := []int{home}
	for k := 1; k < len(s.shards); k++ {
		if n := int(h % uint64(k)); !slices.Contains(shards, n) {
			shards = append(shards, n)
		}
	}
	return shards
}

// findByKey reads tenant's job with the idempotency key on each of shards,
// in parallel, and returns the earliest found (ids sort by creation time),
// or nil when none has it. A shard that fails to answer fails the call
// unless another shard has the job.
func (s *Store) findByKey(ctx context.Context, tenant, key string, shards []int) (*job.Job, error) {
	found, errs := onShards(ctx, shards, "read job by idempotency key", func(n int) ([]*job.Job, error) {
		var j job.Job
		err := s.shards[n].GetContext(ctx, &j, byKeyQuery, tenant, key)
		switch {
		case err == nil:
			return []*job.Job{&j}, nil
		case errors.Is(err, sql.ErrNoRows):
			return nil, nil
		}
		return nil, err
	})
	var first *job.Job
	for _, j := range found {
		if j != nil && (first == nil || bytes.Compare(j.ID[:], first.ID[:]) < 0) {
			first = j
		}
	}
	if first != nil {
		return first, nil
	}
	return nil, errors.Join(errs...)
}

// The columns of a new job, and their types for jsonb_to_recordset.
const (
	newJobColumns = `id, tenant, type, queue, priority, state, attempt, max_attempts, timeout_ms,
		payload, created_at, scheduled_at, callback_url, idempotency_key, request_hash`
	newJobRecord = `id uuid, tenant text, type text, queue text, priority smallint, state text,
		attempt integer, max_attempts integer, timeout_ms bigint, payload jsonb,
		created_at timestamptz, scheduled_at timestamptz, callback_url text,
		idempotency_key text, request_hash bytea`
)

// insertNewJobs inserts jobs on one shard in one statement. The rows travel as
// one jsonb array parameter, unpacked by jsonb_to_recordset: the statement
// and its parameter count are the same for 1 job or 1,000.
func (s *Store) insertNewJobs(ctx context.Context, shard int, jobs []*job.Job) error {
	rows, err := newJobRowsJSON(jobs)
	if err != nil {
		return err
	}
	_, err = s.shards[shard].ExecContext(ctx, insertNewJobsSQL, rows)
	return err
}

// newJobRow is a new job as jsonb_to_recordset reads it.
type newJobRow struct {
	ID             string          `json:"id"`
	Tenant         string          `json:"tenant"`
	Type           string          `json:"type"`
	Queue          string          `json:"queue"`
	Priority       int             `json:"priority"`
	State          job.State       `json:"state"`
	Attempt        int             `json:"attempt"`
	MaxAttempts    int             `json:"max_attempts"`
	TimeoutMS      int64           `json:"timeout_ms"`
	Payload        json.RawMessage `json:"payload"`
	CreatedAt      time.Time       `json:"created_at"`
	ScheduledAt    *time.Time      `json:"scheduled_at"`
	CallbackURL    *string         `json:"callback_url"`
	IdempotencyKey *string         `json:"idempotency_key"`
	RequestHash    *string         `json:"request_hash"` // bytea hex input: \x…
}

func newJobRowsJSON(jobs []*job.Job) ([]byte, error) {
	rows := make([]newJobRow, len(jobs))
	for i, j := range jobs {
		id, _ := j.ID.Value() // never fails
		payload := json.RawMessage(j.Payload)
		if len(payload) == 0 || string(payload) == "null" {
			payload = json.RawMessage(`{}`) // a jsonb null would read back as SQL NULL
		}
		rows[i] = newJobRow{
			ID: id.(string), Tenant: j.Tenant, Type: j.Type, Queue: j.Queue, Priority: j.Priority,
			State: j.State, Attempt: j.Attempt, MaxAttempts: j.MaxAttempts, TimeoutMS: j.TimeoutMS,
			Payload: payload, CreatedAt: j.CreatedAt, ScheduledAt: j.ScheduledAt,
			CallbackURL: j.CallbackURL, IdempotencyKey: j.IdempotencyKey,
		}
		if j.RequestHash != nil {
			h := `\x` + hex.EncodeToString(j.RequestHash)
			rows[i].RequestHash = &h
		}
	}
	b, err := json.Marshal(rows)
	if err != nil {
		return nil, fmt.Errorf("encode jobs: %w", err) // a payload that is not valid JSON
	}
	return b, nil
}

// InsertBatchRouted is InsertBatch that routes around shards that cannot be
// dialled, and returns one error per job, in order (nil for a job that
// committed). The jobs of a shard whose connection failed before anything
// was sent get fresh ids on the next shard and go in that shard's next
// statement; a shard that failed in any other way may have committed, so its
// jobs are never repeated elsewhere and carry its error. A job's id names
// the shard that holds it.
func (s *Store) InsertBatchRouted(ctx context.Context, jobs []*job.Job) []error {
	errs := make([]error, len(jobs))
	pending := make([]int, len(jobs)) // indexes into jobs still to insert
	for i := range jobs {
		pending[i] = i
	}
	for round := 0; len(pending) > 0; round++ {
		batch := make([]*job.Job, len(pending))
		for k, i := range pending {
			batch[k] = jobs[i]
		}
		shardErrs := s.InsertBatch(ctx, batch)
		var again []int
		for _, i := range pending {
			j := jobs[i]
			err := shardErrs[j.ID.Shard()]
			errs[i] = err
			if err != nil && unreachable(err) && round+1 < len(s.shards) && ctx.Err() == nil {
				j.ID = job.NewID(j.CreatedAt, (j.ID.Shard()+1)%len(s.shards))
				again = append(again, i)
			}
		}
		pending = again
	}
	return errs
}
