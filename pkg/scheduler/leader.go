package scheduler

import (
	"context"
	"sync"
	"time"
)

// elector is what the scheduler needs of the leader lock; *store.Elector
// has it.
type elector interface {
	// TryAcquire takes the leadership if it is free, without waiting, and
	// reports whether this scheduler holds it.
	TryAcquire(ctx context.Context) (bool, error)
	// Check confirms that the leadership is still held; an error means it
	// is lost (the lock's connection is dropped).
	Check(ctx context.Context) error
	// Drop gives the leadership up and closes the lock's connection.
	Drop()
}

// campaign competes for the leadership for as long as ctx lasts: a standby
// tries every Leader.Retry, and while this scheduler leads, lead runs the
// leader-only duties and tasks.
func (s *Scheduler) campaign(ctx context.Context) {
	defer s.elector.Drop()
	standby := false
	var failing time.Time // when the last failure was logged
	for {
		actx, cancel := context.WithTimeout(ctx, s.cfg.Leader.Retry+s.cfg.Leader.CheckTimeout)
		got, err := s.elector.TryAcquire(actx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			if time.Since(failing) >= 30*time.Second {
				failing = time.Now()
				s.log.Warn("leader election failed (shard 0 unreachable?): the leader-only duties wait", "error", err, "retry_in", s.cfg.Leader.Retry.String())
			}
			standby = false
		case got:
			failing, standby = time.Time{}, false
			s.lead(ctx)
			if ctx.Err() != nil {
				return
			}
		case !standby:
			failing, standby = time.Time{}, true
			s.log.Info("standby: another scheduler is the leader", "retry_every", s.cfg.Leader.Retry.String())
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(s.cfg.Leader.Retry):
		}
	}
}

// lead runs the leader-only duties and tasks until the leadership is lost
// or ctx ends. Losing the lock's session stops them at once: their context
// is cancelled before anything else. On shutdown the duties stop first and
// the lock is released after them, so that the next leader does not
// overlap with this one. The tasks are told to stop at the same moment but
// not waited for here: they may wind down gracefully (a worker fleet
// draining) while the next leader starts its own; Run waits for them.
func (s *Scheduler) lead(ctx context.Context) {
	began := time.Now()
	duties := s.snapshot(true)
	names := make([]string, 0, len(duties))
	for _, d := range duties {
		names = append(names, d.name)
	}
	s.leader.Store(true)
	s.metrics.leader.Set(1)
	s.metrics.leaderChanges.WithLabelValues("acquired").Inc()
	s.log.Info("became the leader", "leader_duties", compact(names))

	lctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, d := range duties {
		d.activate()
		if d.task {
			s.tasks.Go(func() { s.runTask(lctx, d) })
		} else {
			wg.Go(func() { s.loop(lctx, d) })
		}
	}
	t := time.NewTicker(s.cfg.Leader.Check)
	var lost error
	for lost == nil && ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-t.C:
			cctx, cancel := context.WithTimeout(ctx, s.cfg.Leader.CheckTimeout)
			lost = s.elector.Check(cctx)
			cancel()
			if ctx.Err() != nil {
				lost = nil // shutting down, not deposed
			}
		}
	}
	t.Stop()
	stop()
	if lost != nil {
		s.leader.Store(false)
		s.metrics.leader.Set(0)
		s.metrics.leaderChanges.WithLabelValues("lost").Inc()
		s.log.Error("lost the leadership: leader-only duties stopped; a standby takes over", "error", lost, "led_for", time.Since(began).Round(time.Millisecond).String())
	}
	wg.Wait()
	for _, d := range duties {
		d.deactivate()
	}
	if lost == nil {
		s.elector.Drop()
		s.leader.Store(false)
		s.metrics.leader.Set(0)
		s.metrics.leaderChanges.WithLabelValues("released").Inc()
		s.log.Info("leadership released", "led_for", time.Since(began).Round(time.Millisecond).String())
	}
}

// compact lists names once each, in order: "relay" once for all shards.
func compact(names []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, n := range names {
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out
}
