package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/store"
)

// CronJob is a periodic job: on every tick of Schedule, a job of Type with
// Payload is enqueued on Queue.
type CronJob struct {
	// Name identifies the entry; it is part of each tick's idempotency key.
	Name string
	// Schedule is a standard 5-field cron expression (minute hour
	// day-of-month month day-of-week) or a descriptor such as @daily or
	// "@every 1m", in UTC unless prefixed with CRON_TZ=Area/City. @every
	// ticks are aligned on the Unix epoch (every 1m ticks at :00 seconds),
	// so that every scheduler computes the same ticks.
	Schedule string
	Type     string
	Queue    string          // default "default"
	Payload  json.RawMessage // default {}
	Priority int
	// MaxAttempts defaults to 5, Timeout to 10m.
	MaxAttempts int
	Timeout     time.Duration
}

// cronEntry is a CronJob with its parsed schedule.
type cronEntry struct {
	CronJob
	sched schedule
}

// cronDuty enqueues the cron jobs whose tick has come (leader only).
//
// Once per tick, cluster-wide: each tick's job is inserted with the
// idempotency key cron:<name>:<tick as Unix seconds> for the cron tenant,
// on the key's shard, so the unique index (tenant, idempotency_key) makes a
// second insert of the same tick a no-op, whichever scheduler (a deposed
// leader, a restarted one) makes it. The last tick enqueued per entry is
// recorded on shard 0 (table cron_ticks); a new leader enqueues only the
// most recent tick it finds missed since then, not every one of them. A new
// entry, or one whose schedule changed, starts with its next tick.
//
// A tick's job is inserted as scheduled, due at the tick, and goes out with
// the due jobs (published and marked queued in one transaction).
type cronDuty struct {
	st interface {
		CronTicks(ctx context.Context) (map[string]store.CronTick, error)
		RecordCronTick(ctx context.Context, name, schedule string, tick time.Time) error
		InsertIdempotent(ctx context.Context, j *job.Job) (*job.Job, bool, error)
		IdempotencyShard(tenant, key string) int
	}
	entries []cronEntry
	tenant  string
	lateLog time.Duration // a tick enqueued later than this is logged as caught up
	now     func() time.Time
	m       *metrics
	log     *slog.Logger
}

func newCronEntries(jobs []CronJob) ([]cronEntry, error) {
	out := make([]cronEntry, 0, len(jobs))
	seen := map[string]bool{}
	for _, cj := range jobs {
		if cj.Name == "" || seen[cj.Name] {
			return nil, fmt.Errorf("cron job %q: names must be present and unique", cj.Name)
		}
		seen[cj.Name] = true
		s, err := parseSchedule(cj.Schedule)
		if err != nil {
			return nil, fmt.Errorf("cron job %q: %w", cj.Name, err)
		}
		if cj.Queue == "" {
			cj.Queue = "default"
		}
		if len(cj.Payload) == 0 || string(cj.Payload) == "null" {
			cj.Payload = json.RawMessage(`{}`)
		}
		if cj.MaxAttempts <= 0 {
			cj.MaxAttempts = 5
		}
		if cj.Timeout <= 0 {
			cj.Timeout = 10 * time.Minute
		}
		out = append(out, cronEntry{CronJob: cj, sched: s})
	}
	return out, nil
}

