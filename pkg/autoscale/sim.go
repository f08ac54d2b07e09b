package autoscale

import (
	"container/heap"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"
)

// Trace is a load pattern for the simulator: the arrival rate (jobs/s) at
// each moment, and the mean handler time of its jobs.
type Trace struct {
	Name     string
	Duration time.Duration
	Rate     func(t time.Duration) float64
	JobTime  time.Duration
	// MinReversals is the fewest changes of scaling direction any autoscaler
	// needs for this trace, starting from the fleet Compare gives it (one
	// worker, or none for a trace that starts idle under Min 0): 0 for load
	// that only grows, 1 for one burst, 2 per period of a wave after the
	// first rise. A tie at this number is the best possible result.
	MinReversals int
}

// Traces returns the load patterns docs/AUTOSCALING.md reports on.
func Traces() []Trace {
	const s = time.Second
	return []Trace{
		{Name: "steady", Duration: 30 * time.Minute, JobTime: s, Rate: func(time.Duration) float64 { return 40 }},
		{Name: "step", Duration: 30 * time.Minute, JobTime: s, Rate: func(t time.Duration) float64 {
			if t < 10*time.Minute {
				return 5
			}
			return 80
		}},
		{Name: "spike", Duration: 30 * time.Minute, JobTime: s, MinReversals: 1, Rate: func(t time.Duration) float64 {
			if t >= 10*time.Minute && t < 11*time.Minute {
				return 150
			}
			return 10
		}},
		{Name: "ramp", Duration: 30 * time.Minute, JobTime: s, Rate: func(t time.Duration) float64 {
			return 100 * t.Seconds() / (30 * 60)
		}},
		// Two periods of a wave between 5 and 75 jobs/s: up, down, up, down, up.
		{Name: "diurnal", Duration: 2 * time.Hour, JobTime: 2 * s, MinReversals: 4, Rate: func(t time.Duration) float64 {
			return 40 + 35*math.Sin(2*math.Pi*t.Seconds()/3600)
		}},
		{Name: "idle-then-burst", Duration: 40 * time.Minute, JobTime: 500 * time.Millisecond, MinReversals: 1, Rate: func(t time.Duration) float64 {
			if t >= 20*time.Minute && t < 20*time.Minute+10*time.Second {
				return 200 // 2,000 jobs in 10 s
			}
			return 0
		}},
	}
}

// Decider is one autoscaling rule under simulation.
type Decider interface {
	// Decide returns the number of workers wanted.
	Decide(o Observation) int
	// Interval is how often it decides.
	Interval() time.Duration
}

// PolicyDecider adapts a Policy to the simulator.
type PolicyDecider struct {
	Policy Policy
	state  State
}

// Decide implements Decider.
func (d *PolicyDecider) Decide(o Observation) int { return d.Policy.Decide(&d.state, o).Desired }

// Interval implements Decider.
func (d *PolicyDecider) Interval() time.Duration { return d.Policy.Interval }

// HPADecider adapts the HPA baseline to the simulator.
type HPADecider struct{ HPA *HPA }

// Decide implements Decider.
func (d HPADecider) Decide(o Observation) int { return d.HPA.Decide(o) }

// Interval implements Decider: the HPA's sync period.
func (d HPADecider) Interval() time.Duration { return d.HPA.SyncPeriod }

// SimConfig sets the simulated environment.
type SimConfig struct {
	// Startup is the time from ordering a worker to its taking jobs. It is
	// paid for: worker-seconds count from the order.
	Startup time.Duration
	// Concurrency is the number of jobs one worker runs at once.
	Concurrency int
	// Initial is the number of workers up at the start.
	Initial int
	// Window is the span the arrival and completion rates and the mean job
	// time are measured over, as the autoscaler reads them from Postgres.
	Window time.Duration
	// Seed makes the random arrivals and job times repeatable.
	Seed uint64
}

// DefaultSimConfig is the environment of docs/AUTOSCALING.md.
func DefaultSimConfig() SimConfig {
	return SimConfig{Startup: 10 * time.Second, Concurrency: 10, Initial: 1, Window: 30 * time.Second, Seed: 1}
}

