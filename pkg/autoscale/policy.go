// Package autoscale sizes Warren's worker fleet from queue figures. A Policy
// decides how many worker processes the queues need; a Scaler (local child
// processes, a Kubernetes Deployment, a Heroku formation) carries the
// decision out; an Autoscaler reads the figures, asks the policy and tells
// the scaler, once per tick.
//
// The policy sizes the fleet by Little's law — the jobs in service at once
// are the arrival rate times the mean job time, the rate read from the
// backlog when that shows a sudden rise — plus the capacity that drains the
// current backlog within a target latency, plus headroom. It scales up at
// once (counting workers still starting, so the same capacity is not ordered
// twice), scales down slowly (to the highest need over a stabilisation
// window with a 10 % margin, and a bounded step), keeps within min/max, and
// scales to zero after an idle period and back from zero on the first job.
// docs/AUTOSCALING.md explains it with figures.
package autoscale

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// QueueLoad is what the autoscaler knows about one queue at one tick.
type QueueLoad struct {
	Queue string
	// Ready is the number of jobs waiting to start: queued in Postgres,
	// whether still in RabbitMQ or prefetched by a worker.
	Ready int
	// Running is the number of jobs being handled.
	Running int
	// ArrivalRate is jobs enqueued per second, over a recent window.
	ArrivalRate float64
	// CompletionRate is jobs finished per second, over the same window.
	CompletionRate float64
	// MeanJobTime is the mean handler time of the jobs finished within the
	// window; 0 when none did.
	MeanJobTime time.Duration
	// OldestAge is how long the oldest waiting job has waited.
	OldestAge time.Duration
}

// Observation is what the autoscaler knows at one tick.
type Observation struct {
	At     time.Time
	Queues []QueueLoad
	// Current is the number of worker processes that are up.
	Current int
	// Starting is the number of worker processes ordered but not yet up.
	Starting int
}

// Policy holds the autoscaler's settings (WARREN_AUTOSCALE_*). The zero
// value is not useful; start from DefaultPolicy.
type Policy struct {
	// Min and Max bound the fleet. Min 0 allows scaling to zero.
	Min, Max int
	// Interval is how often the autoscaler decides.
	Interval time.Duration
	// Concurrency is the number of jobs one worker process runs at once: its
	// slots.
	Concurrency int
	// TargetLatency is how soon a backlog should be drained.
	TargetLatency time.Duration
	// Headroom sizes the spare slots kept on top of those the arrivals keep
	// busy, in units of the square root of the busy slots (square-root
	// staffing): with a busy slots the fleet keeps Headroom·√a spare. Random
	// arrivals make the busy count swing by about √a, so this spare keeps
	// the chance that a job must wait small at any scale, for less than a
	// fixed percentage costs on a large fleet. 0 runs the fleet full.
	Headroom float64
	// DownWindow is the stabilisation window: the fleet shrinks only to the
	// highest need seen within it (with a 10 % margin), and not while the
	// arrivals' need has grown within it.
	DownWindow time.Duration
	// DownStep is the most workers one decision removes (at least 1).
	DownStep int
	// IdleAfter is how long the queues must be empty, with nothing running
	// and nothing arriving, before the fleet goes to zero (when Min is 0).
	IdleAfter time.Duration
	// DefaultJobTime stands in for the mean job time of a queue before any
	// of its jobs has finished.
	DefaultJobTime time.Duration
	// Startup is how long a new worker takes to start taking jobs. The
	// backlog is sized as it will be when ordered workers are up.
	Startup time.Duration
}

// DefaultPolicy returns the defaults documented in docs/AUTOSCALING.md.
func DefaultPolicy() Policy {
	return Policy{
		Min: 1, Max: 20, Concurrency: 10, Interval: 10 * time.Second,
		TargetLatency: 40 * time.Second, Headroom: 1.1,
		DownWindow: 150 * time.Second, DownStep: 1,
		IdleAfter: 5 * time.Minute, DefaultJobTime: time.Second,
		Startup: 10 * time.Second,
	}
}

