package autoscale

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// Comparison is one trace simulated under the policy and under the HPA
// baseline, with the verdict on each of the goal's three cells.
type Comparison struct {
	Trace        Trace
	Policy, HPA  Result
	WorkerSecond Verdict // no worse than the baseline
	P95          Verdict // better than the baseline
	Flapping     Verdict // better than the baseline
}

// Verdict judges one cell of a comparison.
type Verdict string

// The verdicts.
const (
	Better     Verdict = "better"
	NoWorse    Verdict = "no worse"
	TieAtFloor Verdict = "tie at the floor" // both at the least possible value
	Worse      Verdict = "WORSE"
)

// Met reports whether the verdict meets the goal of its cell.
func (v Verdict) Met() bool { return v != Worse }

// Compare simulates every trace under the policy and the HPA baseline (with
// the same Min, at least 1, and Max) in the environment cfg. Both runs of a
// trace start with the same fleet: cfg.Initial workers, or the policy's Min
// when that is lower and the trace starts idle (no arrivals at t = 0) — a
// fleet allowed to scale to zero is at zero after a quiet spell, while the
// baseline, which cannot, orders its one replica at its first sync.
func Compare(cfg SimConfig, p Policy, traces []Trace) []Comparison {
	out := make([]Comparison, 0, len(traces))
	for _, tr := range traces {
		cfg := cfg
		if tr.Rate(0) == 0 {
			cfg.Initial = min(cfg.Initial, p.Min)
		}
		c := Comparison{Trace: tr,
			Policy: Simulate(cfg, tr, &PolicyDecider{Policy: p}),
			HPA:    Simulate(cfg, tr, HPADecider{NewHPA(p.Min, p.Max, float64(cfg.Concurrency))}),
		}
		ours, base := c.Policy, c.HPA
		switch {
		case ours.WorkerSeconds < base.WorkerSeconds:
			c.WorkerSecond = Better
		case ours.WorkerSeconds == base.WorkerSeconds:
			c.WorkerSecond = NoWorse
		default:
			c.WorkerSecond = Worse
		}
		switch {
		case ours.P95Wait < base.P95Wait:
			c.P95 = Better
		case ours.P95Wait == 0 && base.P95Wait == 0:
			c.P95 = TieAtFloor // 95 % of jobs start the moment they arrive
		default:
			c.P95 = Worse
		}
		switch {
		case ours.Reversals < base.Reversals:
			c.Flapping = Better
		case ours.Reversals == base.Reversals && ours.Reversals <= tr.MinReversals:
			c.Flapping = TieAtFloor // the trace's shape needs these reversals
		default:
			c.Flapping = Worse
		}
		out = append(out, c)
	}
	return out
}

// WriteTable writes comparisons as a Markdown table: one row per trace and
// rule, then the verdicts.
func WriteTable(w io.Writer, cs []Comparison) error {
	var b strings.Builder
	b.WriteString("| trace | rule | jobs | p95 wait | p99 wait | mean wait | max wait | drain | worker-s | changes | reversals | peak |\n")
	b.WriteString("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, c := range cs {
		for _, r := range []struct {
			name string
			res  Result
		}{{"policy", c.Policy}, {"HPA", c.HPA}} {
			fmt.Fprintf(&b, "| %s | %s | %d | %s | %s | %s | %s | %s | %.0f | %d | %d | %d |\n",
				c.Trace.Name, r.name, r.res.Jobs, dur(r.res.P95Wait), dur(r.res.P99Wait), dur(r.res.MeanWait), dur(r.res.MaxWait),
				dur(r.res.Drain), r.res.WorkerSeconds, r.res.Changes, r.res.Reversals, r.res.PeakWorkers)
		}
	}
	b.WriteString("\n| trace | worker-s (goal: no worse) | p95 wait (goal: better) | reversals (goal: better) |\n|---|---|---|---|\n")
	for _, c := range cs {
		fmt.Fprintf(&b, "| %s | %s (%.0f%%) | %s | %s |\n", c.Trace.Name, c.WorkerSecond,
			100*(c.Policy.WorkerSeconds-c.HPA.WorkerSeconds)/c.HPA.WorkerSeconds, c.P95, c.Flapping)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// dur formats a duration for the table: milliseconds below a second,
// seconds with one decimal above.
func dur(d time.Duration) string {
	switch {
	case d == 0:
		return "0"
	case d < time.Second:
		return fmt.Sprintf("%d ms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%.1f s", d.Seconds())
	default:
		return fmt.Sprintf("%dm%02.0fs", int(d.Minutes()), d.Seconds()-60*float64(int(d.Minutes())))
	}
}
