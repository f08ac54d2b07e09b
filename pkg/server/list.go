package server

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenhq/warren/pkg/cache"
	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/store"
)

// JobPage is the answer of GET /v1/jobs.
type JobPage struct {
	Jobs []*job.Job `json:"jobs"`
	// NextCursor fetches the next page; nil on the last page.
	NextCursor *string `json:"next_cursor"`
}

// list serves GET /v1/jobs: the tenant's jobs newest first across all
// shards, filtered by state, queue and type, a page at a time. The cursor is
// opaque to clients: the base64url of the last id of the previous page.
func (s *Server) list(w http.ResponseWriter, r *http.Request, tenant string) {
	q := r.URL.Query()
	lq := store.ListQuery{Tenant: tenant, Limit: DefaultListLimit}
	var errs []FieldError
	if v := q.Get("state"); v != "" {
		if st := job.State(v); st.Valid() {
			lq.State = st
		} else {
			errs = append(errs, FieldError{Field: "state", Detail: fmt.Sprintf("%q is not a state: use scheduled, queued, running, retrying, succeeded, dead or cancelled", truncate(v, 40))})
		}
	}
	for _, f := range []struct {
		name string
		dst  *string
	}{{"queue", &lq.Queue}, {"type", &lq.Type}} {
		if v := q.Get(f.name); v != "" {
			if namePattern.MatchString(v) {
				*f.dst = v
			} else {
				errs = append(errs, FieldError{Field: f.name, Detail: "must be 1-100 letters, digits or _.:-"})
			}
		}
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			writeProblem(w, http.StatusBadRequest, fmt.Sprintf("limit=%q is not a whole number", truncate(v, 40)))
			return
		}
		if n < 1 || n > MaxListLimit {
			errs = append(errs, FieldError{Field: "limit", Detail: fmt.Sprintf("must be between 1 and %d", MaxListLimit)})
		}
		lq.Limit = n
	}
	if v := q.Get("cursor"); v != "" {
		id, ok := parseCursor(v)
		if !ok {
			writeProblem(w, http.StatusBadRequest, "cursor is not a cursor: pass next_cursor from the previous page unchanged")
			return
		}
		lq.Before = id
	}
	if len(errs) > 0 {
		writeProblem(w, http.StatusUnprocessableEntity, "the query has invalid parameters", errs...)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), shardReadTimeout)
	defer cancel()
	jobs, more, err := s.store.List(ctx, lq)
	if err != nil {
		s.fanOutFailed(w, "list jobs", err)
		return
	}
	page := JobPage{Jobs: jobs}
	if page.Jobs == nil {
		page.Jobs = []*job.Job{}
	}
	if more {
		c := cursor(jobs[len(jobs)-1].ID)
		page.NextCursor = &c
	}
	writeJSON(w, http.StatusOK, page)
}

func cursor(id job.ID) string { return base64.RawURLEncoding.EncodeToString(id[:]) }

func parseCursor(s string) (job.ID, bool) {
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	var id job.ID
	if err != nil || len(b) != len(id) {
		return id, false
	}
	copy(id[:], b)
	return id, !id.IsZero()
}

// shardReadTimeout bounds the wait for a shard in a request that reads: the
// shards of the list and of the queue statistics, the shard of a job. A
// shard that has not answered by then is unavailable to it. A
// healthy shard answers in milliseconds; one frozen (a network stall) would
// otherwise hold the request until the server's write timeout.
const shardReadTimeout = 10 * time.Second

// fanOutFailed answers a request that needs every shard when one failed.
func (s *Server) fanOutFailed(w http.ResponseWriter, what string, err error) {
	var se *store.ShardError
	if errors.As(err, &se) {
		s.log.Error(what, "shard", se.Shard, "error", se.Err)
		unavailable(w, fmt.Sprintf("shard %d is unavailable, and this answer needs every shard; retry later", se.Shard))
		return
	}
	s.log.Error(what, "error", err)
	unavailable(w, "the job store is unavailable; retry later")
}

