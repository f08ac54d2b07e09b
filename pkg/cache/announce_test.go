package cache_test

import (
	"context"
	"testing"
	"time"

	"github.com/warrenhq/warren/pkg/cache"
	"github.com/warrenhq/warren/pkg/job"
)

func TestAnnounceCachesAndWakes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c, _ := setup(t, time.Hour)
	l := c.Listen(ctx, cache.Done, nil)
	defer l.Close()
	// The subscription is live once a published event reaches a waiter;
	// announce a probe until one does (a publish before SUBSCRIBE is lost).
	probe := finished("acme")
	woke, stop := l.Wait(probe.ID)
	defer stop()
	deadline := time.Now().Add(10 * time.Second)
	for live := false; !live; {
		if errs := c.Announce(ctx, []*job.Job{probe}); errs[0] != nil {
			t.Fatal(errs[0])
		}
		select {
		case <-woke:
			live = true
		case <-time.After(50 * time.Millisecond):
			if time.Now().After(deadline) {
				t.Fatal("no waiter woke within 10s")
			}
		}
	}

	jobs := []*job.Job{finished("acme"), finished("globex"), finished("acme")}
	chans := make([]<-chan struct{}, len(jobs))
	for i, j := range jobs {
		ch, stop := l.Wait(j.ID)
		defer stop()
		chans[i] = ch
	}
	for i, err := range c.Announce(ctx, jobs) {
		if err != nil {
			t.Fatalf("job %d: %v", i, err)
		}
	}
	for i, j := range jobs {
		select {
		case <-chans[i]:
		case <-time.After(5 * time.Second):
			t.Fatalf("waiter of job %d did not wake", i)
		}
		got, err := c.GetJob(ctx, j.Tenant, j.ID)
		if err != nil || got.ID != j.ID || got.State != job.Succeeded || got.Tenant != j.Tenant {
			t.Fatalf("cached job %d: %+v, %v", i, got, err)
		}
	}
	if errs := c.Announce(ctx, nil); len(errs) != 0 {
		t.Fatalf("announcing nothing: %v", errs)
	}
}

func TestAnnounceToADownRedis(t *testing.T) {
	t.Parallel()
	c, err := cache.New(cache.Config{URL: "redis://127.0.0.1:1/0", Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	errs := c.Announce(context.Background(), []*job.Job{finished("acme"), finished("acme")})
	for i, err := range errs {
		if err == nil {
			t.Errorf("job %d: no error from a down Redis", i)
		}
	}
}