// Result is what one simulated run measured.
type Result struct {
	Trace string
	Jobs  int
	// Waits from enqueue to start.
	P95Wait, P99Wait, MeanWait, MaxWait time.Duration
	// Drain is the longest stretch during which jobs were waiting in the
	// queue without a break: how long the worst backlog took to clear.
	Drain time.Duration
	// WorkerSeconds is the time workers existed, from their order until
	// they exited, starting and draining included.
	WorkerSeconds float64
	// Changes counts the decisions that changed the fleet size.
	Changes int
	// Reversals counts the changes whose direction differs from the
	// change before: up after down, or down after up (flapping).
	Reversals   int
	PeakWorkers int
	// Unstarted counts the jobs still waiting an hour after the trace's
	// end, when the simulation gives up; their waits are not counted.
	Unstarted int
	// Log lists the changes: time, from, to.
	Log []Change
}

// Change is one change of the fleet size in a simulation.
type Change struct {
	At       time.Duration
	From, To int
}

// String is the result on one line.
func (r Result) String() string {
	return fmt.Sprintf("%-16s jobs %6d  p95 %7v p99 %7v mean %7v max %7v  drain %7v  worker-s %6.0f  changes %3d  reversals %2d  peak %2d",
		r.Trace, r.Jobs, r.P95Wait, r.P99Wait, r.MeanWait, r.MaxWait, r.Drain, r.WorkerSeconds, r.Changes, r.Reversals, r.PeakWorkers)
}

// Simulate runs a trace against a decider and measures the outcome. It is an
// event simulation with its own clock: nothing sleeps, and the same
// configuration gives the same result.
//
// Jobs arrive as a Poisson process of the trace's rate, are taken oldest
// first by a free slot of a worker that is up (the least busy worker first,
// as a round-robin broker spreads them), and run for a job time drawn
// uniformly within ±25 % of the trace's. A worker ordered is up after
// Startup. A worker told to stop stops taking jobs, finishes those it runs
// and exits (the worker SDK's graceful shutdown); one still starting is
// cancelled at once. Fewer workers are removed starting with those still
// starting, then the least busy.
func Simulate(cfg SimConfig, tr Trace, d Decider) Result {
	// Two random streams, so that every decider sees the same jobs: the
	// arrival times, and the job times drawn in arrival order.
	s := &sim{cfg: cfg, tr: tr, res: Result{Trace: tr.Name},
		arrRng: rand.New(rand.NewPCG(cfg.Seed, 1)), jobRng: rand.New(rand.NewPCG(cfg.Seed, 2))}
	s.run(d)
	return s.res
}

// giveUpAfter bounds a simulation whose decider leaves jobs waiting.
const giveUpAfter = time.Hour

type simWorker struct {
	upAt     time.Duration
	up       bool
	draining bool
	gone     bool
	busy     int
}

type evKind int

// At one instant: completions free slots, then workers come up, then the
// decider looks.
const (
	evFinish evKind = iota
	evUp
	evTick
)

type event struct {
	at   time.Duration
	kind evKind
	w    *simWorker
	took time.Duration // job time, for evFinish
	seq  int
}

type events []event

func (e events) Len() int { return len(e) }
func (e events) Less(i, j int) bool {
	if e[i].at != e[j].at {
		return e[i].at < e[j].at
	}
	if e[i].kind != e[j].kind {
		return e[i].kind < e[j].kind
	}
	return e[i].seq < e[j].seq
}
func (e events) Swap(i, j int) { e[i], e[j] = e[j], e[i] }
func (e *events) Push(x any)   { *e = append(*e, x.(event)) }
func (e *events) Pop() any {
	old := *e
	x := old[len(old)-1]
	*e = old[:len(old)-1]
	return x
}

