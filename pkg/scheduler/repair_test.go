package scheduler_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/scheduler"
	"github.com/warrenhq/warren/pkg/servicetest"
)

func TestRelayPublishesCommittedJobsOnceRabbitMQIsReachable(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	direct := servicetest.URL(t, servicetest.RabbitMQVar)
	got := b.consume(b.broker(""), "default")
	p := newProxy(t, rabbitHost(t, direct))
	br := b.broker(p.url(direct))
	p.cut()
	eventually(t, 10*time.Second, "the broker to notice", func() bool { return br.Ready(context.Background()) != nil })

	// Jobs committed by an api that never published them (it died, or
	// RabbitMQ was down), and one that the api did publish and mark.
	var lost []*job.Job
	for i := range 300 {
		lost = append(lost, newJob(i%2, job.Queued, time.Now()))
	}
	marked := newJob(0, job.Queued, time.Now())
	b.insert(append(lost, marked)...)
	if err := b.st.MarkPublished(context.Background(), []job.ID{marked.ID}); err != nil {
		t.Fatal(err)
	}
	s, _ := b.start(scheduler.Config{
		Tick:  100 * time.Millisecond,
		Relay: scheduler.RelayConfig{After: 500 * time.Millisecond, Batch: 100},
	}, b.st, br)
	eventually(t, 10*time.Second, "failed relay rounds", func() bool {
		return counter(t, s.Registry(), "warren_scheduler_tick_errors_total", "duty", "relay") >= 6
	})
	if got.distinct() != 0 {
		t.Fatal("a message was published while RabbitMQ was unreachable")
	}

	p.restore()
	restored := time.Now()
	eventually(t, 15*time.Second, "every lost job published", func() bool { return got.distinct() == len(lost) })
	took := time.Since(restored)
	t.Logf("%d jobs published %s after RabbitMQ became reachable", len(lost), took.Round(time.Millisecond))
	if took > 10*time.Second {
		t.Errorf("published %s after RabbitMQ was back; want within 10s", took)
	}
	// Marked once published: later rounds publish nothing again.
	rounds := histCount(t, s, "relay")
	eventually(t, 10*time.Second, "more relay rounds", func() bool {
		return histCount(t, s, "relay") >= rounds+10
	})
	got.mu.Lock()
	for id, n := range got.count {
		if n != 1 {
			t.Errorf("job %s published %d times", id, n)
		}
	}
	got.mu.Unlock()
	if n, _ := got.times(marked.ID); n != 0 {
		t.Error("the relay published a job the api had marked published")
	}
	if v := counter(t, s.Registry(), "warren_scheduler_jobs_relayed_total"); v != float64(len(lost)) {
		t.Errorf("relayed metric = %v, want %d", v, len(lost))
	}
}