func (c *cronDuty) run(ctx context.Context) error {
	if len(c.entries) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ticks, err := c.st.CronTicks(ctx)
	if err != nil {
		return err
	}
	now := c.now()
	var errs []error
	for _, e := range c.entries {
		last, ok := ticks[e.Name]
		if !ok || last.Schedule != e.Schedule {
			// New, or rescheduled: no tick of this schedule was missed.
			if err := c.st.RecordCronTick(ctx, e.Name, e.Schedule, now); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		tick, ok := e.sched.latest(last.LastTick, now)
		if !ok {
			continue
		}
		if err := c.enqueue(ctx, e, tick, now); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := c.st.RecordCronTick(ctx, e.Name, e.Schedule, tick); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// enqueue inserts the job of e's tick, unless some scheduler already did.
func (c *cronDuty) enqueue(ctx context.Context, e cronEntry, tick, now time.Time) error {
	key := fmt.Sprintf("cron:%s:%d", e.Name, tick.Unix())
	now = now.UTC().Truncate(time.Microsecond)
	due := tick.UTC()
	j := &job.Job{
		ID: job.NewID(now, c.st.IdempotencyShard(c.tenant, key)), Tenant: c.tenant,
		Type: e.Type, Queue: e.Queue, Priority: e.Priority, State: job.Scheduled,
		MaxAttempts: e.MaxAttempts, TimeoutMS: e.Timeout.Milliseconds(),
		Payload: job.JSON(e.Payload), CreatedAt: now, ScheduledAt: &due, IdempotencyKey: &key,
	}
	stored, created, err := c.st.InsertIdempotent(ctx, j)
	if err != nil {
		return fmt.Errorf("cron job %q, tick %s: %w", e.Name, due.Format(time.RFC3339), err)
	}
	log := c.log.With("cron", e.Name, "tick", due.Format(time.RFC3339), "job_id", stored.ID.String())
	switch {
	case !created:
		log.Debug("cron tick already enqueued")
	case now.Sub(due) > c.lateLog:
		c.m.cronEnqueued.WithLabelValues(e.Name).Inc()
		log.Info("cron tick enqueued late: it was missed (no leader, or the leader was down); older missed ticks are skipped", "late", now.Sub(due).Round(time.Second).String())
	default:
		c.m.cronEnqueued.WithLabelValues(e.Name).Inc()
		log.Info("cron tick enqueued", "type", e.Type, "queue", e.Queue)
	}
	return nil
}

// schedule gives the ticks of a cron expression.
type schedule struct {
	spec  *cron.SpecSchedule // nil for @every
	every time.Duration      // @every, whole seconds
}

// parseSchedule parses a standard cron expression or descriptor (see
// CronJob.Schedule).
func parseSchedule(spec string) (s schedule, err error) {
	// robfig/cron's parser panics on some malformed input (a TZ= prefix
	// without a space after it).
	defer func() {
		if r := recover(); r != nil {
			s, err = schedule{}, fmt.Errorf("schedule %q is not a valid cron expression", spec)
		}
	}()
	parsed, err := cron.ParseStandard(spec)
	if err != nil {
		return schedule{}, fmt.Errorf("schedule %q: %w", spec, err)
	}
	switch p := parsed.(type) {
	case *cron.SpecSchedule:
		if p.Location == time.Local && !strings.HasPrefix(spec, "TZ=") && !strings.HasPrefix(spec, "CRON_TZ=") {
			p.Location = time.UTC // the same ticks on every scheduler, whatever its TZ
		}
		return schedule{spec: p}, nil
	case cron.ConstantDelaySchedule:
		return schedule{every: p.Delay}, nil
	}
	return schedule{}, fmt.Errorf("schedule %q: unsupported kind %T", spec, parsed)
}

// next returns the first tick after t, or the zero time if there is none
// within five years (an expression such as "0 0 30 2 *").
func (s schedule) next(t time.Time) time.Time {
	if s.spec == nil {
		sec := int64(s.every / time.Second)
		u := t.Unix()
		return time.Unix(floorDiv(u, sec)*sec+sec, 0).UTC()
	}
	return s.spec.Next(t)
}

// latest returns the most recent tick in (after, now], if there is one.
// Its cost follows the ticks between max(after, now - a window) and now:
// the window starts at an hour and doubles until a tick turns up or it
// reaches after.
func (s schedule) latest(after, now time.Time) (time.Time, bool) {
	if !now.After(after) {
		return time.Time{}, false
	}
	if s.spec == nil {
		sec := int64(s.every / time.Second)
		t := time.Unix(floorDiv(now.Unix(), sec)*sec, 0).UTC()
		if t.After(after) {
			return t, true
		}
		return time.Time{}, false
	}
	for window := time.Hour; ; window *= 2 {
		from := now.Add(-window)
		if window > 200*365*24*time.Hour || !from.After(after) {
			from = after
		}
		var last time.Time
		for t := s.spec.Next(from); !t.IsZero() && !t.After(now); t = s.spec.Next(t) {
			last = t
		}
		if !last.IsZero() {
			return last, true
		}
		if from.Equal(after) {
			return time.Time{}, false
		}
	}
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}
