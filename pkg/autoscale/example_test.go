package autoscale_test

import (
	"fmt"
	"time"

	"github.com/warrenhq/warren/pkg/autoscale"
)

// A queue receives 40 jobs a second that take half a second each, and 1,200
// jobs wait; two workers of 10 slots are up. The policy orders enough
// workers to serve the arrivals and drain the backlog within 40 s.
func ExamplePolicy_Decide() {
	p := autoscale.DefaultPolicy()
	var s autoscale.State
	d := p.Decide(&s, autoscale.Observation{
		At:      time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC),
		Current: 2,
		Queues: []autoscale.QueueLoad{{
			Queue: "default", Ready: 1200, Running: 20,
			ArrivalRate: 40, MeanJobTime: 500 * time.Millisecond,
		}},
	})
	fmt.Println(d.Direction, d.Desired)
	fmt.Printf("need %.2f workers\n", d.Need)
	// Output:
	// up 4
	// need 3.50 workers
}

// The simulator compares the policy with the HPA baseline on a trace.
func ExampleCompare() {
	spike := autoscale.Traces()[2]
	c := autoscale.Compare(autoscale.DefaultSimConfig(), autoscale.DefaultPolicy(), []autoscale.Trace{spike})[0]
	fmt.Println(c.Trace.Name, "worker-seconds:", c.WorkerSecond, "p95 wait:", c.P95, "reversals:", c.Flapping)
	// Output:
	// spike worker-seconds: better p95 wait: better reversals: better
}
