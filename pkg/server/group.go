package server

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/warrenhq/warren/pkg/coalesce"
	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/store"
)

// The single submit path is group-committed: concurrent POST /v1/jobs
// requests for one shard share one INSERT statement (store.Committer), and
// their messages share one Publish call, whose confirms RabbitMQ sends back
// together. There is no timer: a request that finds its group idle goes at
// once, alone; requests arriving while a statement or a publish is under way
// go together in the next one, so batches grow with the load by themselves.
// Each request is still answered only after its own row has committed and
// its message was confirmed (or its publish failed: the job is committed,
// and the scheduler's relay publishes it).

// Bounds of the single submit path's groups.
const (
	// maxGroupCommit is the most jobs one INSERT carries.
	maxGroupCommit = 500
	// maxGroupPublish is the most messages one Publish call carries.
	maxGroupPublish = 500
	// commitTimeout bounds one group INSERT.
	commitTimeout = 10 * time.Second
)

// submitGroups holds the single submit path's groups and their gauges.
type submitGroups struct {
	commits   *store.Committer
	publishes []*coalesce.Group[*job.Job, struct{}] // one per shard, by the job's shard

	inCommit, inPublish prometheus.Gauge

	mu     sync.Mutex
	warned map[int]time.Time // by shard: when a reroute from it was last logged
}

// rerouted counts the submits sent on from a shard to the next, and logs
// it as a warning once a minute per shard, not once per submit.
func (g *submitGroups) rerouted(s *Server) func(shard int, err error) {
	return func(shard int, err error) {
		reason := "unreachable"
		if errors.Is(err, coalesce.ErrBusy) {
			reason = "not_answering"
		}
		s.metrics.rerouted.WithLabelValues(strconv.Itoa(shard), reason).Inc()
		g.mu.Lock()
		warn := time.Since(g.warned[shard]) >= time.Minute
		if warn {
			g.warned[shard] = time.Now()
		}
		g.mu.Unlock()
		if warn {
			s.log.Warn("submits go to the next shard: this one is down or not answering (said once a minute)", "shard", shard, "reason", reason, "error", err)
		}
	}
}

func (s *Server) newSubmitGroups() *submitGroups {
	g := &submitGroups{
		inCommit:  s.metrics.grouped.WithLabelValues("insert"),
		inPublish: s.metrics.grouped.WithLabelValues("publish"),
		warned:    map[int]time.Time{},
	}
	insertJobs, insertTime := s.metrics.groupJobs.WithLabelValues("insert"), s.metrics.groupTime.WithLabelValues("insert")
	pubJobs, pubTime := s.metrics.groupJobs.WithLabelValues("publish"), s.metrics.groupTime.WithLabelValues("publish")
	// A failed statement is logged by each of its requests, with its job id.
	g.commits = s.store.NewCommitter(store.CommitterConfig{
		MaxBatch: maxGroupCommit,
		Timeout:  commitTimeout,
		Observe: func(_, jobs int, took time.Duration, _ error) {
			insertJobs.Observe(float64(jobs))
			insertTime.Observe(took.Seconds())
		},
		Rerouted: g.rerouted(s),
	})
	// Publishes are grouped by shard: the requests of one INSERT reach
	// RabbitMQ together, and the shards' publishes use separate confirm
	// channels at once.
	for range s.store.Shards() {
		g.publishes = append(g.publishes, coalesce.New(maxGroupPublish, s.cfg.PublishTimeout,
			func(ctx context.Context, jobs []*job.Job) ([]struct{}, error) {
				pubJobs.Observe(float64(len(jobs)))
				start := time.Now()
				err := s.publishJobs(ctx, jobs)
				pubTime.Observe(time.Since(start).Seconds())
				if err != nil {
					return nil, err
				}
				return make([]struct{}, len(jobs)), nil
			}))
	}
	return g
}

// commit stores a new job through its shard's group INSERT, routed around a
// shard that cannot be reached (see store.Committer.Insert).
func (s *Server) commit(ctx context.Context, j *job.Job) error {
	s.groups.inCommit.Inc()
	defer s.groups.inCommit.Dec()
	return s.groups.commits.Insert(ctx, j)
}

// publishOne publishes a committed job's message in its shard's next group
// Publish and returns once RabbitMQ confirmed it, or the publish failed
// (logged and counted by publish; the relay covers it).
func (s *Server) publishOne(ctx context.Context, j *job.Job) error {
	s.groups.inPublish.Inc()
	defer s.groups.inPublish.Dec()
	_, err := s.groups.publishes[j.ID.Shard()%len(s.groups.publishes)].Do(ctx, j)
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		// Gave up waiting behind a stuck publish: answered without a
		// confirm; the message goes with its batch or the relay sends it.
		s.metrics.confirms.WithLabelValues("timeout").Inc()
	}
	return err
}
