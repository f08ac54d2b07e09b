package cache

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// WorkerInfo is a worker process's heartbeat, as GET /v1/workers shows it.
type WorkerInfo struct {
	ID            string    `json:"id"`
	Host          string    `json:"host"`
	PID           int       `json:"pid"`
	Queues        []string  `json:"queues"`
	Types         []string  `json:"types"`
	Tenants       []string  `json:"tenants,omitempty"` // empty: every tenant
	Concurrency   int       `json:"concurrency"`
	Busy          int       `json:"busy"`
	StartedAt     time.Time `json:"started_at"`
	LastHeartbeat time.Time `json:"last_heartbeat"`
}

func (c *Cache) workersKey() string { return c.prefix + "workers" }

// PutWorker records a heartbeat. A worker not heard from within ttl drops out
// of Workers.
func (c *Cache) PutWorker(ctx context.Context, w WorkerInfo, ttl time.Duration) error {
	b, err := json.Marshal(w)
	if err != nil {
		return err
	}
	expires := float64(w.LastHeartbeat.Add(ttl).UnixMilli())
	pipe := c.rdb.TxPipeline()
	pipe.Set(ctx, c.workersKey()+":"+w.ID, b, ttl)
	pipe.ZAdd(ctx, c.workersKey(), redis.Z{Score: expires, Member: w.ID})
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("worker heartbeat: %w", err)
	}
	return nil
}

// RemoveWorker deletes a worker's record (on clean shutdown).
func (c *Cache) RemoveWorker(ctx context.Context, id string) error {
	pipe := c.rdb.TxPipeline()
	pipe.Del(ctx, c.workersKey()+":"+id)
	pipe.ZRem(ctx, c.workersKey(), id)
	_, err := pipe.Exec(ctx)
	return err
}

// Workers returns the live workers: those whose last heartbeat is within its TTL.
func (c *Cache) Workers(ctx context.Context, now time.Time) ([]WorkerInfo, error) {
	// Forget the expired, then read the rest.
	if err := c.rdb.ZRemRangeByScore(ctx, c.workersKey(), "-inf", fmt.Sprint(now.UnixMilli())).Err(); err != nil {
		return nil, fmt.Errorf("list workers: %w", err)
	}
	ids, err := c.rdb.ZRange(ctx, c.workersKey(), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("list workers: %w", err)
	}
	if len(ids) == 0 {
		return []WorkerInfo{}, nil
	}
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = c.workersKey() + ":" + id
	}
	vals, err := c.rdb.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, fmt.Errorf("list workers: %w", err)
	}
	out := make([]WorkerInfo, 0, len(vals))
	for _, v := range vals {
		s, ok := v.(string)
		if !ok {
			continue
		}
		var w WorkerInfo
		if json.Unmarshal([]byte(s), &w) == nil {
			out = append(out, w)
		}
	}
	return out, nil
}
