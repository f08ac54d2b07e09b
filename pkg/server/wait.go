package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warrenhq/warren/pkg/cache"
	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/store"
)

// waitHub serves every ?wait request of a Server with one Redis subscription
// to the Done event and one goroutine watching Redis's health, both started
// by the first wait and stopped by Close. A waiting request costs a map
// entry and a timer, never a goroutine or a poll loop of its own.
//
// Completion events are lost while Redis or the subscription is down. So
// while Redis does not answer, and for a few rounds after it answers again,
// the watcher wakes every waiter every poll interval (1s by default) to
// re-read its job: a coarse fallback that bounds the extra delay, not a poll
// loop per request. Each request also re-reads its job when its wait ends.
type waitHub struct {
	cache *cache.Cache // nil: no Redis, always the fallback
	poll  time.Duration
	log   *slog.Logger

	start    sync.Once
	listener *cache.Listener // set by start; nil without a cache
	stop     chan struct{}
	done     chan struct{}
	closed   atomic.Bool
	active   atomic.Int64 // requests waiting now

	mu   sync.Mutex
	tick chan struct{} // closed and replaced by each fallback round
}

// recoveryRounds is how many poll rounds the fallback continues after Redis
// answers again, while the subscription re-establishes itself.
const recoveryRounds = 3

func newWaitHub(c *cache.Cache, poll time.Duration, log *slog.Logger) *waitHub {
	return &waitHub{cache: c, poll: poll, log: log, tick: make(chan struct{}),
		stop: make(chan struct{}), done: make(chan struct{})}
}

// ensureStarted subscribes and starts the watcher on first use. It returns
// the listener (nil without a cache), or nil after close.
func (h *waitHub) ensureStarted() *cache.Listener {
	h.start.Do(func() {
		subscribed := false
		if h.closed.Load() {
			close(h.done)
			return
		}
		if h.cache != nil {
			// Wait (briefly) for the subscription, so that a job ending
			// right after the first waiter registers still wakes it.
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			var err error
			h.listener, err = h.cache.ListenConfirmed(ctx, cache.Done, h.log)
			cancel()
			if err != nil {
				h.log.Warn("Redis is unavailable: ?wait requests re-read their job every poll interval until it is back", "poll", h.poll.String(), "error", err)
			}
			subscribed = err == nil
		}
		go h.watch(subscribed)
	})
	if h.closed.Load() {
		return nil
	}
	return h.listener
}

// watch runs the fallback rounds while Redis is unavailable. subscribed
// says whether the subscription was confirmed at the start.
func (h *waitHub) watch(subscribed bool) {
	defer close(h.done)
	t := time.NewTicker(h.poll)
	defer t.Stop()
	degraded := 0
	if !subscribed {
		degraded = recoveryRounds // events may be missed until it is
	}
	for {
		select {
		case <-h.stop:
			return
		case <-t.C:
		}
		if h.active.Load() == 0 {
			continue
		}
		if h.cache == nil || !h.redisUp() {
			degraded = recoveryRounds
		} else if degraded > 0 {
			degraded--
		} else {
			continue
		}
		h.broadcast()
	}
}

func (h *waitHub) redisUp() bool {
	ctx, cancel := context.WithTimeout(context.Background(), h.poll/2)
	defer cancel()
	return h.cache.Ping(ctx) == nil
}

// broadcast wakes every waiter for one fallback re-read.
func (h *waitHub) broadcast() {
	h.mu.Lock()
	close(h.tick)
	h.tick = make(chan struct{})
	h.mu.Unlock()
}

func (h *waitHub) fallback() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.tick
}

func (h *waitHub) close() error {
	if !h.closed.CompareAndSwap(false, true) {
		return nil
	}
	h.start.Do(func() { close(h.done) }) // never started: nothing to stop
	close(h.stop)                        // requests still waiting re-read and answer
	<-h.done
	if h.listener != nil {
		return h.listener.Close()
	}
	return nil
}

