package server

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// admitRate takes n units of the tenant's submit rate limit (Config.RateLimit).
// Over the limit it writes a 429 with Retry-After and returns false. When
// Redis does not answer it lets the request through: the limit protects the
// platform, and losing submits to a cache outage would be worse.
func (s *Server) admitRate(w http.ResponseWriter, r *http.Request, tenant string, n int) bool {
	rate := s.cfg.RateLimit
	if rate.Limit <= 0 || n <= 0 {
		return true
	}
	if n > rate.Limit {
		s.metrics.rateLimited.WithLabelValues(tenant).Inc()
		writeProblem(w, http.StatusTooManyRequests, fmt.Sprintf(
			"this batch of %d jobs is more than the submit rate limit of %d jobs per %v allows at once; split it", n, rate.Limit, rate.Window))
		return false
	}
	ok, retry, err := s.cache.Take(r.Context(), tenant, n, rate, s.now())
	if err != nil {
		s.metrics.rateErrors.Inc()
		s.log.Debug("rate limit not checked (Redis unavailable): request let through", "tenant", tenant, "error", err)
		return true
	}
	if ok {
		return true
	}
	s.metrics.rateLimited.WithLabelValues(tenant).Inc()
	secs := max(1, int((retry+time.Second-1)/time.Second))
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	writeProblem(w, http.StatusTooManyRequests, fmt.Sprintf(
		"tenant %s is over its submit rate limit of %d jobs per %v; retry in %ds", tenant, rate.Limit, rate.Window, secs))
	return false
}

// admitSubmit runs h while fewer than Config.MaxSubmitsInFlight submit
// requests are in this process, and answers 503 at once otherwise. Each
// request in flight holds its body, a goroutine and a place in the group
// INSERT and publish; past the machine's capacity they would only pile up.
func (s *Server) admitSubmit(h func(http.ResponseWriter, *http.Request, string)) func(http.ResponseWriter, *http.Request, string) {
	return func(w http.ResponseWriter, r *http.Request, tenant string) {
		select {
		case s.submits <- struct{}{}:
			defer func() { <-s.submits }()
			h(w, r, tenant)
		default:
			s.metrics.shed.Inc()
			unavailable(w, fmt.Sprintf("this api process is working on %d submits already, its limit (WARREN_MAX_SUBMITS_IN_FLIGHT); not accepted, retry later", cap(s.submits)))
		}
	}
}

// queueFull reports, for backpressure (Config.MaxQueueDepth), why the
// queue takes no more jobs now, or "". It counts the rejection.
func (s *Server) queueFull(queue string) string {
	if s.depths == nil {
		return ""
	}
	ready, over := s.depths.check(queue)
	if !over {
		return ""
	}
	s.metrics.backpressure.WithLabelValues(queue).Inc()
	return fmt.Sprintf("queue %q has %d jobs waiting, more than the limit of %d (WARREN_MAX_QUEUE_DEPTH); not accepted, retry later",
		queue, ready, s.cfg.MaxQueueDepth)
}

// Bounds of the depth sampler's work, which grows with the queues named in
// submits.
const (
	// maxWatched is the most queues sampled; queues beyond it are not
	// limited.
	maxWatched = 1000
	// watchIdle is how long a queue nobody submits to stays sampled.
	watchIdle = 10 * time.Minute
	// depthTimeout bounds one queue's depth read.
	depthTimeout = 2 * time.Second
)

// depthGuard samples the ready depth of the queues that submits name, from
// one goroutine, started by the first check and stopped by close. A queue
// whose depth is unknown (never sampled, not declared yet, RabbitMQ not
// answering) is not limited.
type depthGuard struct {
	br    Publisher
	limit int
	every time.Duration
	log   *slog.Logger

	start sync.Once
	stop  chan struct{}
	done  chan struct{}

	mu     sync.Mutex
	queues map[string]*depth
	closed bool
}

// depth is what the sampler knows of one queue.
type depth struct {
	ready int
	known bool
	seen  time.Time // last submit
}

func newDepthGuard(br Publisher, limit int, every time.Duration, log *slog.Logger) *depthGuard {
	return &depthGuard{br: br, limit: limit, every: every, log: log,
		stop: make(chan struct{}), done: make(chan struct{}), queues: map[string]*depth{}}
}

// check returns the last sampled ready depth of queue and whether it is
// over the limit, and has the queue sampled from now on.
func (g *depthGuard) check(queue string) (ready int, over bool) {
	g.mu.Lock()
	d, ok := g.queues[queue]
	if !ok && len(g.queues) < maxWatched {
		d = &depth{}
		g.queues[queue] = d
	}
	if d != nil {
		d.seen = time.Now()
		ready, over = d.ready, d.known && d.ready > g.limit
	}
	closed := g.closed
	g.mu.Unlock()
	if !closed {
		g.start.Do(func() { go g.run() })
	}
	return ready, over
}

func (g *depthGuard) run() {
	defer close(g.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-g.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	t := time.NewTicker(g.every)
	defer t.Stop()
	for {
		g.sample(ctx)
		select {
		case <-g.stop:
			return
		case <-t.C:
		}
	}
}

// sample reads the depth of every watched queue, one at a time, and forgets
// the queues nobody submitted to for watchIdle.
func (g *depthGuard) sample(ctx context.Context) {
	g.mu.Lock()
	names := make([]string, 0, len(g.queues))
	for q, d := range g.queues {
		if time.Since(d.seen) > watchIdle {
			delete(g.queues, q)
			continue
		}
		names = append(names, q)
	}
	g.mu.Unlock()
	for _, q := range names {
		qctx, cancel := context.WithTimeout(ctx, depthTimeout)
		ready, _, err := g.br.QueueDepth(qctx, q)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			g.log.Debug("queue depth for backpressure (not limited meanwhile)", "queue", q, "error", err)
		}
		g.mu.Lock()
		if d, ok := g.queues[q]; ok {
			d.ready, d.known = ready, err == nil
		}
		g.mu.Unlock()
	}
}

// close stops the sampler. It is safe on a nil guard and more than once.
func (g *depthGuard) close() {
	if g == nil {
		return
	}
	g.mu.Lock()
	already := g.closed
	g.closed = true
	g.mu.Unlock()
	if already {
		return
	}
	started := true
	g.start.Do(func() { started = false })
	if started {
		close(g.stop)
		<-g.done
	}
}
