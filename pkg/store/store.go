// Package store keeps Warren's jobs in sharded Postgres. Each shard is a
// database; a job id names its shard, so reading a job touches one shard.
// Postgres holds the state machine: every transition is one conditional
// UPDATE, so a transition happens at most once however many workers race.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq" // registers the "postgres" driver

	"github.com/warrenhq/warren/pkg/job"
)

// Sentinel errors.
var (
	// ErrNotFound: no such job (for this tenant).
	ErrNotFound = errors.New("job not found")
	// ErrConflict: the job is not in the state the transition needs.
	ErrConflict = errors.New("job state conflict")
	// ErrBadShard: an id names a shard this store does not have.
	ErrBadShard = errors.New("no such shard")
	// ErrNotServed: the job is queued, but for a tenant the claiming worker
	// does not serve; another worker may claim it.
	ErrNotServed = errors.New("job of a tenant this worker does not serve")
)

// StateError reports a transition refused because of the job's current state.
type StateError struct {
	ID    job.ID
	State job.State
}

func (e *StateError) Error() string {
	return fmt.Sprintf("job %s is %s", e.ID, e.State)
}

// Unwrap makes errors.Is(err, ErrConflict) hold.
func (e *StateError) Unwrap() error { return ErrConflict }

// Config configures a Store.
type Config struct {
	// URLs lists the shards in order; a shard's number is its index.
	URLs []string
	// MaxConns bounds the connections to each shard (default 16).
	MaxConns int
}

// Store is a set of Postgres shards holding jobs.
type Store struct {
	shards []*sqlx.DB
	urls   []string
	next   atomic.Uint64
	stmts  []stmtCache // per shard, see prepared
}

// Open returns a Store over the shards in cfg. It checks the URLs but does not
// connect: a shard that is down at start is reported by Ping, not fatal.
func Open(cfg Config) (*Store, error) {
	if len(cfg.URLs) == 0 {
		return nil, errors.New("store: no database URLs")
	}
	if len(cfg.URLs) > job.MaxShards {
		return nil, fmt.Errorf("store: %d shards, at most %d", len(cfg.URLs), job.MaxShards)
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 16
	}
	s := &Store{urls: cfg.URLs}
	for i, u := range cfg.URLs {
		if err := checkURL(u); err != nil {
			s.Close()
			return nil, fmt.Errorf("store: shard %d: %w", i, err)
		}
		connector, err := newConnector(u)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("store: shard %d: %w", i, err)
		}
		db := sqlx.NewDb(sql.OpenDB(connector), "postgres")
		db.SetMaxOpenConns(cfg.MaxConns)
		db.SetMaxIdleConns(cfg.MaxConns)
		db.SetConnMaxIdleTime(5 * time.Minute)
		s.shards = append(s.shards, db)
	}
	s.stmts = make([]stmtCache, len(s.shards))
	return s, nil
}

func checkURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("bad URL %s: %w", Redact(raw), err)
	}
	if u.Scheme != "postgres" && u.Scheme != "postgresql" {
		return fmt.Errorf("bad URL %s: scheme must be postgres://", Redact(raw))
	}
	if u.Hostname() == "" || strings.Trim(u.Path, "/") == "" {
		return fmt.Errorf("bad URL %s: needs a host and a database name", Redact(raw))
	}
	return nil
}

// Redact returns a URL with its password replaced, for logs and errors.
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		if err != nil {
			return "(unparseable URL)"
		}
		return raw
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}

// Close closes every shard's pool.
func (s *Store) Close() {
	for _, db := range s.shards {
		_ = db.Close()
	}
}

// Shards returns the number of shards.
func (s *Store) Shards() int { return len(s.shards) }

// NextShard picks the shard for a new job, round robin.
func (s *Store) NextShard() int {
	return int(s.next.Add(1) % uint64(len(s.shards)))
}

// Ping checks every shard, all at once, and returns one error per shard (nil
// when it answers) by the time ctx ends: a stalled shard is reported down
// and cannot make the others look down too.
func (s *Store) Ping(ctx context.Context) []error {
	_, failed := onShards(ctx, s.allShards(), "ping", func(n int) ([]struct{}, error) {
		return nil, s.shards[n].PingContext(ctx)
	})
	errs := make([]error, len(s.shards))
	for _, err := range failed {
		var se *ShardError
		if errors.As(err, &se) {
			errs[se.Shard] = err
		}
	}
	return errs
}

func (s *Store) shard(id job.ID) (*sqlx.DB, error) {
	n := id.Shard()
	if n >= len(s.shards) {
		return nil, fmt.Errorf("job %s: %w %d", id, ErrBadShard, n)
	}
	return s.shards[n], nil
}

const columns = `id, tenant, type, queue, priority, state, attempt, max_attempts, timeout_ms,
	payload, result, error, progress, created_at, scheduled_at, started_at, finished_at,
	callback_url, callback_state, callback_attempts, idempotency_key, request_hash`

