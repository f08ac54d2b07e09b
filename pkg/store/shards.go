package store

import (
	"context"
	"fmt"
)

// onShards runs fn for each of shards at once and returns the results of
// the shards that answered before ctx ended, and one *ShardError for each
// shard that failed (fn's error) or had not answered by then (ctx's),
// labelled with what. It does not wait for a shard that does not answer: a
// frozen server never answers lib/pq's cancel, and the other shards' work
// must not wait for it. A statement left behind ends when its server
// answers again.
func onShards[T any](ctx context.Context, shards []int, what string, fn func(shard int) ([]T, error)) ([]T, []error) {
	type answer struct {
		shard int
		out   []T
		err   error
	}
	answers := make(chan answer, len(shards)) // a statement left behind never blocks
	pending := make(map[int]bool, len(shards))
	for _, n := range shards {
		pending[n] = true
		go func() {
			out, err := fn(n)
			answers <- answer{shard: n, out: out, err: err}
		}()
	}
	var out []T
	var errs []error
	for range len(shards) {
		select {
		case a := <-answers:
			delete(pending, a.shard)
			if a.err != nil {
				errs = append(errs, &ShardError{Shard: a.shard, Err: fmt.Errorf("%s: %w", what, a.err)})
				continue
			}
			out = append(out, a.out...)
		case <-ctx.Done():
			for n := range pending {
				errs = append(errs, &ShardError{Shard: n, Err: fmt.Errorf("%s: no answer: %w", what, ctx.Err())})
			}
			return out, errs
		}
	}
	return out, errs
}

// allShards lists the store's shards, for onShards.
func (s *Store) allShards() []int {
	shards := make([]int, len(s.shards))
	for i := range shards {
		shards[i] = i
	}
	return shards
}