type sim struct {
	cfg    SimConfig
	tr     Trace
	arrRng *rand.Rand
	jobRng *rand.Rand
	res    Result

	now     time.Duration
	evs     events
	seq     int
	workers []*simWorker
	queue   []waiting // oldest first
	waits   []time.Duration

	arrivals []time.Duration // within the window
	finished []finish        // within the window

	lastAcct    time.Duration // worker-seconds are counted up to here
	backlogFrom time.Duration // when the queue last became non-empty
}

type finish struct{ at, took time.Duration }

type waiting struct{ at, took time.Duration }

func (s *sim) push(e event) {
	s.seq++
	e.seq = s.seq
	heap.Push(&s.evs, e)
}

func (s *sim) run(d Decider) {
	for range s.cfg.Initial {
		s.workers = append(s.workers, &simWorker{up: true})
	}
	desired, lastDir := s.cfg.Initial, 0
	s.push(event{at: 0, kind: evTick})
	// Arrivals: the cumulative rate is integrated in small steps; a job
	// arrives each time it passes the next threshold, the thresholds being
	// spaced by exponential draws (a Poisson process).
	const step = 10 * time.Millisecond
	var (
		stepStart time.Duration
		cum       float64 // integral of the rate up to stepStart
		next      = s.arrRng.ExpFloat64()
	)
	nextArrival := func() (time.Duration, bool) {
		for stepStart < s.tr.Duration {
			r := s.tr.Rate(stepStart)
			if cum+r*step.Seconds() >= next {
				at := stepStart + time.Duration((next-cum)/r*float64(time.Second))
				return at, true
			}
			cum += r * step.Seconds()
			stepStart += step
		}
		return 0, false
	}
	arrival, more := nextArrival()
	for {
		var e event
		haveEv := len(s.evs) > 0
		if haveEv {
			e = s.evs[0]
		}
		if more && (!haveEv || arrival < e.at || (arrival == e.at && e.kind == evTick)) {
			s.advance(arrival)
			s.arrive()
			next += s.arrRng.ExpFloat64()
			arrival, more = nextArrival()
			continue
		}
		if !haveEv {
			break
		}
		heap.Pop(&s.evs)
		s.advance(e.at)
		switch e.kind {
		case evFinish:
			e.w.busy--
			s.finished = append(s.finished, finish{s.now, e.took})
			if e.w.draining && e.w.busy == 0 {
				e.w.gone = true
			}
			s.dispatch()
		case evUp:
			if !e.w.gone {
				e.w.up = true
				s.dispatch()
			}
		case evTick:
			if s.now >= s.tr.Duration && !more && len(s.queue) == 0 && s.running() == 0 {
				continue // the trace is over and the work done: stop ticking
			}
			if s.now >= s.tr.Duration+giveUpAfter {
				s.res.Unstarted = len(s.queue)
				continue // a decider that never drains the queue
			}
			want := d.Decide(s.observe())
			if want != desired {
				s.res.Changes++
				s.res.Log = append(s.res.Log, Change{At: s.now, From: desired, To: want})
				dir := 1
				if want < desired {
					dir = -1
				}
				if lastDir != 0 && dir != lastDir {
					s.res.Reversals++
				}
				lastDir, desired = dir, want
			}
			s.resize(want)
			s.push(event{at: s.now + d.Interval(), kind: evTick})
		}
	}
	s.summarise()
}

// advance moves the clock, counting worker-seconds.
func (s *sim) advance(t time.Duration) {
	alive := 0
	for _, w := range s.workers {
		if !w.gone {
			alive++
		}
	}
	s.res.WorkerSeconds += float64(alive) * (t - s.lastAcct).Seconds()
	s.res.PeakWorkers = max(s.res.PeakWorkers, alive)
	s.lastAcct, s.now = t, t
}

func (s *sim) arrive() {
	s.res.Jobs++
	if len(s.queue) == 0 {
		s.backlogFrom = s.now
	}
	took := time.Duration(float64(s.tr.JobTime) * (0.75 + 0.5*s.jobRng.Float64()))
	s.queue = append(s.queue, waiting{s.now, took})
	s.arrivals = append(s.arrivals, s.now)
	s.dispatch()
}