func TestReaperRequeuesTheJobsOfLostWorkers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t, 2)
	br := b.broker("")
	got := b.consume(br, "default")
	again, last, alive := newJob(0, job.Queued, time.Now()), newJob(1, job.Queued, time.Now()), newJob(1, job.Queued, time.Now())
	last.MaxAttempts = 1
	b.insert(again, last, alive)
	if err := b.st.MarkPublished(ctx, []job.ID{again.ID, last.ID, alive.ID}); err != nil {
		t.Fatal(err)
	}
	// A worker claims them and dies: no lease renewal.
	for _, j := range []*job.Job{again, last} {
		if _, err := b.st.Claim(ctx, j.ID, "w-dead", 300*time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.st.Claim(ctx, alive.ID, "w-alive", time.Hour); err != nil {
		t.Fatal(err)
	}
	s, _ := b.start(scheduler.Config{Tick: 100 * time.Millisecond}, b.st, br)

	eventually(t, 10*time.Second, "the requeued job's message", func() bool { return got.distinct() == 1 })
	if n, _ := got.times(again.ID); n != 1 {
		t.Fatalf("the requeued job was received %d times", n)
	}
	eventually(t, 5*time.Second, "queued", func() bool { return b.get(again).State == job.Queued })
	j := b.get(again)
	if j.Attempt != 1 || j.Error == nil || !strings.HasPrefix(*j.Error, "worker lost: lease expired") {
		t.Errorf("requeued job: attempt %d, error %v", j.Attempt, j.Error)
	}
	eventually(t, 5*time.Second, "dead", func() bool { return b.get(last).State == job.Dead })
	if st := b.get(alive).State; st != job.Running {
		t.Errorf("a job with a live lease became %s", st)
	}
	// The next worker's attempt is the second one.
	next, err := b.st.Claim(ctx, again.ID, "w-new", time.Minute)
	if err != nil || next.Attempt != 2 {
		t.Fatalf("reclaim: %+v, %v", next, err)
	}
	if v := counter(t, s.Registry(), "warren_scheduler_jobs_reaped_total", "outcome", "requeued"); v != 1 {
		t.Errorf("requeued metric = %v", v)
	}
	if v := counter(t, s.Registry(), "warren_scheduler_jobs_reaped_total", "outcome", "dead"); v != 1 {
		t.Errorf("dead metric = %v", v)
	}
	if n := got.distinct(); n != 1 {
		t.Errorf("%d jobs published; only the requeued one should be", n)
	}
}

func TestRetentionDeletesOldJobsInBatchesOnEveryShard(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	var all []*job.Job
	for i := range 1230 {
		all = append(all, newJob(i%2, job.Queued, time.Now()))
	}
	b.insert(all...)
	day := 24 * time.Hour
	// 1,200 jobs finished 8 days ago, of which 1,000 succeeded and 200
	// were cancelled; 10 dead for 8 days (kept), 10 dead for 31 (deleted);
	// 10 succeeded yesterday (kept).
	set := func(jobs []*job.Job, st job.State, age time.Duration) {
		for shard := range 2 {
			var ids []string
			for _, j := range jobs {
				if j.ID.Shard() == shard {
					v, _ := j.ID.Value()
					ids = append(ids, v.(string))
				}
			}
			b.execOn(shard, `UPDATE jobs SET state = $2, finished_at = now() - $3 * interval '1 millisecond'
				WHERE id = ANY($1::uuid[])`, pq.Array(ids), string(st), age.Milliseconds())
		}
	}
	set(all[:1000], job.Succeeded, 8*day)
	set(all[1000:1200], job.Cancelled, 8*day)
	set(all[1200:1210], job.Dead, 8*day)
	set(all[1210:1220], job.Dead, 31*day)
	set(all[1220:], job.Succeeded, day)
	s, _ := b.start(scheduler.Config{Tick: 100 * time.Millisecond, Retention: scheduler.RetentionConfig{Batch: 100}}, b.st, b.broker(""))

	eventually(t, 20*time.Second, "old jobs deleted", func() bool {
		c := b.countStates()
		return c[job.Succeeded] == 10 && c[job.Cancelled] == 0 && c[job.Dead] == 10
	})
	if v := counter(t, s.Registry(), "warren_scheduler_jobs_deleted_total", "rule", "finished"); v != 1200 {
		t.Errorf("deleted finished = %v, want 1200", v)
	}
	if v := counter(t, s.Registry(), "warren_scheduler_jobs_deleted_total", "rule", "dead"); v != 10 {
		t.Errorf("deleted dead = %v, want 10", v)
	}
}

// execOn runs a statement on one shard of the bundle.
func (b *bundle) execOn(shard int, query string, args ...any) {
	b.t.Helper()
	db, err := sqlx.Open("postgres", b.urls[shard])
	if err != nil {
		b.t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(query, args...); err != nil {
		b.t.Fatal(err)
	}
}

// histCount returns the number of rounds of a duty in the tick histogram.
func histCount(t testing.TB, s *scheduler.Scheduler, duty string) float64 {
	t.Helper()
	mfs, err := s.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "warren_scheduler_tick_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "duty" && lp.GetValue() == duty {
					return float64(m.GetHistogram().GetSampleCount())
				}
			}
		}
	}
	return 0
}
