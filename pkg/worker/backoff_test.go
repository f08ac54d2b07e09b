package worker_test

import (
	"context"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/warrenhq/warren/pkg/worker"
)

// constSource is a rand.Source that always returns the same number: with
// math.MaxUint64 every draw is the top of its range, with 1 the bottom
// (for a range that is not a power of two, as no ceiling in nanoseconds of
// whole seconds is).
type constSource uint64

func (c constSource) Uint64() uint64 { return uint64(c) }

func TestExponentialBackoffCeilingIsBaseTimesTwoToTheNMinusOneUpToTheCap(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name        string
		base, limit time.Duration
		attempt     int
		ceiling     time.Duration
	}{
		{"first attempt", time.Second, time.Hour, 1, time.Second},
		{"second", time.Second, time.Hour, 2, 2 * time.Second},
		{"third", time.Second, time.Hour, 3, 4 * time.Second},
		{"tenth", time.Second, time.Hour, 10, 512 * time.Second},
		{"twelfth: below the cap", time.Second, time.Hour, 12, 2048 * time.Second},
		{"thirteenth: 4096s, capped", time.Second, time.Hour, 13, time.Hour},
		{"far past the cap", time.Second, time.Hour, 1000, time.Hour},
		{"past int64 overflow", time.Second, time.Hour, math.MaxInt, time.Hour},
		{"attempt 0 counts as 1", time.Second, time.Hour, 0, time.Second},
		{"negative attempt counts as 1", time.Second, time.Hour, -3, time.Second},
		{"another base", 3 * time.Second, time.Minute, 4, 24 * time.Second},
		{"another base, capped", 3 * time.Second, time.Minute, 6, time.Minute},
		{"base equals the cap", time.Minute, time.Minute, 7, time.Minute},
	} {
		top := worker.ExponentialBackoff(tc.base, tc.limit, constSource(math.MaxUint64))
		if got := top(tc.attempt); got != tc.ceiling {
			t.Errorf("%s: the highest draw is %v, want the ceiling %v", tc.name, got, tc.ceiling)
		}
		bottom := worker.ExponentialBackoff(tc.base, tc.limit, constSource(1))
		if got := bottom(tc.attempt); got != time.Nanosecond {
			t.Errorf("%s: the lowest draw is %v, want 1ns (never 0)", tc.name, got)
		}
	}
}

func TestExponentialBackoffDrawsSpreadOverTheWholeRange(t *testing.T) {
	t.Parallel()
	const draws = 2000
	backoff := worker.ExponentialBackoff(time.Second, time.Hour, rand.NewPCG(1, 2))
	for attempt := 1; attempt <= 16; attempt++ {
		ceiling := min(time.Second<<(attempt-1), time.Hour)
		lo, hi := ceiling, time.Duration(0)
		for range draws {
			d := backoff(attempt)
			if d <= 0 || d > ceiling {
				t.Fatalf("attempt %d: %v is outside (0, %v]", attempt, d, ceiling)
			}
			lo, hi = min(lo, d), max(hi, d)
		}
		// Full jitter: the draws cover (0, ceiling], not a band below it.
		if lo > ceiling/20 || hi < ceiling*19/20 {
			t.Errorf("attempt %d: %d draws span [%v, %v], want nearly all of (0, %v]", attempt, draws, lo, hi, ceiling)
		}
	}
}

func TestExponentialBackoffWithASeedIsReproducible(t *testing.T) {
	t.Parallel()
	a := worker.ExponentialBackoff(time.Second, time.Hour, rand.NewPCG(7, 7))
	b := worker.ExponentialBackoff(time.Second, time.Hour, rand.NewPCG(7, 7))
	c := worker.ExponentialBackoff(time.Second, time.Hour, rand.NewPCG(8, 8))
	differs := false
	for n := range 200 {
		attempt := n%14 + 1
		da, db, dc := a(attempt), b(attempt), c(attempt)
		if da != db {
			t.Fatalf("draw %d: %v and %v from the same seed", n, da, db)
		}
		differs = differs || da != dc
	}
	if !differs {
		t.Error("another seed gave the same 200 delays")
	}
}

// The worker calls a type's backoff from every goroutine that finishes a
// job; the race detector checks the seeded source is guarded.
func TestExponentialBackoffIsSafeForConcurrentUse(t *testing.T) {
	t.Parallel()
	backoff := worker.ExponentialBackoff(time.Millisecond, time.Second, rand.NewPCG(1, 1))
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for attempt := range 500 {
				if d := backoff(attempt%12 + 1); d <= 0 || d > time.Second {
					t.Errorf("delay %v outside (0, 1s]", d)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestExponentialBackoffRejectsBadBounds(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ base, limit time.Duration }{
		{0, time.Second}, {-time.Second, time.Second}, {time.Minute, time.Second},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("ExponentialBackoff(%v, %v) did not panic", tc.base, tc.limit)
				}
			}()
			worker.ExponentialBackoff(tc.base, tc.limit, nil)
		}()
	}
	// Without a source it uses the process-wide one.
	if d := worker.ExponentialBackoff(time.Second, time.Minute, nil)(3); d <= 0 || d > 4*time.Second {
		t.Errorf("unseeded: %v outside (0, 4s]", d)
	}
}

// DefaultBackoff draws from the process-wide source, so only its bounds can
// be checked: (0, 1s·2^(n−1)], capped at 1h.
func TestDefaultBackoffStaysWithinItsCeiling(t *testing.T) {
	t.Parallel()
	backoff := worker.DefaultBackoff
	for attempt := -1; attempt <= 40; attempt++ {
		ceiling := min(time.Second<<max(min(attempt-1, 20), 0), time.Hour)
		for range 500 {
			if d := backoff(attempt); d <= 0 || d > ceiling {
				t.Fatalf("attempt %d: %v outside (0, %v]", attempt, d, ceiling)
			}
		}
	}
	// Both kinds plug into the Backoff option.
	w, err := worker.New(worker.Config{DatabaseURLs: []string{"postgres://unused"}, RabbitMQURL: "amqp://unused", RedisURL: "redis://unused"})
	must(t, err)
	noop := func(context.Context, *worker.Job[args]) (int, error) { return 0, nil }
	must(t, worker.Handle(w, "default", noop, worker.Backoff(worker.DefaultBackoff)))
	must(t, worker.Handle(w, "seeded", noop, worker.Backoff(worker.ExponentialBackoff(time.Second, time.Minute, rand.NewPCG(1, 2)))))
}
