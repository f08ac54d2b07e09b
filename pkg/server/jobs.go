package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/warrenhq/warren/pkg/broker"
	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/store"
)

// submit serves POST /v1/jobs: validate, commit, publish, answer 202 (or,
// with ?wait, 200 once the job is terminal). With an Idempotency-Key the job
// goes to the key's shard and a replay of the same request answers 200 with
// the original job, a different request under the key 409.
func (s *Server) submit(w http.ResponseWriter, r *http.Request, tenant string) {
	wait, ok := waitParam(w, r)
	if !ok {
		return
	}
	key, ok := idempotencyKey(w, r)
	if !ok {
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes)
	var req job.Request
	if err := decode(r.Body, &req); err != nil {
		decodeFailed(w, err)
		return
	}
	j, errs := s.newJob(tenant, &req)
	if errs != nil {
		writeProblem(w, http.StatusUnprocessableEntity, "the job request has invalid fields", errs...)
		return
	}
	if why := s.queueFull(j.Queue); why != "" {
		unavailable(w, why)
		return
	}
	if !s.admitRate(w, r, tenant, 1) {
		return
	}
	if key != "" {
		hash, err := requestHash(&req)
		if err != nil {
			writeProblem(w, http.StatusUnprocessableEntity, "the job request cannot be hashed: "+err.Error())
			return
		}
		j.ID = job.NewID(j.CreatedAt, s.keyShard(tenant, key))
		j.IdempotencyKey, j.RequestHash = &key, hash
		// The store also looks the key up on the shards it was routed to
		// before shards were appended, so a replay finds the job wherever
		// it went (see store.InsertIdempotent, which also says what a race
		// during a rolling restart onto a new shard count can do).
		stored, created, err := s.store.InsertIdempotent(r.Context(), j)
		if err != nil {
			shard := j.ID.Shard()
			var se *store.ShardError
			if errors.As(err, &se) {
				shard = se.Shard
			}
			s.log.Error("store job", "job_id", j.ID.String(), "shard", shard, "error", err)
			unavailable(w, fmt.Sprintf("the job could not be stored: shard %d, where its Idempotency-Key belongs or may have been stored before shards were added, failed; it was not accepted, retry later", shard))
			return
		}
		if !created {
			if !bytes.Equal(stored.RequestHash, hash) {
				writeProblem(w, http.StatusConflict, fmt.Sprintf("Idempotency-Key %q was already used for a different request (job %s); send the same request to get that job, or use a new key", key, stored.ID))
				return
			}
			s.answerJob(w, r, tenant, stored, wait, http.StatusOK)
			return
		}
	} else if err := s.commit(r.Context(), j); err != nil {
		s.log.Error("store job", "job_id", j.ID.String(), "shard", j.ID.Shard(), "error", err)
		unavailable(w, "the job could not be stored; it was not accepted, retry later")
		return
	}
	// Committed: from here on the job is accepted, whatever RabbitMQ says. A
	// job that is not published now is published by the scheduler's relay.
	s.failpoint("after-commit")
	s.metrics.submits.WithLabelValues(j.Queue, j.Type).Inc()
	if j.State == job.Queued {
		// At most the publish timeout, queued behind a stuck batch or not;
		// a client that hangs up does not withdraw the message.
		ctx, cancel := detached(r, s.cfg.PublishTimeout)
		_ = s.publishOne(ctx, j)
		cancel()
	}
	s.answerJob(w, r, tenant, j, wait, http.StatusAccepted)
}

// answerJob answers with a job just submitted (or replayed): after waiting
// up to wait for it to end, 200 if it has, else status.
func (s *Server) answerJob(w http.ResponseWriter, r *http.Request, tenant string, j *job.Job, wait time.Duration, status int) {
	w.Header().Set("Location", "/v1/jobs/"+j.ID.String())
	if wait > 0 && !j.State.Terminal() {
		if latest, err := s.awaitTerminal(r.Context(), tenant, j.ID, wait); err == nil {
			j = latest
		} else {
			s.log.Warn("wait for submitted job", "job_id", j.ID.String(), "error", err)
		}
	}
	if j.State.Terminal() {
		status = http.StatusOK
	}
	writeJSON(w, status, j)
}

