package autoscale

import (
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

func obs(d time.Duration, current, starting int, qs ...QueueLoad) Observation {
	return Observation{At: at(d), Current: current, Starting: starting, Queues: qs}
}

func TestDecideSizing(t *testing.T) {
	t.Parallel()
	p := DefaultPolicy() // 10 slots a worker, headroom 1.1, drain within 40s, startup 10s
	for _, tc := range []struct {
		name      string
		o         Observation
		want      int
		direction string
		needAbout float64
	}{
		{"little's law with square-root spare: 40 busy slots + 1.1×√40",
			obs(0, 4, 0, QueueLoad{Queue: "q", ArrivalRate: 40, MeanJobTime: time.Second}), 5, "up", 4.70},
		{"job time from the figures: 10/s of 3s",
			obs(0, 4, 0, QueueLoad{Queue: "q", ArrivalRate: 10, MeanJobTime: 3 * time.Second}), 4, "hold", 3.60},
		{"backlog drained within the target latency, spare slots counted toward it",
			obs(0, 10, 0, QueueLoad{Queue: "q", Ready: 4000, ArrivalRate: 40, MeanJobTime: time.Second}), 14, "up", 14},
		{"the backlog grows while ordered workers start",
			obs(0, 1, 0, QueueLoad{Queue: "q", Ready: 100, ArrivalRate: 50, MeanJobTime: time.Second}), 7, "up", 6.25},
		{"what piles up while 1 worker is up and 4 start: 300 slot-s, drained in 40 s",
			obs(0, 1, 0, QueueLoad{Queue: "q", ArrivalRate: 40, MeanJobTime: time.Second}), 5, "up", 4.75},
		{"workers still starting are counted, not ordered twice",
			obs(0, 1, 4, QueueLoad{Queue: "q", ArrivalRate: 40, MeanJobTime: time.Second}), 5, "hold", 4.75},
		{"a sudden rise read from the backlog: 300 waiting for 7.5s is 40/s, though the 30s rate says 13/s",
			obs(0, 1, 0, QueueLoad{Queue: "q", Ready: 300, ArrivalRate: 13, MeanJobTime: time.Second, OldestAge: 7500 * time.Millisecond}), 6, "up", 5.5},
		{"a wait under 3s is not read as a rate",
			obs(0, 1, 0, QueueLoad{Queue: "q", Ready: 50, ArrivalRate: 10, MeanJobTime: time.Second, OldestAge: time.Second}), 2, "up", 1.35},
		{"running jobs keep their slots",
			obs(0, 3, 0, QueueLoad{Queue: "q", Running: 30, MeanJobTime: time.Second}), 3, "hold", 3},
		{"queues add up, each with its job time",
			obs(0, 4, 0, QueueLoad{Queue: "a", ArrivalRate: 20, MeanJobTime: time.Second}, QueueLoad{Queue: "b", ArrivalRate: 5, MeanJobTime: 4 * time.Second}), 5, "up", 4.70},
		{"at most Max", obs(0, 1, 0, QueueLoad{Queue: "q", Ready: 1e6, MeanJobTime: time.Second}), 20, "up", 2500},
		{"at least Min", obs(0, 0, 0), 1, "up", 0},
	} {
		var s State
		d := p.Decide(&s, tc.o)
		if d.Desired != tc.want || d.Direction != tc.direction || d.Need < tc.needAbout-0.01 || d.Need > tc.needAbout+0.01 {
			t.Errorf("%s: got %d %s need %.2f, want %d %s need %.2f\n%s", tc.name, d.Desired, d.Direction, d.Need, tc.want, tc.direction, tc.needAbout, d.Reason)
		}
		if d.Reason == "" {
			t.Errorf("%s: no reason", tc.name)
		}
	}
}

func TestDecideDefaultAndRememberedJobTime(t *testing.T) {
	t.Parallel()
	p := DefaultPolicy()
	tick := p.Interval
	var s State
	// No job finished yet: the default job time (1s) stands in: 80 busy
	// slots and 9.8 spare need 9 workers; a fresh state keeps the 10 it finds.
	d := p.Decide(&s, obs(0, 10, 0, QueueLoad{Queue: "q", ArrivalRate: 80}))
	if d.Desired != 10 || d.Need < 8.9 || d.Need > 9.1 {
		t.Fatalf("default job time: %d need %.2f\n%s", d.Desired, d.Need, d.Reason)
	}
	// 0.5s measured, then no job finishes within a window: 0.5s is kept.
	p.Decide(&s, obs(tick, 10, 0, QueueLoad{Queue: "q", ArrivalRate: 80, MeanJobTime: 500 * time.Millisecond}))
	d = p.Decide(&s, obs(2*tick, 10, 0, QueueLoad{Queue: "q", ArrivalRate: 80}))
	if d.Need > 5 {
		t.Fatalf("remembered job time: need %.2f\n%s", d.Need, d.Reason)
	}
}

func TestDecideScalesDownSlowly(t *testing.T) {
	t.Parallel()
	p := DefaultPolicy() // window 2m30s, step 1
	tick := p.Interval
	var s State
	busy := QueueLoad{Queue: "q", ArrivalRate: 150, MeanJobTime: time.Second}
	calm := QueueLoad{Queue: "q", ArrivalRate: 20, MeanJobTime: time.Second}
	if d := p.Decide(&s, obs(0, 17, 0, busy)); d.Desired != 17 {
		t.Fatalf("up: %d\n%s", d.Desired, d.Reason)
	}
	// The load falls to what 3 workers handle; for the window the fleet holds.
	for at := tick; at <= p.DownWindow; at += tick {
		if d := p.Decide(&s, obs(at, 17, 0, calm)); d.Desired != 17 || d.Direction != "hold" {
			t.Fatalf("at %v within the window: %d %s", at, d.Desired, d.Reason)
		}
	}
	// Then it shrinks by one worker a decision, down to what is needed.
	n, steps := 17, 0
	for at := p.DownWindow + tick; n > 3; at += tick {
		d := p.Decide(&s, obs(at, n, 0, calm))
		if d.Direction != "down" || n-d.Desired != 1 || d.Desired < 3 {
			t.Fatalf("at %v from %d: %d %s", at, n, d.Desired, d.Reason)
		}
		n = d.Desired
		steps++
	}
	if steps != 14 {
		t.Fatalf("%d steps from 17 to 3, want 14", steps)
	}
}

func TestDecideHysteresis(t *testing.T) {
	t.Parallel()
	p := DefaultPolicy()
	tick := p.Interval
	// 40 busy slots and 7 spare need 4.7 workers: a fleet of 5 is enough and
	// does not grow ...
	var s5 State
	for at := time.Duration(0); at <= 2*p.DownWindow; at += tick {
		if d := p.Decide(&s5, obs(at, 5, 0, QueueLoad{Queue: "q", ArrivalRate: 40, MeanJobTime: time.Second})); d.Desired != 5 {
			t.Fatalf("5 at %v: %d %s", at, d.Desired, d.Reason)
		}
	}
	// ... and a fleet of 6, left by a burst, is not shrunk to 5 either: 5 is
	// not 10 % over the need. A need wavering around 5 does not flap.
	var s6 State
	for at := time.Duration(0); at <= 2*p.DownWindow; at += tick {
		rate := 40 + 3*float64(at/tick%2) // 40, 43, 40, 43, ...
		d := p.Decide(&s6, obs(at, 6, 0, QueueLoad{Queue: "q", ArrivalRate: rate, MeanJobTime: time.Second}))
		if d.Desired != 6 {
			t.Fatalf("6 at %v: %d %s", at, d.Desired, d.Reason)
		}
	}
	// Within 10 % of the fleet nothing is shed: 72 busy slots need 8.1
	// workers, 9 with the margin, and 9 is within 10 % of 10.
	var s10 State
	var d Decision
	for at := time.Duration(0); at <= 2*p.DownWindow; at += tick {
		d = p.Decide(&s10, obs(at, 10, 0, QueueLoad{Queue: "q", ArrivalRate: 72, MeanJobTime: time.Second}))
		if d.Desired != 10 {
			t.Fatalf("10 at %v: %d %s", at, d.Desired, d.Reason)
		}
	}
	if !strings.Contains(d.Reason, "within 10%") {
		t.Fatalf("tolerance: %s", d.Reason)
	}
	// Below both, the fleet shrinks toward the need and its margin.
	var s12 State
	p.Decide(&s12, obs(0, 12, 0, QueueLoad{Queue: "q", ArrivalRate: 72, MeanJobTime: time.Second}))
	d = p.Decide(&s12, obs(p.DownWindow+tick, 12, 0, QueueLoad{Queue: "q", ArrivalRate: 72, MeanJobTime: time.Second}))
	if d.Desired != 11 || d.Direction != "down" {
		t.Fatalf("12 for a need of 8.1: %d %s", d.Desired, d.Reason)
	}
}

func TestDecideHoldsWhileArrivalsRise(t *testing.T) {
	t.Parallel()
	p := DefaultPolicy()
	tick := p.Interval
	var s State
	// An early backlog made the fleet large; the load is still climbing, by
	// 0.05 jobs/s every second.
	p.Decide(&s, obs(0, 1, 0, QueueLoad{Queue: "q", Ready: 6000, ArrivalRate: 40, MeanJobTime: time.Second}))
	var d Decision
	for at, rate := tick, 40.0; at <= 5*time.Minute; at, rate = at+tick, rate+0.05*tick.Seconds() {
		d = p.Decide(&s, obs(at, 20, 0, QueueLoad{Queue: "q", ArrivalRate: rate, MeanJobTime: time.Second}))
		if d.Desired != 20 {
			t.Fatalf("at %v (rate %.1f): %d %s", at, rate, d.Desired, d.Reason)
		}
	}
	if !strings.Contains(d.Reason, "arrivals rising") {
		t.Fatalf("reason: %s", d.Reason)
	}
}

func TestDecideScalesToZeroAndBack(t *testing.T) {
	t.Parallel()
	p := DefaultPolicy()
	p.Min = 0
	tick := p.Interval
	var s State
	idle := QueueLoad{Queue: "q"}
	if d := p.Decide(&s, obs(0, 3, 0, QueueLoad{Queue: "q", ArrivalRate: 20, MeanJobTime: time.Second})); d.Desired != 3 {
		t.Fatalf("busy: %d %s", d.Desired, d.Reason)
	}
	// Idle for less than IdleAfter: down toward one worker, never zero.
	n := 3
	for at := tick; at < p.IdleAfter+tick; at += tick {
		d := p.Decide(&s, obs(at, n, 0, idle))
		if d.Desired < 1 {
			t.Fatalf("at %v: zero before the idle period: %s", at, d.Reason)
		}
		n = d.Desired
	}
	if n != 1 {
		t.Fatalf("after the window: %d workers, want 1", n)
	}
	// Idle since the first idle tick.
	d := p.Decide(&s, obs(p.IdleAfter+tick, 1, 0, idle))
	if d.Desired != 0 || d.Direction != "down" {
		t.Fatalf("idle for %v: %d %s", p.IdleAfter, d.Desired, d.Reason)
	}
	// At zero and still idle, it stays at zero.
	if d := p.Decide(&s, obs(p.IdleAfter+2*tick, 0, 0, idle)); d.Desired != 0 || d.Direction != "hold" {
		t.Fatalf("idle at zero: %d %s", d.Desired, d.Reason)
	}
	// The first job brings one back at once.
	d = p.Decide(&s, obs(p.IdleAfter+3*tick, 0, 0, QueueLoad{Queue: "q", Ready: 1, OldestAge: time.Second}))
	if d.Desired != 1 || d.Direction != "up" {
		t.Fatalf("first job: %d %s", d.Desired, d.Reason)
	}
	// A fresh state that finds the fleet at zero and the queues idle does
	// not order a worker for them.
	var s0 State
	if d := p.Decide(&s0, obs(0, 0, 0, idle)); d.Desired != 0 {
		t.Fatalf("fresh at zero: %d %s", d.Desired, d.Reason)
	}
	// With Min 1 the fleet never goes to zero.
	var s1 State
	p.Min = 1
	for at := time.Duration(0); at <= 2*p.IdleAfter; at += tick {
		if d := p.Decide(&s1, obs(at, 1, 0, idle)); d.Desired != 1 {
			t.Fatalf("min 1 at %v: %d", at, d.Desired)
		}
	}
}

func TestPolicyValidate(t *testing.T) {
	t.Parallel()
	if err := DefaultPolicy().Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		change func(*Policy)
		want   string
	}{
		{func(p *Policy) { p.Min = -1 }, "min"},
		{func(p *Policy) { p.Min, p.Max = 5, 4 }, "max 4 is below min 5"},
		{func(p *Policy) { p.Max = 0; p.Min = 0 }, "max 0"},
		{func(p *Policy) { p.Interval = time.Millisecond }, "interval"},
		{func(p *Policy) { p.Concurrency = 0 }, "concurrency"},
		{func(p *Policy) { p.TargetLatency = 0 }, "target latency"},
		{func(p *Policy) { p.Headroom = -1 }, "headroom"},
		{func(p *Policy) { p.DownStep = 0 }, "down step"},
		{func(p *Policy) { p.DefaultJobTime = 0 }, "default job time"},
	} {
		p := DefaultPolicy()
		tc.change(&p)
		if err := p.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want %q", err, tc.want)
		}
	}
}