// QueueInfo is one queue's statistics in GET /v1/queues.
type QueueInfo struct {
	Name      string `json:"name"`
	Ready     int64  `json:"ready"`
	Running   int64  `json:"running"`
	Scheduled int64  `json:"scheduled"`
	Retrying  int64  `json:"retrying"`
	Dead      int64  `json:"dead"`
	// Consumers is RabbitMQ's count of consumers on the queue (all tenants);
	// null when RabbitMQ could not be asked.
	Consumers             *int    `json:"consumers"`
	OldestReadyAgeSeconds float64 `json:"oldest_ready_age_seconds"`
	ThroughputLastMinute  int64   `json:"throughput_last_minute"`
}

// QueuesAnswer is the answer of GET /v1/queues.
type QueuesAnswer struct {
	Queues []QueueInfo `json:"queues"`
	// UnavailableShards lists the shards that did not answer: their jobs are
	// missing from the counts.
	UnavailableShards []int `json:"unavailable_shards,omitempty"`
}

// queues serves GET /v1/queues: the tenant's jobs per queue and state summed
// over all shards, with RabbitMQ's consumer counts. A shard that does not
// answer is named in unavailable_shards; when none answers, 503.
func (s *Server) queues(w http.ResponseWriter, r *http.Request, tenant string) {
	sctx, scancel := context.WithTimeout(r.Context(), shardReadTimeout)
	defer scancel()
	stats, errs := s.store.QueueStats(sctx, tenant)
	ans := QueuesAnswer{Queues: make([]QueueInfo, len(stats))}
	for _, err := range errs {
		var se *store.ShardError
		if errors.As(err, &se) {
			ans.UnavailableShards = append(ans.UnavailableShards, se.Shard)
		}
		s.log.Error("queue stats", "error", err)
	}
	if len(errs) > 0 && len(errs) == s.store.Shards() {
		unavailable(w, "no shard answered; retry later")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8) // a few RabbitMQ channels at a time
	for i, st := range stats {
		ans.Queues[i] = QueueInfo{
			Name: st.Queue, Ready: st.Ready, Running: st.Running, Scheduled: st.Scheduled,
			Retrying: st.Retrying, Dead: st.Dead, OldestReadyAgeSeconds: st.OldestReadyAge,
			ThroughputLastMinute: st.FinishedLastMinute,
		}
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			_, consumers, err := s.broker.QueueDepth(ctx, st.Queue)
			var ae *amqp.Error
			switch {
			case err == nil:
			case errors.As(err, &ae) && ae.Code == amqp.NotFound:
				consumers = 0 // never declared: nobody consumes it
			default:
				s.log.Warn("queue depth", "queue", st.Queue, "error", err)
				return
			}
			ans.Queues[i].Consumers = &consumers
		})
	}
	wg.Wait()
	writeJSON(w, http.StatusOK, ans)
}

// workers serves GET /v1/workers: the live worker processes that run the
// tenant's jobs, from the heartbeats they keep in Redis. Those that serve
// every tenant are shown to all; those dedicated to some tenants only to them.
func (s *Server) workers(w http.ResponseWriter, r *http.Request, tenant string) {
	if s.cache == nil {
		unavailable(w, "worker heartbeats live in Redis, which this api is not configured with")
		return
	}
	ws, err := s.cache.Workers(r.Context(), s.now())
	if err != nil {
		s.log.Warn("list workers", "error", err)
		unavailable(w, "worker heartbeats live in Redis, which is unavailable; retry later")
		return
	}
	ws = slices.DeleteFunc(ws, func(wi cache.WorkerInfo) bool {
		return len(wi.Tenants) > 0 && !slices.Contains(wi.Tenants, tenant)
	})
	writeJSON(w, http.StatusOK, map[string][]cache.WorkerInfo{"workers": ws})
}