// newJob validates a request and builds the job it asks for, on the next
// shard in turn.
func (s *Server) newJob(tenant string, req *job.Request) (*job.Job, []FieldError) {
	var errs []FieldError
	bad := func(field, format string, args ...any) {
		errs = append(errs, FieldError{Field: field, Detail: fmt.Sprintf(format, args...)})
	}
	now := s.now().UTC().Truncate(time.Microsecond)
	j := &job.Job{
		Tenant: tenant, Type: req.Type, Queue: req.Queue, State: job.Queued,
		MaxAttempts: s.cfg.DefaultMaxAttempts, TimeoutMS: s.cfg.DefaultTimeout.Milliseconds(),
		Payload: job.JSON(req.Payload), CreatedAt: now,
	}
	switch {
	case req.Type == "":
		bad("type", "required: the job type a worker handles, such as \"echo\"")
	case !namePattern.MatchString(req.Type):
		bad("type", "must be 1-100 letters, digits or _.:-")
	}
	if j.Queue == "" {
		j.Queue = "default"
	} else if !namePattern.MatchString(j.Queue) {
		bad("queue", "must be 1-100 letters, digits or _.:-")
	}
	if len(j.Payload) == 0 || string(j.Payload) == "null" {
		j.Payload = job.JSON("{}")
	} else if hasNUL(req.Payload) {
		bad("payload", "must not contain the character \\u0000 (Postgres jsonb cannot store it)")
	}
	if req.Priority != nil {
		if *req.Priority < 0 || *req.Priority > MaxPriority {
			bad("priority", "must be between 0 and %d (higher runs first)", MaxPriority)
		}
		j.Priority = *req.Priority
	}
	if req.MaxAttempts != nil {
		if *req.MaxAttempts < 1 || *req.MaxAttempts > 100 {
			bad("max_attempts", "must be between 1 and 100")
		}
		j.MaxAttempts = *req.MaxAttempts
	}
	if req.Timeout != "" {
		d, err := time.ParseDuration(req.Timeout)
		switch {
		case err != nil:
			bad("timeout", "%q is not a duration such as \"30s\" or \"5m\"", truncate(req.Timeout, 40))
		case d < time.Second || d > 24*time.Hour:
			bad("timeout", "must be between 1s and 24h")
		default:
			j.TimeoutMS = d.Milliseconds()
		}
	}
	var runAt time.Time
	switch {
	case req.Delay != "" && req.RunAt != nil:
		bad("delay", "give delay or run_at, not both")
	case req.Delay != "":
		d, err := time.ParseDuration(req.Delay)
		switch {
		case err != nil:
			bad("delay", "%q is not a duration such as \"10s\" or \"2h\"", truncate(req.Delay, 40))
		case d < 0:
			bad("delay", "must not be negative")
		case d > MaxDelay:
			bad("delay", "must be at most %v (366 days)", MaxDelay)
		default:
			runAt = now.Add(d)
		}
	case req.RunAt != nil:
		runAt = req.RunAt.UTC().Truncate(time.Microsecond)
		if runAt.After(now.Add(MaxDelay)) {
			bad("run_at", "must be at most 366 days ahead")
		}
		runAt = later(runAt, now) // a time in the past means now
	}
	if !runAt.IsZero() {
		j.ScheduledAt = &runAt
		if runAt.After(now) {
			j.State = job.Scheduled // the scheduler publishes it when due
		}
	}
	if req.CallbackURL != "" {
		if why := checkCallbackURL(req.CallbackURL); why != "" {
			bad("callback_url", "%s", why)
		} else {
			j.CallbackURL = &req.CallbackURL
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	j.ID = job.NewID(now, s.store.NextShard())
	return j, nil
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// checkCallbackURL says what is wrong with a callback URL, or "". Whether
// its host may be reached is decided when the callback is delivered.
func checkCallbackURL(raw string) string {
	if len(raw) > MaxCallbackURL {
		return fmt.Sprintf("must be at most %d characters", MaxCallbackURL)
	}
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return fmt.Sprintf("is not a URL: %v", err)
	case u.Scheme != "http" && u.Scheme != "https":
		return "must be an absolute http:// or https:// URL"
	case u.Host == "" || u.Hostname() == "":
		return "must name a host"
	case u.User != nil:
		return "must not carry credentials; the callback is signed instead"
	}
	return ""
}

// hasNUL reports whether a JSON value has a \u0000 in a string or key.
func hasNUL(raw json.RawMessage) bool {
	if !bytes.Contains(raw, []byte(`\u0000`)) {
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	for {
		t, err := dec.Token()
		if err != nil {
			return false
		}
		if s, ok := t.(string); ok && strings.ContainsRune(s, 0) {
			return true
		}
	}
}

// idempotencyKey reads the Idempotency-Key header: absent, or 1 to 255
// printable ASCII characters. It writes the problem and returns false when
// the header is invalid.
func idempotencyKey(w http.ResponseWriter, r *http.Request) (string, bool) {
	vs := r.Header.Values("Idempotency-Key")
	if len(vs) == 0 {
		return "", true
	}
	key := vs[0]
	var why string
	switch {
	case len(vs) > 1:
		why = "send one Idempotency-Key header, not several"
	case key == "":
		why = "Idempotency-Key is empty; send 1 to 255 printable characters, such as a UUID"
	case len(key) > MaxIdempotencyKey:
		why = fmt.Sprintf("Idempotency-Key is %d characters long; at most %d", len(key), MaxIdempotencyKey)
	case strings.IndexFunc(key, func(c rune) bool { return c < 0x20 || c > 0x7e }) >= 0:
		why = "Idempotency-Key must be printable ASCII characters"
	}
	if why != "" {
		writeProblem(w, http.StatusBadRequest, why)
		return "", false
	}
	return key, true
}

// keyShard routes an idempotency key to its shard: SHA-256 of tenant and
// key, modulo the number of shards (store.IdempotencyShard, which the
// scheduler's cron keys use too). While the shard count stays the same,
// every request with the key lands on the same shard, where the unique index
// (tenant, idempotency_key) decides; after shards are appended the store
// finds keys stored under the old count on their old shards.
func (s *Server) keyShard(tenant, key string) int {
	return s.store.IdempotencyShard(tenant, key)
}

// requestHash is the SHA-256 of the request re-marshalled canonically:
// fields in a fixed order, the payload's object keys sorted, whitespace
// dropped, run_at in UTC. Two requests that differ only in formatting hash
// the same.
func requestHash(req *job.Request) ([]byte, error) {
	c := *req
	if string(c.Payload) == "null" {
		c.Payload = nil
	}
	if len(c.Payload) > 0 {
		dec := json.NewDecoder(bytes.NewReader(c.Payload))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("payload: %w", err)
		}
		b, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("payload: %w", err)
		}
		c.Payload = b
	}
	if c.RunAt != nil {
		t := c.RunAt.UTC()
		c.RunAt = &t
	}
	b, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(b)
	return sum[:], nil
}

// publish sends the jobs' messages in one call (RabbitMQ confirms them
// together) and, once confirmed, has them marked published in Postgres by
// the background batcher (see publishMarks). A failure is logged and
// counted, not returned to the client: the jobs are committed, and the
// scheduler's relay publishes queued jobs that were not marked. The wait for
// the confirms outlives the client and is bounded by Config.PublishTimeout.
func (s *Server) publish(r *http.Request, jobs ...*job.Job) error {
	if len(jobs) == 0 {
		return nil
	}
	ctx, cancel := detached(r, s.cfg.PublishTimeout)
	defer cancel()
	return s.publishJobs(ctx, jobs)
}

// publishJobs is publish under ctx.
func (s *Server) publishJobs(ctx context.Context, jobs []*job.Job) error {
	msgs := make([]broker.Message, len(jobs))
	for i, j := range jobs {
		body, err := json.Marshal(job.Message{ID: j.ID, Type: j.Type})
		if err != nil {
			return err
		}
		msgs[i] = broker.Message{Queue: j.Queue, Priority: uint8(j.Priority), MessageID: j.ID.String(), Body: body}
	}
	if err := s.broker.Publish(ctx, msgs...); err != nil {
		s.metrics.confirms.WithLabelValues("failed").Add(float64(len(msgs)))
		s.log.Warn("publish jobs (they stay queued for the relay)", "jobs", len(msgs), "job_id", jobs[0].ID.String(), "error", err)
		return err
	}
	s.metrics.confirms.WithLabelValues("ok").Add(float64(len(msgs)))
	ids := make([]job.ID, len(jobs))
	for i, j := range jobs {
		ids[i] = j.ID
	}
	s.marks.add(ids...)
	return nil
}

// failpoint calls the test hook Config.Failpoint, if set.
func (s *Server) failpoint(name string) {
	if s.cfg.Failpoint != nil {
		s.cfg.Failpoint(name)
	}
}

// markEvery is how often confirmed publications are written to Postgres.
// Well below the relay's wait (WARREN_RELAY_AFTER, 3 s by default), so that
// marked jobs are not relayed, and long enough that most jobs are claimed
// before their mark is due: a job that is no longer queued needs none, and
// the UPDATE skips it without writing.
const markEvery = 500 * time.Millisecond

// publishMarks records in Postgres, in batches, that RabbitMQ confirmed the
// messages of jobs this api published, so that the scheduler's relay
// leaves them alone: one UPDATE per shard every markEvery for all the
// confirms gathered meanwhile, not one round trip per request. Marking is
// an optimisation, not a guarantee: a mark that is lost (the process dies,
// a shard does not answer) costs one duplicate message from the relay,
// which the worker's claim drops. Close writes what is pending.
type publishMarks struct {
	st  *store.Store
	log *slog.Logger

	start sync.Once
	stop  chan struct{}
	done  chan struct{}

	mu     sync.Mutex
	ids    []job.ID
	closed bool
}

func newPublishMarks(st *store.Store, log *slog.Logger) *publishMarks {
	return &publishMarks{st: st, log: log, stop: make(chan struct{}), done: make(chan struct{})}
}

// add queues ids to be marked; the first call starts the flusher. After
// close, the ids are marked at once.
func (m *publishMarks) add(ids ...job.ID) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		m.write(ids) // a request finishing during shutdown
		return
	}
	m.ids = append(m.ids, ids...)
	m.mu.Unlock()
	m.start.Do(func() { go m.run() })
}

