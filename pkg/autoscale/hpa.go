package autoscale

import (
	"math"
	"time"
)

// HPA is the baseline the policy is measured against: the Kubernetes
// Horizontal Pod Autoscaler's algorithm with its defaults, on a queue
// metric.
//
//   - The metric is the jobs in the system (waiting plus running, over every
//     queue) with an average-value target of one worker's concurrency per
//     replica, so desired = ceil(current × metric / (target × current)) =
//     ceil(jobs / concurrency).
//   - current is the replicas ordered (the scale subresource's
//     spec.replicas), starting ones included, as the HPA controller uses.
//   - Tolerance 0.1: no change while the usage ratio is within 10 % of 1.
//   - Scale-down stabilisation 300 s: the highest recommendation of the
//     last five minutes; no scale-up stabilisation.
//   - Sync period 15 s, at least one replica (the HPA cannot scale to zero).
//
// The HPA's default scale-up rate limit (at most double, or +4 pods, per
// 15 s) is left out: the baseline scales up at least as fast as a real one.
type HPA struct {
	Min, Max   int
	Target     float64 // jobs per replica: a worker's concurrency
	Tolerance  float64
	DownWindow time.Duration
	SyncPeriod time.Duration
	recs       []rec
}

// NewHPA returns the baseline with Kubernetes' defaults.
func NewHPA(minReplicas, maxReplicas int, target float64) *HPA {
	return &HPA{Min: max(minReplicas, 1), Max: maxReplicas, Target: target,
		Tolerance: 0.1, DownWindow: 300 * time.Second, SyncPeriod: 15 * time.Second}
}

// Decide returns the replica count for the observation.
func (h *HPA) Decide(o Observation) int {
	current := o.Current + o.Starting
	jobs := 0
	for _, q := range o.Queues {
		jobs += q.Ready + q.Running
	}
	want := current
	if current == 0 {
		want = int(math.Ceil(float64(jobs) / h.Target))
	} else if ratio := float64(jobs) / (h.Target * float64(current)); math.Abs(ratio-1) > h.Tolerance {
		want = int(math.Ceil(float64(jobs) / h.Target))
	}
	h.recs = append(h.recs, rec{at: o.At, n: want})
	cut := 0
	for cut < len(h.recs) && o.At.Sub(h.recs[cut].at) > h.DownWindow {
		cut++
	}
	h.recs = h.recs[cut:]
	if want < current {
		for _, r := range h.recs {
			want = max(want, r.n)
		}
		want = min(want, current)
	}
	return min(max(want, h.Min), h.Max)
}
