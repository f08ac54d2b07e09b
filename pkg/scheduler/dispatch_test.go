package scheduler_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/warrenhq/warren/pkg/config"
	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/scheduler"
	"github.com/warrenhq/warren/pkg/servicetest"
)

func TestDelayedAndRetryingJobsArePublishedWhenDueNotBefore(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	br := b.broker("")
	got := b.consume(br, "default")
	due := time.Now().Add(1500 * time.Millisecond)
	jobs := []*job.Job{
		newJob(0, job.Scheduled, due),
		newJob(1, job.Retrying, due),
		newJob(1, job.Scheduled, due.Add(time.Hour)), // not due during the test
	}
	b.insert(jobs...)
	// The scheduler process's default tick (WARREN_SCHEDULER_TICK unset):
	// the bound below is what it promises, one second after the due time.
	def, err := config.LoadScheduler(func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	b.start(scheduler.Config{Tick: def.Tick}, b.st, br)

	eventually(t, 10*time.Second, "both due jobs received", func() bool { return got.distinct() == 2 })
	for _, j := range jobs[:2] {
		n, at := got.times(j.ID)
		late := at.Sub(*j.ScheduledAt)
		t.Logf("%s job published %s after its time", j.State, late.Round(time.Millisecond))
		if n != 1 || late < 0 || late > time.Second {
			t.Errorf("%s job: received %d times, %s after its time; want once, within [0, 1s]", j.State, n, late)
		}
		// The message can arrive before the commit; a worker's claim waits
		// for the row lock, a plain read does not.
		eventually(t, 5*time.Second, "job queued", func() bool { return b.get(j).State == job.Queued })
	}
	if n, _ := got.times(jobs[2].ID); n != 0 || b.get(jobs[2]).State != job.Scheduled {
		t.Errorf("job due in an hour was published")
	}
}

func TestBacklogOnTwoShardsIsDispatchedInOneRoundEachJobOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	br := b.broker("")
	got := b.consume(br, "default")
	var jobs []*job.Job
	past := time.Now().Add(-time.Minute)
	for i := range 3000 {
		jobs = append(jobs, newJob(i%2, job.Scheduled, past.Add(time.Duration(i)*time.Millisecond)))
	}
	b.insert(jobs...)
	// Rounds run at start and then every Tick: with a one-minute tick the
	// backlog of 1,500 per shard must go out in the first round, batch after
	// batch, not one batch of 1,000 per tick.
	s, _ := b.start(scheduler.Config{Tick: time.Minute}, b.st, br)

	eventually(t, 30*time.Second, "3,000 jobs received", func() bool { return got.distinct() == 3000 })
	eventually(t, 10*time.Second, "all queued", func() bool { return b.countStates()[job.Queued] == 3000 })
	// Every job is queued, so nothing more can be published: each message
	// was confirmed before its commit. Wait for what is still in flight.
	ready := func() int {
		n, _, err := br.QueueDepth(context.Background(), "default")
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	eventually(t, 10*time.Second, "queue drained", func() bool { return ready() == 0 })
	got.mu.Lock()
	total := got.total
	for id, n := range got.count {
		if n != 1 {
			t.Errorf("job %s published %d times", id, n)
		}
	}
	got.mu.Unlock()
	if total != 3000 {
		t.Errorf("received %d messages for 3,000 jobs", total)
	}
	if v := counter(t, s.Registry(), "warren_scheduler_jobs_dispatched_total"); v != 3000 {
		t.Errorf("dispatched metric = %v, want 3000", v)
	}
	if v := counter(t, s.Registry(), "warren_scheduler_dispatch_batches_total"); v != 4 {
		t.Errorf("batches metric = %v, want 4 (1,000 + 500 per shard)", v)
	}
}

func TestTwoSchedulersDispatchEachJobOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	got := b.consume(b.broker(""), "default")
	// Small batches and a short tick make the two interleave as much as
	// possible; jobs keep falling due while they run.
	cfg := scheduler.Config{Tick: 20 * time.Millisecond, DispatchBatch: 25}
	var jobs []*job.Job
	now := time.Now()
	for i := range 1500 {
		jobs = append(jobs, newJob(i%2, job.Scheduled, now.Add(time.Duration(i-700)*time.Millisecond)))
	}
	b.insert(jobs...)
	s1, _ := b.start(cfg, b.st, b.broker(""))
	s2, _ := b.start(cfg, b.store(), b.broker(""))

	eventually(t, 60*time.Second, "1,500 jobs received", func() bool { return got.distinct() == 1500 })
	eventually(t, 10*time.Second, "all queued", func() bool { return b.countStates()[job.Queued] == 1500 })
	got.mu.Lock()
	for id, n := range got.count {
		if n != 1 {
			t.Errorf("job %s published %d times", id, n)
		}
	}
	got.mu.Unlock()
	d1 := counter(t, s1.Registry(), "warren_scheduler_jobs_dispatched_total")
	d2 := counter(t, s2.Registry(), "warren_scheduler_jobs_dispatched_total")
	t.Logf("scheduler 1 dispatched %v, scheduler 2 %v", d1, d2)
	if d1+d2 != 1500 {
		t.Errorf("dispatched %v + %v, want 1500", d1, d2)
	}
}