// Validate reports the first setting that cannot work.
func (p Policy) Validate() error {
	switch {
	case p.Min < 0:
		return fmt.Errorf("min %d is negative", p.Min)
	case p.Max < max(p.Min, 1):
		return fmt.Errorf("max %d is below min %d (or zero)", p.Max, p.Min)
	case p.Interval < 100*time.Millisecond:
		return fmt.Errorf("interval %v is below 100ms", p.Interval)
	case p.Concurrency < 1:
		return fmt.Errorf("concurrency %d is below 1", p.Concurrency)
	case p.TargetLatency <= 0:
		return fmt.Errorf("target latency %v is not positive", p.TargetLatency)
	case p.Headroom < 0 || p.Headroom > 10:
		return fmt.Errorf("headroom %v is outside [0, 10]", p.Headroom)
	case p.DownWindow < 0:
		return fmt.Errorf("down window %v is negative", p.DownWindow)
	case p.DownStep < 1:
		return fmt.Errorf("down step %d is below 1", p.DownStep)
	case p.IdleAfter < 0:
		return fmt.Errorf("idle period %v is negative", p.IdleAfter)
	case p.DefaultJobTime <= 0:
		return fmt.Errorf("default job time %v is not positive", p.DefaultJobTime)
	case p.Startup < 0:
		return fmt.Errorf("startup %v is negative", p.Startup)
	}
	return nil
}

// Decision is the autoscaler's answer for one tick.
type Decision struct {
	// Desired is the number of worker processes to run.
	Desired int
	// Need is the unrounded capacity the figures call for, in workers.
	Need float64
	// Direction is "up", "down" or "hold".
	Direction string
	// Reason says why, from which figures, for the log.
	Reason string
}

// State is the memory a Policy keeps between ticks. The zero value is ready.
type State struct {
	recs     []rec // recommendations within the down window
	idleFrom time.Time
	jobTime  map[string]time.Duration // last known mean job time per queue
}

type rec struct {
	at   time.Time
	n    int     // workers the fleet may shrink to: ⌈need × (1 + downMargin)⌉
	load float64 // slots the arrivals kept busy
}

// downTolerance is the relative drop below which the fleet is not shrunk,
// as the HPA's tolerance.
const downTolerance = 0.1

// downMargin is what the fleet keeps over the highest need of the down
// window when it shrinks. Up is at need, down at need + 10 %: between the
// two the fleet holds, so that a need that wavers around a whole number of
// workers (the noise of a rate measured over 30 s) does not flap.
const downMargin = 0.1

// riseTolerance is the growth of the arrivals' need within the down window
// above which the fleet is not shrunk: the load is rising and will want the
// workers back. It is above the noise of a rate measured over 30 s.
const riseTolerance = 0.05

// backlogAge is how long the oldest job must have waited before the
// backlog's own rate — the jobs waiting over that wait, since every one of
// them arrived within it — counts as an arrival rate. A rate averaged over
// a window is slow to see a sudden rise (a third of a step after 10 s of a
// 30 s window); the backlog sees it at once. Below a few seconds of wait the
// ratio is noise.
const backlogAge = 3 * time.Second

