package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/warrenhq/warren/pkg/cache"
	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/store"
)

// cacheTimeout bounds the Redis calls that follow a committed transition.
const cacheTimeout = 2 * time.Second

// cancel serves POST /v1/jobs/{id}/cancel: any non-terminal job becomes
// cancelled. Then the job is cached, the Cancel event tells the worker
// running it (if any) to cancel its handler's context, and the Done event
// wakes the requests waiting for it. Redis being down delays neither the
// answer nor the state change: the worker's attempt is fenced in Postgres.
func (s *Server) cancel(w http.ResponseWriter, r *http.Request, tenant string) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	j, err := s.store.Cancel(r.Context(), tenant, id)
	if err != nil {
		s.transitionFailed(w, id, err, "cancelled", "only scheduled, queued, running or retrying jobs can be cancelled")
		return
	}
	if s.cache != nil {
		ctx, cancel := detached(r, cacheTimeout)
		defer cancel()
		if err := s.cache.PutJob(ctx, j); err != nil {
			s.log.Warn("cache cancelled job", "job_id", id.String(), "error", err)
		}
		for _, e := range []cache.Event{cache.Cancel, cache.Done} {
			if err := s.cache.Publish(ctx, e, id); err != nil {
				s.log.Warn("announce cancelled job", "job_id", id.String(), "event", string(e), "error", err)
			}
		}
	}
	writeJSON(w, http.StatusOK, j)
}

// retry serves POST /v1/jobs/{id}/retry: a dead or cancelled job is queued
// again with its attempts reset, and published.
func (s *Server) retry(w http.ResponseWriter, r *http.Request, tenant string) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	// The cache holds the finished job: drop it before and after the change,
	// so that no read serves the old state once the retry is answered.
	s.forget(r, id)
	j, err := s.store.Retry(r.Context(), tenant, id)
	if err != nil {
		s.transitionFailed(w, id, err, "retried", "only dead or cancelled jobs can be retried")
		return
	}
	s.forget(r, id)
	_ = s.publish(r, j)
	writeJSON(w, http.StatusOK, j)
}

func (s *Server) forget(r *http.Request, id job.ID) {
	if s.cache == nil {
		return
	}
	ctx, cancel := detached(r, cacheTimeout)
	defer cancel()
	if err := s.cache.ForgetJob(ctx, id); err != nil {
		s.log.Warn("drop cached job", "job_id", id.String(), "error", err)
	}
}

// transitionFailed answers a refused or failed cancel or retry.
func (s *Server) transitionFailed(w http.ResponseWriter, id job.ID, err error, verb, rule string) {
	var se *store.StateError
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeProblem(w, http.StatusNotFound, fmt.Sprintf("no job %s", id))
	case errors.As(err, &se):
		writeProblem(w, http.StatusConflict, fmt.Sprintf("job %s is %s and cannot be %s: %s", id, se.State, verb, rule))
	case errors.Is(err, context.Canceled):
		writeProblem(w, http.StatusBadRequest, "the request was cancelled")
	default:
		s.log.Error("update job", "job_id", id.String(), "shard", id.Shard(), "error", err)
		unavailable(w, fmt.Sprintf("the job's shard (%d) is unavailable; retry later", id.Shard()))
	}
}