func (m *publishMarks) run() {
	defer close(m.done)
	t := time.NewTicker(markEvery)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			m.flush()
			return
		case <-t.C:
			m.flush()
		}
	}
}

func (m *publishMarks) flush() {
	m.mu.Lock()
	ids := m.ids
	m.ids = nil
	m.mu.Unlock()
	m.write(ids)
}

func (m *publishMarks) write(ids []job.ID) {
	if len(ids) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.st.MarkPublished(ctx, ids); err != nil {
		m.log.Warn("mark published jobs (the relay publishes them again, harmlessly)", "jobs", len(ids), "error", err)
	}
}

// close writes the pending marks and stops the flusher. It is safe to call
// more than once.
func (m *publishMarks) close() {
	m.mu.Lock()
	already := m.closed
	m.closed = true
	m.mu.Unlock()
	if already {
		return
	}
	started := true
	m.start.Do(func() { started = false })
	if !started {
		m.flush() // an add that raced with close
		return
	}
	close(m.stop)
	<-m.done
}

// get serves GET /v1/jobs/{id}, with ?wait holding the request until the job
// is terminal or the wait ends.
func (s *Server) get(w http.ResponseWriter, r *http.Request, tenant string) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	wait, ok := waitParam(w, r)
	if !ok {
		return
	}
	var j *job.Job
	var err error
	if wait > 0 {
		j, err = s.awaitTerminal(r.Context(), tenant, id, wait)
	} else {
		j, err = s.read(r.Context(), tenant, id)
	}
	if err != nil {
		s.jobReadFailed(w, id, err)
		return
	}
	writeJSON(w, http.StatusOK, j)
}

// pathID parses the {id} of the path, or writes the problem.
func pathID(w http.ResponseWriter, r *http.Request) (job.ID, bool) {
	id, err := job.ParseID(r.PathValue("id"))
	if err != nil {
		writeProblem(w, http.StatusBadRequest, fmt.Sprintf("%q is not a job id (26 characters, as returned by POST /v1/jobs)", truncate(r.PathValue("id"), 40)))
		return job.ID{}, false
	}
	return id, true
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