// Decide returns the fleet size for the observation. It counts in job slots
// (a worker has Concurrency of them) and slot-seconds of work, per queue
// then summed:
//
//	rate   = arrival rate over the window, or the waiting jobs over the
//	         oldest one's wait when that is higher and ≥ 3 s
//	load   = Σ rate × mean job time             busy slots, by Little's law
//	spare  = Headroom × √load                   for the randomness of arrivals
//	work   = Σ waiting jobs × mean job time, plus what piles up until the
//	         workers ordered are up: (load − slots up) × Startup
//	drain  = work / TargetLatency               slots that clear it in time
//	need   = max(load + max(spare, drain), running jobs) / Concurrency
//
// The spare slots drain a small backlog; a larger one gets its own. The
// fleet grows to ⌈need⌉ at once, counting workers still starting. It
// shrinks only to ⌈need + 10 %⌉ at the highest need of the last DownWindow,
// only when that is more than 10 % below the fleet, not while the arrivals
// have grown by more than 5 % within that window, and by at most DownStep
// workers a decision.
func (p Policy) Decide(s *State, o Observation) Decision {
	if s.jobTime == nil {
		s.jobTime = map[string]time.Duration{}
	}
	conc := float64(p.Concurrency)
	var load, work, running float64
	var ready int
	var oldest time.Duration
	for _, q := range o.Queues {
		jt := q.MeanJobTime
		if jt > 0 {
			s.jobTime[q.Queue] = jt
		} else if jt = s.jobTime[q.Queue]; jt <= 0 {
			jt = p.DefaultJobTime
		}
		rate := q.ArrivalRate
		if q.Ready > 0 && q.OldestAge >= backlogAge {
			rate = max(rate, float64(q.Ready)/q.OldestAge.Seconds())
		}
		load += rate * jt.Seconds()
		work += float64(q.Ready) * jt.Seconds()
		running += float64(q.Running)
		ready += q.Ready
		oldest = max(oldest, q.OldestAge)
	}
	up := float64(o.Current) * conc
	projected := work + max(0, load-up)*p.Startup.Seconds()
	drain := projected / p.TargetLatency.Seconds()
	spare := p.Headroom * math.Sqrt(load)
	need := max(load+max(spare, drain), running) / conc
	figures := fmt.Sprintf("arrivals keep %.1f slots busy (+%.1f spare), %d waiting (%.0f slot-s of work, %.0f when ordered workers are up: %.1f slots drain it in %v), %d running, oldest waiting %v: need %.2f workers of %d slots",
		load, spare, ready, work, projected, drain, p.TargetLatency, int(running), oldest.Round(100*time.Millisecond), need, p.Concurrency)

	have := o.Current + o.Starting
	idle := ready == 0 && running == 0 && load == 0
	switch {
	case !idle:
		s.idleFrom = time.Time{}
	case s.idleFrom.IsZero():
		s.idleFrom = o.At
	}
	// With Min 0 the fleet keeps one worker until the queues have been idle
	// for IdleAfter, comes back from zero on the first job, and stays at
	// zero while idle: no worker is ordered for queues with nothing to do.
	toZero := p.Min == 0 && idle && o.At.Sub(s.idleFrom) >= p.IdleAfter
	floor := p.Min
	if floor == 0 && !toZero && (!idle || have > 0) {
		floor = 1
	}
	bound := func(n float64) int { return min(max(int(math.Ceil(n-1e-9)), floor), p.Max) }
	want := bound(need)

	if len(s.recs) == 0 {
		// A fresh state (a scheduler that just started, or just became the
		// leader) takes the fleet it finds as a recommendation: it does not
		// shrink it before a window has passed.
		s.recs = append(s.recs, rec{o.At, have, load})
	}
	s.recs = append(s.recs, rec{o.At, bound(need * (1 + downMargin)), load})
	cut := 0
	for cut < len(s.recs) && o.At.Sub(s.recs[cut].at) > p.DownWindow {
		cut++
	}
	s.recs = s.recs[cut:]

	d := Decision{Desired: have, Need: need, Direction: "hold"}
	switch {
	case want > have:
		d.Desired, d.Direction = want, "up"
		d.Reason = fmt.Sprintf("scale up from %d to %d: %s", have, want, figures)
		return d
	case want == have:
		d.Reason = "hold: " + figures
		return d
	case toZero:
		d.Desired, d.Direction = 0, "down"
		d.Reason = fmt.Sprintf("scale down from %d to 0: idle for %v", have, p.IdleAfter)
		return d
	}
	stable := 0
	for _, r := range s.recs {
		stable = max(stable, r.n)
	}
	if first := s.recs[0]; load > first.load*(1+riseTolerance) && load-first.load >= 1 {
		d.Reason = fmt.Sprintf("hold (arrivals rising: %.1f busy slots now, %.1f %v ago): %s", load, first.load, o.At.Sub(first.at).Round(time.Second), figures)
		return d
	}
	if float64(stable) >= float64(have)*(1-downTolerance) {
		d.Reason = fmt.Sprintf("hold (%d with %.0f%% over the highest need of the last %v, within %.0f%% of %d): %s", stable, downMargin*100, p.DownWindow, downTolerance*100, have, figures)
		return d
	}
	next := max(stable, have-p.DownStep)
	d.Desired, d.Direction = next, "down"
	d.Reason = fmt.Sprintf("scale down from %d to %d (%d with %.0f%% over the highest need of the last %v; at most %d a step): %s", have, next, stable, downMargin*100, p.DownWindow, p.DownStep, figures)
	return d
}

// String describes the policy's settings on one line, for logs.
func (p Policy) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "min %d, max %d, every %v, %d jobs per worker, drain within %v, spare %g×√busy slots, down after %v by at most %d, ",
		p.Min, p.Max, p.Interval, p.Concurrency, p.TargetLatency, p.Headroom, p.DownWindow, p.DownStep)
	fmt.Fprintf(&b, "to zero after %v idle, startup %v, default job time %v", p.IdleAfter, p.Startup, p.DefaultJobTime)
	return b.String()
}
