package cache

import (
	"context"
	"fmt"

	"github.com/warrenhq/warren/pkg/job"
)

// ForgetJob drops a cached job, for a job that leaves its terminal state
// (a retry). Dropping a job that is not cached is no error.
func (c *Cache) ForgetJob(ctx context.Context, id job.ID) error {
	if err := c.rdb.Del(ctx, c.key(id)).Err(); err != nil {
		return fmt.Errorf("drop cached job %s: %w", id, err)
	}
	return nil
}
