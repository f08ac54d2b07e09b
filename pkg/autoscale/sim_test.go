package autoscale

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestPolicyBeatsHPA is the proof of docs/AUTOSCALING.md: on every trace the
// policy, with its defaults, uses no more worker-seconds than the HPA
// baseline, and has a lower p95 wait and fewer direction reversals — or, for
// those two, ties with it at the least possible value (a p95 of zero; the
// reversals the trace's shape needs). It holds with the default Min 1 and
// with Min 0, where the fleet scales to zero (the baseline cannot).
func TestPolicyBeatsHPA(t *testing.T) {
	t.Parallel()
	for _, minimum := range []int{1, 0} {
		t.Run(fmt.Sprintf("min %d", minimum), func(t *testing.T) {
			t.Parallel()
			p := DefaultPolicy()
			p.Min = minimum
			cs := Compare(DefaultSimConfig(), p, Traces())
			var table bytes.Buffer
			if err := WriteTable(&table, cs); err != nil {
				t.Fatal(err)
			}
			t.Logf("\n%s", table.String())
			for _, c := range cs {
				for cell, v := range map[string]Verdict{"worker-seconds": c.WorkerSecond, "p95 wait": c.P95, "reversals": c.Flapping} {
					if !v.Met() {
						t.Errorf("%s: %s: policy %v, HPA %v", c.Trace.Name, cell, c.Policy, c.HPA)
					}
				}
				if c.Policy.Jobs != c.HPA.Jobs || c.Policy.Jobs == 0 {
					t.Errorf("%s: the two runs saw different jobs: %d and %d", c.Trace.Name, c.Policy.Jobs, c.HPA.Jobs)
				}
			}
		})
	}
}

// TestSimulatedScaleToZero: with Min 0 a trace that starts idle starts with no
// worker under both rules; the policy stays at zero until the burst, comes
// back for it and returns to zero after the idle period, while the baseline
// keeps its one replica.
func TestSimulatedScaleToZero(t *testing.T) {
	t.Parallel()
	p := DefaultPolicy()
	p.Min = 0
	burst := Traces()[5]
	c := Compare(DefaultSimConfig(), p, []Trace{burst})[0]
	log := c.Policy.Log
	if len(log) < 2 || log[0].From != 0 || log[0].At < 20*time.Minute || log[len(log)-1].To != 0 {
		t.Fatalf("policy: %v", log)
	}
	if c.HPA.Log[0] != (Change{At: 0, From: 0, To: 1}) {
		t.Fatalf("baseline: %v", c.HPA.Log)
	}
	// A trace with load from the start begins with one worker whatever Min.
	steady := Compare(DefaultSimConfig(), p, Traces()[:1])[0]
	if steady.Policy.Log[0].From != 1 {
		t.Fatalf("steady: %v", steady.Policy.Log)
	}
}

func TestSimulationIsDeterministic(t *testing.T) {
	t.Parallel()
	tr := Traces()[2] // spike
	a := Simulate(DefaultSimConfig(), tr, &PolicyDecider{Policy: DefaultPolicy()})
	b := Simulate(DefaultSimConfig(), tr, &PolicyDecider{Policy: DefaultPolicy()})
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("two runs differ:\n%v\n%v", a, b)
	}
	cfg := DefaultSimConfig()
	cfg.Seed = 2
	if c := Simulate(cfg, tr, &PolicyDecider{Policy: DefaultPolicy()}); c.Jobs == a.Jobs && c.P99Wait == a.P99Wait {
		t.Fatalf("another seed gave the same run: %v", c)
	}
}

// fixed is a decider that always wants n workers.
type fixed int

func (f fixed) Decide(Observation) int { return int(f) }
func (fixed) Interval() time.Duration  { return time.Second }

func TestSimulatorAccounting(t *testing.T) {
	t.Parallel()
	// 4 workers of 10 slots under 20 jobs/s of 1 s: never a wait; 4 workers
	// for the whole 10 minutes, the first ordered at 0 and up after 10 s.
	cfg := DefaultSimConfig()
	cfg.Initial = 4
	tr := Trace{Name: "flat", Duration: 10 * time.Minute, JobTime: time.Second, Rate: func(time.Duration) float64 { return 20 }}
	r := Simulate(cfg, tr, fixed(4))
	if r.Jobs < 11_500 || r.Jobs > 12_500 {
		t.Errorf("jobs %d, want about 12000", r.Jobs)
	}
	if r.MaxWait != 0 || r.Changes != 0 || r.PeakWorkers != 4 {
		t.Errorf("got %v", r)
	}
	if ws := r.WorkerSeconds; ws < 4*600 || ws > 4*602 {
		t.Errorf("worker-seconds %.0f, want 2400", ws)
	}
	// One worker for 20 jobs/s: the queue grows all along, and the last job
	// starts long after the trace ends.
	cfg.Initial = 1
	r = Simulate(cfg, tr, fixed(1))
	if r.P95Wait < 4*time.Minute || r.WorkerSeconds < 1100 {
		t.Errorf("overloaded: %v", r)
	}
	// A worker told to stop finishes its running jobs first: worker-seconds
	// count until the last one ends.
	short := Trace{Name: "short", Duration: 5 * time.Second, JobTime: 30 * time.Second, Rate: func(time.Duration) float64 { return 1 }}
	r = Simulate(DefaultSimConfig(), short, decideFunc(func(o Observation) int {
		if o.At.Sub(time.Unix(0, 0)) < 6*time.Second {
			return 1
		}
		return 0
	}))
	if r.Jobs == 0 || r.MaxWait != 0 || r.WorkerSeconds < 30 || r.WorkerSeconds > 45 {
		t.Errorf("draining worker: %v", r)
	}
	// A decider that never runs the jobs: the simulation gives up.
	r = Simulate(DefaultSimConfig(), short, fixed(0))
	if r.Unstarted == 0 {
		t.Errorf("no workers: %v", r)
	}
}

type decideFunc func(Observation) int

func (f decideFunc) Decide(o Observation) int { return f(o) }
func (decideFunc) Interval() time.Duration    { return time.Second }

func TestTableMarkdown(t *testing.T) {
	t.Parallel()
	cs := Compare(DefaultSimConfig(), DefaultPolicy(), Traces()[:1])
	var b bytes.Buffer
	if err := WriteTable(&b, cs); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| steady | policy |", "| steady | HPA |", "worker-s (goal: no worse)"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}