// dispatch starts waiting jobs on free slots, the least busy worker first.
func (s *sim) dispatch() {
	for len(s.queue) > 0 {
		var best *simWorker
		for _, w := range s.workers {
			if w.up && !w.draining && !w.gone && w.busy < s.cfg.Concurrency && (best == nil || w.busy < best.busy) {
				best = w
			}
		}
		if best == nil {
			return
		}
		best.busy++
		j := s.queue[0]
		s.waits = append(s.waits, s.now-j.at)
		s.queue = s.queue[1:]
		if len(s.queue) == 0 {
			s.res.Drain = max(s.res.Drain, s.now-s.backlogFrom)
		}
		s.push(event{at: s.now + j.took, kind: evFinish, w: best, took: j.took})
	}
}

func (s *sim) running() int {
	n := 0
	for _, w := range s.workers {
		n += w.busy
	}
	return n
}

// observe gathers what the autoscaler would read at this moment.
func (s *sim) observe() Observation {
	from := s.now - s.cfg.Window
	s.arrivals = trimBefore(s.arrivals, from)
	i := 0
	for i < len(s.finished) && s.finished[i].at < from {
		i++
	}
	s.finished = s.finished[i:]
	// Rates over the whole window, as the store counts them: in the first
	// window they start low, since nothing arrived before the start.
	span := s.cfg.Window.Seconds()
	q := QueueLoad{Queue: "default", Ready: len(s.queue), Running: s.running(),
		ArrivalRate: float64(len(s.arrivals)) / span, CompletionRate: float64(len(s.finished)) / span}
	if len(s.queue) > 0 {
		q.OldestAge = s.now - s.queue[0].at
	}
	if len(s.finished) > 0 {
		var sum time.Duration
		for _, f := range s.finished {
			sum += f.took
		}
		q.MeanJobTime = sum / time.Duration(len(s.finished))
	}
	o := Observation{At: time.Unix(0, 0).Add(s.now), Queues: []QueueLoad{q}}
	for _, w := range s.workers {
		switch {
		case w.gone || w.draining:
		case w.up:
			o.Current++
		default:
			o.Starting++
		}
	}
	return o
}

// resize orders or stops workers to reach want.
func (s *sim) resize(want int) {
	have := 0
	for _, w := range s.workers {
		if !w.gone && !w.draining {
			have++
		}
	}
	for ; have < want; have++ {
		w := &simWorker{upAt: s.now + s.cfg.Startup}
		s.workers = append(s.workers, w)
		s.push(event{at: w.upAt, kind: evUp, w: w})
	}
	for ; have > want; have-- {
		var victim *simWorker
		for _, w := range s.workers {
			if w.gone || w.draining {
				continue
			}
			if victim == nil || (victim.up && !w.up) || (victim.up == w.up && w.busy < victim.busy) {
				victim = w
			}
		}
		victim.draining = true
		if !victim.up || victim.busy == 0 {
			victim.gone = true
		}
	}
	// Forget the workers that are gone.
	s.workers = slices.DeleteFunc(s.workers, func(w *simWorker) bool { return w.gone })
}

func (s *sim) summarise() {
	w := s.waits
	slices.Sort(w)
	if len(w) == 0 {
		return
	}
	pct := func(p int) time.Duration { return w[min(len(w)-1, len(w)*p/100)].Round(time.Millisecond) }
	s.res.P95Wait, s.res.P99Wait = pct(95), pct(99)
	s.res.MaxWait = w[len(w)-1].Round(time.Millisecond)
	var sum time.Duration
	for _, x := range w {
		sum += x
	}
	s.res.MeanWait = (sum / time.Duration(len(w))).Round(time.Millisecond)
	s.res.Drain = s.res.Drain.Round(time.Millisecond)
}

func trimBefore(ts []time.Duration, from time.Duration) []time.Duration {
	i := 0
	for i < len(ts) && ts[i] < from {
		i++
	}
	return ts[i:]
}
