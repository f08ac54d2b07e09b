package cache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/warrenhq/warren/pkg/job"
)

// Announce caches finished jobs for the TTL and publishes their Done events,
// as PutJob and Publish do, in one pipelined round trip for the whole slice.
// It returns one error per job, in order: nil when both its entry and its
// event went through.
func (c *Cache) Announce(ctx context.Context, jobs []*job.Job) []error {
	errs := make([]error, len(jobs))
	type sent struct{ set, pub redis.Cmder }
	cmds := make([]sent, len(jobs))
	pipe := c.rdb.Pipeline()
	channel := c.channel(Done)
	for i, j := range jobs {
		b, err := json.Marshal(entry{Tenant: j.Tenant, Job: j})
		if err != nil {
			errs[i] = fmt.Errorf("cache job %s: %w", j.ID, err)
			continue
		}
		id := j.ID.String()
		cmds[i] = sent{
			set: pipe.Set(ctx, c.prefix+"job:"+id, b, c.ttl),
			pub: pipe.Publish(ctx, channel, id),
		}
	}
	if pipe.Len() == 0 {
		return errs
	}
	// Exec's own error is the first failed command's; each command keeps its
	// own, which is what each job is told.
	_, _ = pipe.Exec(ctx)
	for i, s := range cmds {
		if s.set == nil {
			continue
		}
		var set, pub error
		if err := s.set.Err(); err != nil {
			set = fmt.Errorf("cache job %s: %w", jobs[i].ID, err)
		}
		if err := s.pub.Err(); err != nil {
			pub = fmt.Errorf("publish %s event of job %s: %w", Done, jobs[i].ID, err)
		}
		errs[i] = errors.Join(set, pub)
	}
	return errs
}
