package server_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/warrenhq/warren/pkg/cache"
	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/server"
	"github.com/warrenhq/warren/pkg/servicetest"
	"github.com/warrenhq/warren/pkg/stacktest"
)

// Thousands of ?wait requests on one api cost what their connections cost
// in net/http, and nothing per waiter besides: no goroutine polling, no
// Redis connection or subscription of their own. One Done event answers
// every waiter of the job.
func TestManyWaitersCostNoGoroutineOrRedisConnectionEach(t *testing.T) {
	t.Parallel()
	const many, jobs = 2000, 4
	// The api's Redis connections carry a name of their own, so that Redis's
	// client list shows which are this api's.
	redisURL := servicetest.URL(t, servicetest.RedisVar)
	name := servicetest.Name("waiters")
	sep := "?"
	if strings.Contains(redisURL, "?") {
		sep = "&"
	}
	// FallbackPoll an hour: only the Done events can wake a waiter.
	s := stacktest.New(t, stacktest.Options{Shards: 1, RedisURL: redisURL + sep + "client_name=" + name,
		Server: func(c *server.Config) { c.FallbackPoll = time.Hour }})
	ids := make([]job.ID, jobs)
	for i := range ids {
		ids[i] = submit(t, s, `{"type":"nobody.handles.this"}`).ID
	}
	// One finished job, waited for once: the api's subscription and its
	// connections exist before the baseline is taken.
	warm := submit(t, s, `{"type":"nobody.handles.this"}`)
	finish(t, s, warm.ID, `0`)
	decodeJob(t, call(t, "GET", s.URL+"/v1/jobs/"+warm.ID.String()+"?wait=5s", stacktest.Token, ""), http.StatusOK)
	before := countGoroutines()

	// Each waiter is a raw connection, written by a few dialling goroutines
	// that are gone before the count: the client side adds no goroutines.
	addr := strings.TrimPrefix(s.URL, "http://")
	conns := make([]net.Conn, many)
	t.Cleanup(func() {
		for _, c := range conns {
			if c != nil {
				_ = c.Close()
			}
		}
	})
	const dialers = 8
	errs := make(chan error, dialers)
	var dialling sync.WaitGroup
	for d := range dialers {
		dialling.Go(func() {
			for i := d; i < many; i += dialers {
				c, err := net.DialTimeout("tcp", addr, 5*time.Second)
				if err != nil {
					errs <- fmt.Errorf("waiter %d: %w", i, err)
					return
				}
				conns[i] = c
				req := fmt.Sprintf("GET /v1/jobs/%s?wait=60s HTTP/1.1\r\nHost: warren\r\nAuthorization: Bearer %s\r\n\r\n", ids[i%jobs], stacktest.Token)
				if _, err := io.WriteString(c, req); err != nil {
					errs <- fmt.Errorf("waiter %d: %w", i, err)
					return
				}
			}
		})
	}
	dialling.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	stacktest.Eventually(t, 60*time.Second, fmt.Sprintf("%d waiters to register", many), func() bool { return waiters(t, s) == many })

	after := countGoroutines()
	// A waiter costs net/http's two goroutines of its connection: conn.serve,
	// which runs the handler, and the background reader. Nothing else
	// grows with the waiters: not Warren's goroutines, not any library's
	// (a Redis subscription per waiter would show as go-redis's). Slack for
	// the other tests running meanwhile.
	if d := after.warren - before.warren; d > many/10 {
		t.Errorf("Warren's packages started %d goroutines for %d waiters (%d before, %d after): a goroutine per waiter", d, many, before.warren, after.warren)
	}
	if d := (after.all - after.http) - (before.all - before.http); d > many/4 {
		t.Errorf("%d goroutines more, besides net/http's, for %d waiters", d, many)
	}
	if d := after.perConn - before.perConn; d < many || d > 2*many+many/4 {
		t.Errorf("%d net/http connection goroutines more for %d waiters, want about 2 per waiter", d, many)
	}
	// Redis: the api's pool, bounded by go-redis's default size, and one
	// subscription, whatever the number of waiters.
	rconns, subs := redisClients(t, redisURL, name)
	if pool := 10 * runtime.GOMAXPROCS(0); rconns > pool+1 {
		t.Errorf("%d Redis connections with %d waiters, want at most the pool (%d) and the subscription", rconns, many, pool)
	}
	if subs != 1 {
		t.Errorf("%d subscribed Redis connections with %d waiters, want 1", subs, many)
	}
	t.Logf("%d waiters: goroutines %+v → %+v; %d Redis connections, %d subscribed", many, before, after, rconns, subs)
	if n := subscribers(t, redisURL, s.Namespace+":events:"+string(cache.Done)); n != 1 {
		t.Errorf("%d subscriptions to the done events with %d waiters, want 1", n, many)
	}

	// Finishing a job answers its waiters, and only them.
	answer := func(i int) {
		t.Helper()
		c := conns[i]
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("waiter %d on job %d: %v", i, i%jobs, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var got job.Job
		if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &got) != nil || got.ID != ids[i%jobs] ||
			got.State != job.Succeeded || !bytes.Equal(got.Result, []byte(fmt.Sprint(i%jobs))) {
			t.Fatalf("waiter %d on job %d: %d %s", i, i%jobs, resp.StatusCode, body)
		}
		_ = c.Close()
	}
	finish(t, s, ids[0], `0`)
	for i := 0; i < many; i += jobs {
		answer(i)
	}
	stacktest.Eventually(t, 5*time.Second, "the other jobs' waiters to wait on", func() bool { return waiters(t, s) == many-many/jobs })
	for j := 1; j < jobs; j++ {
		finish(t, s, ids[j], fmt.Sprint(j))
	}
	for i := range conns {
		if i%jobs != 0 {
			answer(i)
		}
	}
	stacktest.Eventually(t, 5*time.Second, "no waiters left", func() bool { return waiters(t, s) == 0 })
}

