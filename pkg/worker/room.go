package worker

import (
	"sync"
	"time"

	"github.com/warrenhq/warren/pkg/broker"
	"github.com/warrenhq/warren/pkg/job"
)

// pending is a message taken from RabbitMQ whose job has not been claimed
// yet: it waits in the room for a free slot of its type.
type pending struct {
	d     *broker.Delivery
	msg   job.Message
	reg   *registration
	prio  uint8
	seq   uint64
	since time.Time
}

// room is where received messages wait for a slot. Slots go to the highest
// priority first, then to the oldest, skipping types that are at their
// concurrency limit, so one busy type does not hold up the others. What the
// room may hold is bounded by RabbitMQ's prefetch: its messages are unacked.
type room struct {
	mu      sync.Mutex
	cond    *sync.Cond
	waiting []*pending
	running map[string]int
	seq     uint64
	closed  bool
}

func newRoom() *room {
	r := &room{running: map[string]int{}}
	r.cond = sync.NewCond(&r.mu)
	return r
}

// push adds p; it reports false, leaving p to the caller, once the room is
// closed.
func (r *room) push(p *pending) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	r.seq++
	p.seq = r.seq
	r.waiting = append(r.waiting, p)
	r.cond.Broadcast()
	return true
}

// next waits for a message whose type has a free slot and takes the slot.
// It reports false once the room is closed.
func (r *room) next() (*pending, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		if r.closed {
			return nil, false
		}
		best := -1
		for i, p := range r.waiting {
			if lim := p.reg.concurrency; lim > 0 && r.running[p.reg.typ] >= lim {
				continue
			}
			if best < 0 || p.prio > r.waiting[best].prio ||
				(p.prio == r.waiting[best].prio && p.seq < r.waiting[best].seq) {
				best = i
			}
		}
		if best >= 0 {
			p := r.waiting[best]
			r.waiting = append(r.waiting[:best], r.waiting[best+1:]...)
			r.running[p.reg.typ]++
			return p, true
		}
		r.cond.Wait()
	}
}

// done frees the slot that next took for p.
func (r *room) done(p *pending) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.running[p.reg.typ]--
	r.cond.Broadcast()
}

// busy returns how many slots are taken.
func (r *room) busy() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range r.running {
		n += c
	}
	return n
}

// expired removes and returns the messages that have waited since before t.
func (r *room) expired(t time.Time) []*pending {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*pending
	kept := r.waiting[:0]
	for _, p := range r.waiting {
		if p.since.Before(t) {
			out = append(out, p)
		} else {
			kept = append(kept, p)
		}
	}
	clear(r.waiting[len(kept):])
	r.waiting = kept
	return out
}

// close stops handing out messages, wakes every waiting next, and returns
// the messages still waiting.
func (r *room) close() []*pending {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	out := r.waiting
	r.waiting = nil
	r.cond.Broadcast()
	return out
}
