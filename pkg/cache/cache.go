// Package cache keeps finished jobs in Redis so that reading a result does not
// touch Postgres. Redis is never the source of truth: every entry has a TTL,
// and callers fall back to Postgres on a miss or when Redis is down.
package cache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/warrenhq/warren/pkg/job"
)

// ErrMiss reports that the cache has no entry (for this tenant).
var ErrMiss = errors.New("cache miss")

// Config configures a Cache.
type Config struct {
	// URL is a redis:// or rediss:// URL.
	URL string
	// Prefix starts every key, so that several stacks or tests share one Redis.
	// Default "warren:".
	Prefix string
	// TTL is how long a finished job stays cached. Default 24h.
	TTL time.Duration
	// Timeout bounds each Redis call, so a dead Redis costs little. Default 500ms.
	Timeout time.Duration
}

// Cache is a Redis-backed cache of finished jobs.
type Cache struct {
	rdb    *redis.Client
	prefix string
	ttl    time.Duration
}

// New returns a Cache for cfg. It does not connect until first use.
func New(cfg Config) (*Cache, error) {
	opts, err := redis.ParseURL(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("cache: bad Redis URL: %w", err)
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "warren:"
	}
	if cfg.TTL <= 0 {
		cfg.TTL = 24 * time.Hour
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 500 * time.Millisecond
	}
	opts.DialTimeout = cfg.Timeout
	opts.ReadTimeout = cfg.Timeout
	opts.WriteTimeout = cfg.Timeout
	opts.MaxRetries = 1
	return &Cache{rdb: redis.NewClient(opts), prefix: cfg.Prefix, ttl: cfg.TTL}, nil
}

// Close releases the connections.
func (c *Cache) Close() error { return c.rdb.Close() }

// Ping checks that Redis answers.
func (c *Cache) Ping(ctx context.Context) error {
	if err := c.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis ping: %w", err)
	}
	return nil
}

// entry is what a cached job looks like in Redis: the job and its owner.
type entry struct {
	Tenant string   `json:"tenant"`
	Job    *job.Job `json:"job"`
}

func (c *Cache) key(id job.ID) string { return c.prefix + "job:" + id.String() }

// PutJob caches a finished job for the TTL.
func (c *Cache) PutJob(ctx context.Context, j *job.Job) error {
	b, err := json.Marshal(entry{Tenant: j.Tenant, Job: j})
	if err != nil {
		return fmt.Errorf("cache job %s: %w", j.ID, err)
	}
	if err := c.rdb.Set(ctx, c.key(j.ID), b, c.ttl).Err(); err != nil {
		return fmt.Errorf("cache job %s: %w", j.ID, err)
	}
	return nil
}

// GetJob returns the tenant's cached job, ErrMiss, or the Redis error.
func (c *Cache) GetJob(ctx context.Context, tenant string, id job.ID) (*job.Job, error) {
	b, err := c.rdb.Get(ctx, c.key(id)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, ErrMiss
	}
	if err != nil {
		return nil, fmt.Errorf("read cached job %s: %w", id, err)
	}
	var e entry
	if err := json.Unmarshal(b, &e); err != nil || e.Job == nil {
		return nil, ErrMiss // an unreadable entry is as good as none
	}
	if e.Tenant != tenant {
		return nil, ErrMiss
	}
	e.Job.Tenant = e.Tenant
	return e.Job, nil
}