// goroutineCount counts the process's goroutines: all; those started by
// net/http, and among them those of server connections; those started by
// Warren's packages (not by tests).
type goroutineCount struct{ all, http, perConn, warren int }

func countGoroutines() goroutineCount {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var c goroutineCount
	for _, g := range strings.Split(string(buf), "\n\n") {
		if !strings.HasPrefix(g, "goroutine ") {
			continue
		}
		c.all++
		_, creator, _ := strings.Cut(g, "\ncreated by ")
		creator, _, _ = strings.Cut(creator, " in goroutine")
		switch {
		case strings.HasPrefix(creator, "net/http.(*Server).Serve"),
			strings.HasPrefix(creator, "net/http.(*connReader).startBackgroundRead"):
			c.http++
			c.perConn++
		case strings.HasPrefix(creator, "net/http."):
			c.http++
		case strings.HasPrefix(creator, "github.com/warrenhq/warren/pkg/") && !strings.Contains(creator, "_test."):
			c.warren++
		}
	}
	return c
}

// redisDo runs fn with a client of Redis at redisURL.
func redisDo(t *testing.T, redisURL string, fn func(context.Context, *redis.Client) error) {
	t.Helper()
	opts, err := redis.ParseURL(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := fn(ctx, rdb); err != nil {
		t.Fatalf("redis: %v", err)
	}
}

// subscribers is Redis's count of subscriptions to channel.
func subscribers(t *testing.T, redisURL, channel string) (n int64) {
	t.Helper()
	redisDo(t, redisURL, func(ctx context.Context, rdb *redis.Client) error {
		m, err := rdb.PubSubNumSub(ctx, channel).Result()
		n = m[channel]
		return err
	})
	return n
}

// redisClients counts the connections Redis lists under the client name,
// and those of them that are subscribed to a channel.
func redisClients(t *testing.T, redisURL, name string) (conns, subscribed int) {
	t.Helper()
	redisDo(t, redisURL, func(ctx context.Context, rdb *redis.Client) error {
		list, err := rdb.ClientList(ctx).Result()
		for line := range strings.Lines(list) {
			fields := strings.Fields(line)
			if !slices.Contains(fields, "name="+name) {
				continue
			}
			conns++
			if !slices.Contains(fields, "sub=0") {
				subscribed++
			}
		}
		return err
	})
	return conns, subscribed
}
