package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/warrenhq/warren/pkg/broker"
	"github.com/warrenhq/warren/pkg/cache"
	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/store"
)

// MaxPriority is the highest job priority; higher runs first.
const MaxPriority = 9

// newJob validates a request and builds the job it asks for.
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
	if len(j.Payload) == 0 {
		j.Payload = job.JSON("{}")
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
			bad("timeout", "%q is not a duration such as \"30s\" or \"5m\"", req.Timeout)
		case d < time.Second || d > 24*time.Hour:
			bad("timeout", "must be between 1s and 24h")
		default:
			j.TimeoutMS = d.Milliseconds()
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	j.ID = job.NewID(now, s.store.NextShard())
	return j, nil
}

func (s *Server) submit(w http.ResponseWriter, r *http.Request, tenant string) {
	r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes)
	var req job.Request
	if err := decode(r.Body, &req); err != nil {
		var de *decodeError
		errors.As(err, &de)
		writeProblem(w, de.status, de.detail)
		return
	}
	j, errs := s.newJob(tenant, &req)
	if errs != nil {
		writeProblem(w, http.StatusUnprocessableEntity, "the job request has invalid fields", errs...)
		return
	}
	if err := s.store.Insert(r.Context(), j); err != nil {
		s.log.Error("store job", "job_id", j.ID.String(), "shard", j.ID.Shard(), "error", err)
		w.Header().Set("Retry-After", "1")
		writeProblem(w, http.StatusServiceUnavailable, "the job could not be stored; it was not accepted, retry later")
		return
	}
	// Committed: from here on the job is accepted, whatever RabbitMQ says. A
	// job that is not published now is published by the scheduler's relay.
	if err := s.publish(r, j); err != nil {
		s.log.Warn("publish job (it stays queued for the relay)", "job_id", j.ID.String(), "error", err)
	}
	w.Header().Set("Location", "/v1/jobs/"+j.ID.String())
	writeJSON(w, http.StatusAccepted, j)
}

func (s *Server) publish(r *http.Request, j *job.Job) error {
	body, err := json.Marshal(job.Message{ID: j.ID, Type: j.Type})
	if err != nil {
		return err
	}
	ctx, cancel := contextWithTimeout(r, s.cfg.PublishTimeout)
	defer cancel()
	return s.broker.Publish(ctx, broker.Message{Queue: j.Queue, Priority: uint8(j.Priority), MessageID: j.ID.String(), Body: body})
}

func (s *Server) get(w http.ResponseWriter, r *http.Request, tenant string) {
	id, err := job.ParseID(r.PathValue("id"))
	if err != nil {
		writeProblem(w, http.StatusBadRequest, fmt.Sprintf("%q is not a job id (26 characters, as returned by POST /v1/jobs)", truncate(r.PathValue("id"), 40)))
		return
	}
	if s.cache != nil {
		j, err := s.cache.GetJob(r.Context(), tenant, id)
		if err == nil {
			writeJSON(w, http.StatusOK, j)
			return
		}
		if !errors.Is(err, cache.ErrMiss) {
			s.log.Debug("cache read failed; using Postgres", "job_id", id.String(), "error", err)
		}
	}
	j, err := s.store.Get(r.Context(), tenant, id)
	if errors.Is(err, store.ErrNotFound) {
		writeProblem(w, http.StatusNotFound, fmt.Sprintf("no job %s", id))
		return
	}
	if err != nil {
		s.log.Error("read job", "job_id", id.String(), "error", err)
		w.Header().Set("Retry-After", "1")
		writeProblem(w, http.StatusServiceUnavailable, "the job's shard is unavailable; retry later")
		return
	}
	writeJSON(w, http.StatusOK, j)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