func TestHPAFormula(t *testing.T) {
	t.Parallel()
	jobs := func(d time.Duration, current, starting, n int) Observation {
		return obs(d, current, starting, QueueLoad{Queue: "q", Ready: n})
	}
	h := NewHPA(0, 20, 10)
	if h.Min != 1 {
		t.Fatalf("min %d: the HPA keeps at least one replica", h.Min)
	}
	// ceil(current × metric / target): 4 replicas, 75 jobs → 7.5 a replica
	// against 10 → ratio 1.875 → 8.
	if n := h.Decide(jobs(0, 4, 0, 75)); n != 8 {
		t.Fatalf("up: %d", n)
	}
	// Starting replicas count in current (spec.replicas): 82 jobs on 8 is
	// within the 10 % tolerance.
	if n := h.Decide(jobs(15*time.Second, 2, 6, 82)); n != 8 {
		t.Fatalf("tolerance: %d", n)
	}
	// Down only to the highest recommendation of the last 300 s.
	if n := h.Decide(jobs(30*time.Second, 8, 0, 20)); n != 8 {
		t.Fatalf("stabilised: %d", n)
	}
	if n := h.Decide(jobs(316*time.Second, 8, 0, 20)); n != 2 {
		t.Fatalf("after the window: %d", n)
	}
	if n := h.Decide(jobs(331*time.Second, 2, 0, 10_000)); n != 20 {
		t.Fatalf("max: %d", n)
	}
}
