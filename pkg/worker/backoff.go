package worker

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"time"
)

// DefaultBackoff is the delay before retrying after the given attempt
// (1 for the first) failed, unless the type sets its own with the Backoff
// option: exponential from 1s, capped at 1h, with full jitter. It is
// ExponentialBackoff(time.Second, time.Hour, nil).
func DefaultBackoff(attempt int) time.Duration {
	return fullJitter(time.Second, time.Hour, attempt, rand.Int64N)
}

// ExponentialBackoff returns a backoff for the Backoff option: after attempt
// n (from 1) failed, a delay drawn uniformly from (0, ceiling], where the
// ceiling is base·2^(n−1), at most limit ("full jitter": retries of jobs that
// failed together spread out instead of hammering in step).
//
// src is the source of randomness; nil uses the process-wide one. Pass a
// seeded source (rand.NewPCG) for a reproducible sequence; the returned
// function is safe for concurrent use either way. It panics unless
// 0 < base ≤ limit.
func ExponentialBackoff(base, limit time.Duration, src rand.Source) func(attempt int) time.Duration {
	if base <= 0 || limit < base {
		panic(fmt.Sprintf("worker: ExponentialBackoff(%v, %v): want 0 < base ≤ limit", base, limit))
	}
	if src == nil {
		return func(attempt int) time.Duration { return fullJitter(base, limit, attempt, rand.Int64N) }
	}
	var mu sync.Mutex // a rand.Rand is not safe for concurrent use
	r := rand.New(src)
	draw := func(n int64) int64 {
		mu.Lock()
		defer mu.Unlock()
		return r.Int64N(n)
	}
	return func(attempt int) time.Duration { return fullJitter(base, limit, attempt, draw) }
}

// backoffCeiling is base·2^(attempt−1), at most limit; attempts below 1
// count as 1.
func backoffCeiling(base, limit time.Duration, attempt int) time.Duration {
	shift := max(attempt-1, 0)
	if shift >= 62 || base > limit>>shift {
		return limit // base<<shift would pass limit, or overflow
	}
	return base << shift
}

// fullJitter draws a delay from (0, ceiling] with int64n, which returns a
// value in [0, n).
func fullJitter(base, limit time.Duration, attempt int, int64n func(n int64) int64) time.Duration {
	return time.Duration(int64n(int64(backoffCeiling(base, limit, attempt))) + 1)
}