// awaitTerminal returns the tenant's job once it is terminal or when d has
// passed (then in its latest state). The waiter is registered before the
// first read, so a job that ends between the read and the wait still wakes
// it; every wake re-reads the job.
func (s *Server) awaitTerminal(ctx context.Context, tenant string, id job.ID, d time.Duration) (*job.Job, error) {
	h := s.waits
	l := h.ensureStarted()
	var woke <-chan struct{}
	stop := func() {}
	if l != nil {
		woke, stop = l.Wait(id)
	}
	defer func() { stop() }()
	h.active.Add(1)
	defer h.active.Add(-1)
	s.metrics.waiters.Inc()
	defer s.metrics.waiters.Dec()

	j, err := s.read(ctx, tenant, id)
	if err != nil || j.State.Terminal() || d <= 0 || h.closed.Load() {
		return j, err
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done(): // the client went away
			return j, nil
		case <-timer.C:
			return s.read(ctx, tenant, id)
		case <-woke:
			stop()
			if l = h.ensureStarted(); l != nil { // re-register before re-reading
				woke, stop = l.Wait(id)
			} else {
				woke, stop = nil, func() {}
			}
		case <-h.fallback():
		case <-h.stop: // the server is closing
			return s.read(ctx, tenant, id)
		}
		if j, err = s.read(ctx, tenant, id); err != nil || j.State.Terminal() {
			return j, err
		}
	}
}

// read returns the tenant's job from the cache (which holds finished jobs)
// or else from Postgres.
func (s *Server) read(ctx context.Context, tenant string, id job.ID) (*job.Job, error) {
	if s.cache != nil {
		j, err := s.cache.GetJob(ctx, tenant, id)
		switch {
		case err == nil:
			s.metrics.cacheReads.WithLabelValues("hit").Inc()
			return j, nil
		case errors.Is(err, cache.ErrMiss):
			s.metrics.cacheReads.WithLabelValues("miss").Inc()
		default:
			s.metrics.cacheReads.WithLabelValues("error").Inc()
			s.log.Debug("cache read failed; using Postgres", "job_id", id.String(), "error", err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, shardReadTimeout)
	defer cancel()
	return s.store.Get(ctx, tenant, id)
}

// waitParam parses ?wait: a Go duration ("5s", "1m") or whole seconds,
// from 0 to MaxWait. It writes the problem and returns false when invalid.
func waitParam(w http.ResponseWriter, r *http.Request) (time.Duration, bool) {
	v := r.URL.Query().Get("wait")
	if v == "" {
		return 0, true
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		n, nerr := strconv.Atoi(v)
		if nerr != nil {
			writeProblem(w, http.StatusBadRequest, fmt.Sprintf("wait=%q is not a duration such as \"30s\"", truncate(v, 40)))
			return 0, false
		}
		if n < 0 || n > int(MaxWait/time.Second) {
			writeProblem(w, http.StatusUnprocessableEntity, fmt.Sprintf("wait must be between 0s and %v, got %s", MaxWait, truncate(v, 40)))
			return 0, false
		}
		d = time.Duration(n) * time.Second // in range: cannot overflow
	}
	if d < 0 || d > MaxWait {
		writeProblem(w, http.StatusUnprocessableEntity, fmt.Sprintf("wait must be between 0s and %v, got %s", MaxWait, truncate(v, 40)))
		return 0, false
	}
	return d, true
}

// jobReadFailed answers a failed read of a job.
func (s *Server) jobReadFailed(w http.ResponseWriter, id job.ID, err error) {
	if errors.Is(err, store.ErrNotFound) {
		writeProblem(w, http.StatusNotFound, fmt.Sprintf("no job %s", id))
		return
	}
	s.log.Error("read job", "job_id", id.String(), "shard", id.Shard(), "error", err)
	unavailable(w, fmt.Sprintf("the job's shard (%d) is unavailable; retry later", id.Shard()))
}