func TestRabbitMQUnreachableJobsStayDueAndGoOutWhenItIsBack(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	direct := servicetest.URL(t, servicetest.RabbitMQVar)
	got := b.consume(b.broker(""), "default")
	p := newProxy(t, rabbitHost(t, direct))
	br := b.broker(p.url(direct))
	// Small batches, so that the cut below lands mid-backlog.
	s, _ := b.start(scheduler.Config{Tick: 50 * time.Millisecond, DispatchBatch: 50, PublishTimeout: time.Second}, b.st, br)

	// A backlog that is going out when RabbitMQ becomes unreachable.
	var jobs []*job.Job
	for i := range 2000 {
		jobs = append(jobs, newJob(i%2, job.Scheduled, time.Now().Add(-time.Second)))
	}
	b.insert(jobs...)
	eventually(t, 20*time.Second, "the first messages", func() bool { return got.distinct() > 0 })
	p.cut()
	eventually(t, 10*time.Second, "the broker to notice", func() bool { return br.Ready(context.Background()) != nil })

	// Jobs falling due while it is down stay scheduled, round after round.
	later := []*job.Job{newJob(0, job.Scheduled, time.Now()), newJob(1, job.Retrying, time.Now())}
	b.insert(later...)
	errs := counter(t, s.Registry(), "warren_scheduler_dispatch_errors_total")
	eventually(t, 10*time.Second, "several failed rounds", func() bool {
		return counter(t, s.Registry(), "warren_scheduler_dispatch_errors_total") >= errs+6
	})
	for _, j := range later {
		if st := b.get(j).State; st != j.State {
			t.Fatalf("while RabbitMQ is unreachable a due %s job became %s", j.State, st)
		}
		if n, _ := got.times(j.ID); n != 0 {
			t.Fatalf("a job was published while RabbitMQ was unreachable")
		}
	}
	before := got.distinct()

	p.restore()
	all := append(jobs, later...)
	eventually(t, 60*time.Second, "every job received after RabbitMQ is back", func() bool { return got.distinct() == len(all) })
	eventually(t, 10*time.Second, "all queued", func() bool { return b.countStates()[job.Queued] == len(all) })
	got.mu.Lock()
	dups := got.total - len(got.count)
	got.mu.Unlock()
	// A batch cut off before its confirms is published again: late, twice
	// perhaps (the worker's claim drops the extra), never lost.
	t.Logf("%d of %d jobs out before the cut, %d duplicates", before, len(all), dups)
}

// counter returns the value of the unlabelled counter or gauge name in reg.
func counter(t testing.TB, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue metrics
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			}
		}
	}
	return -1
}
