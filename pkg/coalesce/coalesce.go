// Package coalesce groups concurrent calls into batches, so that many
// callers share one database statement or one network round trip.
//
// There is no batching timer and no background goroutine. A call that finds
// the group idle runs at once, alone; calls that arrive while a batch is
// running queue up and go together in the next one. Under light load every call is
// its own batch and waits for nothing; under heavy load batches grow by
// themselves to match the rate, up to a bound. Each caller is answered only
// when the batch that carried its item has run.
package coalesce

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// RunFunc runs one batch. It returns one result per item, in order, or an
// error that applies to every item of the batch.
type RunFunc[In, Out any] func(ctx context.Context, items []In) ([]Out, error)

// Group coalesces calls of one kind (for example, claims on one shard).
// A Group is safe for concurrent use; its zero value is not usable.
type Group[In, Out any] struct {
	run     RunFunc[In, Out]
	max     int
	timeout time.Duration

	mu    sync.Mutex
	queue []*call[In, Out]
	busy  bool      // a caller is running batches
	since time.Time // when the running batch began, if busy
}

type call[In, Out any] struct {
	in      In
	out     Out
	err     error
	done    bool
	leading bool          // handed the lead (set under Group.mu)
	wake    chan struct{} // one signal: done, or lead the group
}

// New returns a Group that runs at most max items per batch, each batch
// with the given timeout (its context is detached from any one caller's,
// since the batch serves them all).
func New[In, Out any](max int, timeout time.Duration, run RunFunc[In, Out]) *Group[In, Out] {
	if max < 1 {
		max = 1
	}
	return &Group[In, Out]{run: run, max: max, timeout: timeout}
}

// Do adds in to the next batch and returns its result once that batch has
// run. A caller whose item waits behind a running batch gives up when ctx
// ends: an item still queued is withdrawn (it never runs); one already in a
// running batch may still take effect, its result unseen. A caller that
// leads runs its batch with ctx's values and deadline but not its
// cancellation (the batch serves the others too), for at most the Group's
// timeout.
func (g *Group[In, Out]) Do(ctx context.Context, in In) (Out, error) {
	return g.do(ctx, in, 0)
}

// ErrBusy is DoWithin's answer when the group's running batch kept the item
// from going out within the caller's patience. The item did not run.
var ErrBusy = errors.New("coalesce: a batch has been running longer than the caller would wait")

// DoWithin is Do for a caller that will not wait long behind a batch that
// does not end, say one whose database stopped answering. If the group's
// running batch began more than patience ago, it returns ErrBusy at once;
// if its item is still queued, not yet taken into a batch, after patience,
// the item is withdrawn and it returns ErrBusy. Either way the item never
// ran. An item taken into a batch waits for that batch's result, so a
// caller is never left unsure whether its item took effect, unless ctx ends
// (as with Do).
func (g *Group[In, Out]) DoWithin(ctx context.Context, in In, patience time.Duration) (Out, error) {
	return g.do(ctx, in, patience)
}

func (g *Group[In, Out]) do(ctx context.Context, in In, patience time.Duration) (Out, error) {
	var zero Out
	c := &call[In, Out]{in: in, wake: make(chan struct{}, 1)}
	g.mu.Lock()
	if patience > 0 && g.busy && time.Since(g.since) > patience {
		g.mu.Unlock()
		return zero, ErrBusy
	}
	g.queue = append(g.queue, c)
	lead := !g.busy
	if lead {
		g.since = time.Now() // our batch is about to begin
	}
	g.busy = true
	g.mu.Unlock()
	if !lead {
		if err := g.wait(ctx, c, patience); err != nil {
			return zero, err
		}
		if c.done {
			return c.out, c.err
		}
		// Woken to lead: the previous leader's item is done and ours is next.
	}
	for !c.done {
		g.mu.Lock()
		n := min(len(g.queue), g.max)
		batch := make([]*call[In, Out], n)
		copy(batch, g.queue)
		g.queue = g.queue[n:]
		g.since = time.Now()
		g.mu.Unlock()
		g.flush(ctx, batch, c)
	}
	// Ours is answered: hand the lead to the oldest waiting call, or go idle.
	g.mu.Lock()
	g.since = time.Now() // the next leader's batch is about to begin
	if len(g.queue) > 0 {
		next := g.queue[0]
		next.leading = true
		g.mu.Unlock()
		next.wake <- struct{}{}
	} else {
		g.busy = false
		g.mu.Unlock()
	}
	return c.out, c.err
}

// wait waits, for a caller that does not lead, until its item is answered
// or it is handed the lead (nil), or it gives up: ctx ended (ctx.Err()), or
// its item was still queued after patience, when patience is set (ErrBusy).
func (g *Group[In, Out]) wait(ctx context.Context, c *call[In, Out], patience time.Duration) error {
	var expired <-chan time.Time
	if patience > 0 {
		t := time.NewTimer(patience)
		defer t.Stop()
		expired = t.C
	}
	for {
		select {
		case <-c.wake:
			return nil
		case <-expired:
			expired = nil
			if g.withdrawQueued(c) {
				return ErrBusy
			}
			// Taken into a running batch, or handed the lead: wait on.
		case <-ctx.Done():
			if g.withdraw(c) {
				return ctx.Err()
			}
			<-c.wake // handed the lead meanwhile: the others wait on it
			return nil
		}
	}
}

// withdrawQueued takes a caller's item out of the queue and reports true if
// it is still there: neither taken into a batch nor handed the lead.
func (g *Group[In, Out]) withdrawQueued(c *call[In, Out]) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	i := slices.Index(g.queue, c)
	if c.leading || i < 0 {
		return false
	}
	g.queue = slices.Delete(g.queue, i, i+1)
	return true
}

// withdraw takes a caller that gave up out of the queue and reports true,
// unless it has been handed the lead, which it must take. A call already
// taken into a batch is left to it: its result and wake-up go unread.
func (g *Group[In, Out]) withdraw(c *call[In, Out]) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if c.leading {
		return false
	}
	if i := slices.Index(g.queue, c); i >= 0 {
		g.queue = slices.Delete(g.queue, i, i+1)
	}
	return true
}

// flush runs one batch and answers its calls, waking all but self.
func (g *Group[In, Out]) flush(ctx context.Context, batch []*call[In, Out], self *call[In, Out]) {
	items := make([]In, len(batch))
	for i, c := range batch {
		items[i] = c.in
	}
	end := time.Now().Add(g.timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(end) {
		end = d
	}
	bctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), end)
	outs, err := g.run(bctx, items)
	cancel()
	if err == nil && len(outs) != len(batch) {
		err = fmt.Errorf("coalesce: a batch of %d items returned %d results", len(batch), len(outs))
	}
	for i, c := range batch {
		if err != nil {
			c.err = err
		} else {
			c.out = outs[i]
		}
		c.done = true
		if c != self {
			c.wake <- struct{}{}
		}
	}
}
