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

func TestListenerWakesWaiters(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c, _ := setup(t, time.Hour)
	l := c.Listen(ctx, cache.Done, nil)
	defer l.Close()
	id, other := job.NewID(time.Now(), 0), job.NewID(time.Now(), 0)
	const n = 1000
	chans := make([]<-chan struct{}, n)
	for i := range chans {
		ch, stop := l.Wait(id)
		defer stop()
		chans[i] = ch
	}
	otherCh, stopOther := l.Wait(other)
	defer stopOther()
	if l.Waiting() != 2 {
		t.Fatalf("waiting on %d ids, want 2", l.Waiting())
	}
	// The subscription is live once a published event reaches a waiter; keep
	// publishing until it does (a publish before SUBSCRIBE completes is lost).
	deadline := time.Now().Add(10 * time.Second)
	for woke := false; !woke; {
		if err := c.Publish(ctx, cache.Done, id); err != nil {
			t.Fatal(err)
		}
		select {
		case <-chans[0]:
			woke = true
		case <-time.After(50 * time.Millisecond):
			if time.Now().After(deadline) {
				t.Fatal("no waiter woke within 10s")
			}
		}
	}
	for i, ch := range chans {
		select {
		case <-ch:
		case <-time.After(5 * time.Second):
			t.Fatalf("waiter %d did not wake", i)
		}
	}
	select {
	case <-otherCh:
		t.Fatal("a waiter for another job woke")
	default:
	}
}

func TestWorkerHeartbeats(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c, _ := setup(t, time.Hour)
	now := time.Now().UTC().Truncate(time.Millisecond)
	live := cache.WorkerInfo{ID: "w1", Host: "h", PID: 1, Queues: []string{"default"}, Concurrency: 4, StartedAt: now, LastHeartbeat: now}
	stale := cache.WorkerInfo{ID: "w2", Host: "h", PID: 2, StartedAt: now, LastHeartbeat: now.Add(-time.Minute)}
	if err := c.PutWorker(ctx, live, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := c.PutWorker(ctx, stale, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	ws, err := c.Workers(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(ws) != 1 || ws[0].ID != "w1" || ws[0].Concurrency != 4 {
		t.Fatalf("live workers: %+v", ws)
	}
	if err := c.RemoveWorker(ctx, "w1"); err != nil {
		t.Fatal(err)
	}
	if ws, err := c.Workers(ctx, now); err != nil || len(ws) != 0 {
		t.Fatalf("after removal: %+v, %v", ws, err)
	}
}
