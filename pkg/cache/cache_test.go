package cache_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/warrenhq/warren/pkg/cache"
	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/servicetest"
)

func setup(t *testing.T, ttl time.Duration) (*cache.Cache, string) {
	t.Helper()
	prefix := servicetest.Name("test") + ":"
	c, err := cache.New(cache.Config{URL: servicetest.URL(t, servicetest.RedisVar), Prefix: prefix, TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, prefix
}

func finished(tenant string) *job.Job {
	now := time.Now().UTC()
	return &job.Job{ID: job.NewID(now, 0), Tenant: tenant, Type: "echo", Queue: "default",
		State: job.Succeeded, Attempt: 1, MaxAttempts: 3, Payload: job.JSON(`{"a":1}`),
		Result: job.JSON(`{"a":1}`), CreatedAt: now, FinishedAt: &now}
}

func TestPutGet(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c, prefix := setup(t, time.Hour)
	j := finished("acme")
	if _, err := c.GetJob(ctx, "acme", j.ID); !errors.Is(err, cache.ErrMiss) {
		t.Fatalf("before put: got %v, want ErrMiss", err)
	}
	if err := c.PutJob(ctx, j); err != nil {
		t.Fatal(err)
	}
	got, err := c.GetJob(ctx, "acme", j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != j.ID || got.State != job.Succeeded || string(got.Result) != `{"a":1}` || got.Tenant != "acme" {
		t.Fatalf("got %+v", got)
	}
	if _, err := c.GetJob(ctx, "globex", j.ID); !errors.Is(err, cache.ErrMiss) {
		t.Fatalf("other tenant: got %v, want ErrMiss", err)
	}
	// The entry expires: check the TTL Redis holds for it.
	opts, _ := redis.ParseURL(servicetest.URL(t, servicetest.RedisVar))
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	ttl, err := rdb.TTL(ctx, prefix+"job:"+j.ID.String()).Result()
	if err != nil || ttl <= 0 || ttl > time.Hour {
		t.Fatalf("TTL: %v, %v; want within (0, 1h]", ttl, err)
	}
}

func TestRedisDownFailsFast(t *testing.T) {
	t.Parallel()
	// Nothing listens on port 1: a real refused connection, as when Redis is down.
	c, err := cache.New(cache.Config{URL: "redis://127.0.0.1:1/0", Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	_, err = c.GetJob(context.Background(), "acme", job.NewID(time.Now(), 0))
	if err == nil || errors.Is(err, cache.ErrMiss) {
		t.Fatalf("got %v, want a connection error", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("a down Redis took %v to report", d)
	}
	if err := c.PutJob(context.Background(), finished("acme")); err == nil {
		t.Fatal("put to a down Redis: no error")
	}
}

func TestBadURL(t *testing.T) {
	t.Parallel()
	if _, err := cache.New(cache.Config{URL: "http://nope"}); err == nil {
		t.Fatal("no error for a non-redis URL")
	}
}
