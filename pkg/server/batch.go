package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/store"
)

// batchRequest is the body of POST /v1/jobs/batch. Items are decoded one by
// one, so that a bad item is reported on its own and does not sink the rest.
type batchRequest struct {
	Jobs []json.RawMessage `json:"jobs"`
}

// BatchItem is one entry of a batch answer: the accepted job, or the problem
// that kept this item out.
type BatchItem struct {
	Index int      `json:"index"`
	Job   *job.Job `json:"job,omitempty"`
	Error *Problem `json:"error,omitempty"`
}

// submitBatch serves POST /v1/jobs/batch: up to MaxBatch jobs, each
// validated on its own; the valid ones are stored with one INSERT per shard
// and the immediately runnable ones published with one Publish call (their
// confirms awaited together). It answers 202 with one entry per item, in
// request order, whenever the batch itself is well formed.
//
// What is atomic: the accepted jobs that land on one shard commit together
// or not at all; shards commit independently. Jobs are spread over the
// shards round robin; the items of a shard that cannot even be dialled are
// routed to the next shard (nothing was sent, nothing committed). When a
// shard fails otherwise, the items placed on it carry a 503 problem ("not
// accepted, resubmit") and the others are accepted. An
// item with an error was never stored: resubmitting exactly the failed
// items creates no duplicates. Items for a queue over Config.MaxQueueDepth
// carry a 503 problem; the valid items count against the tenant's rate
// limit together, and a batch over it is refused whole with 429.
func (s *Server) submitBatch(w http.ResponseWriter, r *http.Request, tenant string) {
	if len(r.Header.Values("Idempotency-Key")) > 0 {
		writeProblem(w, http.StatusBadRequest, "Idempotency-Key is not supported on POST /v1/jobs/batch; submit jobs that need one with POST /v1/jobs")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBatchBodyBytes)
	var req batchRequest
	if err := decode(r.Body, &req); err != nil {
		decodeFailed(w, err)
		return
	}
	switch {
	case req.Jobs == nil:
		writeProblem(w, http.StatusUnprocessableEntity, "the batch has invalid fields",
			FieldError{Field: "jobs", Detail: "required: an array of 1 to 1000 job requests"})
		return
	case len(req.Jobs) == 0:
		writeProblem(w, http.StatusUnprocessableEntity, "the batch has invalid fields",
			FieldError{Field: "jobs", Detail: "is empty: send 1 to 1000 job requests"})
		return
	case len(req.Jobs) > MaxBatch:
		writeProblem(w, http.StatusUnprocessableEntity, "the batch has invalid fields",
			FieldError{Field: "jobs", Detail: fmt.Sprintf("has %d job requests, at most %d per batch: split it", len(req.Jobs), MaxBatch)})
		return
	}

	items := make([]BatchItem, len(req.Jobs))
	var valid []*job.Job
	var where []int // items index of each valid job
	for i, raw := range req.Jobs {
		items[i].Index = i
		if int64(len(raw)) > s.cfg.MaxBodyBytes {
			items[i].Error = newProblem(http.StatusRequestEntityTooLarge, fmt.Sprintf("the job request is %d bytes; at most %d", len(raw), s.cfg.MaxBodyBytes))
			continue
		}
		var jr job.Request
		if err := decode(bytes.NewReader(raw), &jr); err != nil {
			var de *decodeError
			errors.As(err, &de)
			items[i].Error = newProblem(de.status, de.detail)
			continue
		}
		j, errs := s.newJob(tenant, &jr)
		if errs != nil {
			items[i].Error = newProblem(http.StatusUnprocessableEntity, "the job request has invalid fields", errs...)
			continue
		}
		if why := s.queueFull(j.Queue); why != "" {
			items[i].Error = newProblem(http.StatusServiceUnavailable, why)
			continue
		}
		valid = append(valid, j)
		where = append(where, i)
	}
	if !s.admitRate(w, r, tenant, len(valid)) {
		return
	}

	var runnable []*job.Job
	if len(valid) > 0 {
		// One INSERT per shard; the jobs of a shard that cannot be dialled
		// go to the next one.
		errs := s.store.InsertBatchRouted(r.Context(), valid)
		logged := map[int]bool{}
		for k, j := range valid {
			i := where[k]
			if err := errs[k]; err != nil {
				items[i].Error = newProblem(http.StatusServiceUnavailable,
					fmt.Sprintf("not accepted: shard %d did not store this item's part of the batch; resubmit it", j.ID.Shard()))
				if !logged[j.ID.Shard()] {
					logged[j.ID.Shard()] = true
					var se *store.ShardError
					if !errors.As(err, &se) {
						se = &store.ShardError{Shard: j.ID.Shard(), Err: err}
					}
					s.log.Error("store batch", "shard", se.Shard, "error", se.Err)
				}
				continue
			}
			items[i].Job = j
			s.metrics.submits.WithLabelValues(j.Queue, j.Type).Inc()
			if j.State == job.Queued {
				runnable = append(runnable, j)
			}
		}
	}
	// Committed: publish every runnable job in one call; the relay covers a failure.
	if len(valid) > 0 {
		s.failpoint("after-commit")
	}
	_ = s.publish(r, runnable...)
	writeJSON(w, http.StatusAccepted, map[string]any{"jobs": items})
}

// newProblem builds a problem document for a batch item.
func newProblem(status int, detail string, fields ...FieldError) *Problem {
	return &Problem{Type: "about:blank", Title: http.StatusText(status), Status: status, Detail: detail, Errors: fields}
}