// Insert stores new jobs, one statement per shard. The jobs' ids choose their
// shards. Jobs on one shard are committed together; shards commit separately.
func (s *Store) Insert(ctx context.Context, jobs ...*job.Job) error {
	byShard := make(map[int][]*job.Job)
	for _, j := range jobs {
		if _, err := s.shard(j.ID); err != nil {
			return fmt.Errorf("insert: %w", err)
		}
		byShard[j.ID.Shard()] = append(byShard[j.ID.Shard()], j)
	}
	for n, js := range byShard {
		_, err := s.shards[n].NamedExecContext(awaitAnswer(ctx), `INSERT INTO jobs (`+columns+`) VALUES (
			:id, :tenant, :type, :queue, :priority, :state, :attempt, :max_attempts, :timeout_ms,
			:payload, :result, :error, :progress, :created_at, :scheduled_at, :started_at, :finished_at,
			:callback_url, :callback_state, :callback_attempts, :idempotency_key, :request_hash)`, js)
		if err != nil {
			return fmt.Errorf("insert %d jobs on shard %d: %w", len(js), n, err)
		}
	}
	return nil
}

// Get returns the tenant's job with this id, or ErrNotFound.
func (s *Store) Get(ctx context.Context, tenant string, id job.ID) (*job.Job, error) {
	db, err := s.shard(id)
	if err != nil {
		return nil, ErrNotFound
	}
	var j job.Job
	err = db.GetContext(ctx, &j, `SELECT `+columns+` FROM jobs WHERE id = $1 AND tenant = $2`, id, tenant)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get job %s: %w", id, err)
	}
	return &j, nil
}

// Claim moves a queued job to running for one attempt held by workerID until
// the lease runs out. It succeeds once per attempt: a second claim, or a claim
// of a job that is not queued, returns a *StateError. It is ClaimBatch for
// one job.
func (s *Store) Claim(ctx context.Context, id job.ID, workerID string, lease time.Duration) (*job.Job, error) {
	r := s.ClaimBatch(ctx, []job.ID{id}, workerID, lease, nil)[0]
	return r.Job, r.Err
}

// Complete records the success of a running attempt. A worker whose attempt
// is no longer the current one (the job was reaped, cancelled or finished)
// gets a *StateError and changes nothing. It is CompleteBatch for one job.
func (s *Store) Complete(ctx context.Context, id job.ID, attempt int, result job.JSON) (*job.Job, error) {
	r := s.CompleteBatch(ctx, []Completion{{ID: id, Attempt: attempt, Result: result}})[0]
	return r.Job, r.Err
}

// Fail records a failed attempt. The job goes to retrying at retryAt, or to
// dead when final is set or its attempts are used up.
func (s *Store) Fail(ctx context.Context, id job.ID, attempt int, reason string, retryAt time.Time, final bool) (*job.Job, error) {
	return s.finish(ctx, id, attempt, `
		state = CASE WHEN $4 OR attempt >= max_attempts THEN 'dead' ELSE 'retrying' END,
		error = $3,
		scheduled_at = CASE WHEN $4 OR attempt >= max_attempts THEN scheduled_at ELSE $5 END,
		finished_at = CASE WHEN $4 OR attempt >= max_attempts THEN now() END`,
		reason, final, retryAt)
}

// Release hands a running attempt back without counting it: the job is queued
// again for another worker (used by graceful shutdown).
func (s *Store) Release(ctx context.Context, id job.ID, attempt int) (*job.Job, error) {
	return s.finish(ctx, id, attempt, `state = 'queued', attempt = attempt - 1, started_at = NULL`)
}

// runningAttempt selects the job $1 while attempt $2 runs. The state is
// compared under the "C" collation, the same test for equality, so that it
// does not match the predicate of the partial index on running jobs
// (jobs_lease): with statistics taken while few jobs ran, the planner would
// rather scan that index, and all the running jobs in it, than look the id up
// by primary key.
const runningAttempt = `WHERE id = $1 AND attempt = $2 AND state = 'running' COLLATE "C"`

// finish applies a transition out of running for the given attempt.
func (s *Store) finish(ctx context.Context, id job.ID, attempt int, set string, args ...any) (*job.Job, error) {
	db, err := s.shard(id)
	if err != nil {
		return nil, err
	}
	var j job.Job
	err = db.GetContext(ctx, &j, `UPDATE jobs SET `+set+`, worker_id = NULL, lease_until = NULL
		`+runningAttempt+`
		RETURNING `+columns, append([]any{id, attempt}, args...)...)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, s.refusal(ctx, db, id)
	}
	if err != nil {
		return nil, fmt.Errorf("update job %s: %w", id, err)
	}
	return &j, nil
}

// refusal explains why a conditional UPDATE matched no row.
func (s *Store) refusal(ctx context.Context, db *sqlx.DB, id job.ID) error {
	var st job.State
	err := db.GetContext(ctx, &st, `SELECT state FROM jobs WHERE id = $1`, id)
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("read state of job %s: %w", id, err)
	}
	return &StateError{ID: id, State: st}
}

func nullJSON(b job.JSON) any {
	if len(b) == 0 {
		return nil
	}
	return []byte(b)
}

// Snooze puts a running attempt back to scheduled at the given time without
// counting it.
func (s *Store) Snooze(ctx context.Context, id job.ID, attempt int, at time.Time) (*job.Job, error) {
	return s.finish(ctx, id, attempt, `state = 'scheduled', attempt = attempt - 1, started_at = NULL, scheduled_at = $3`, at)
}
