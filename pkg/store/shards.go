package store

import (
	"context"
	"errors"
	"fmt"
)

// onShards runs one statement per shard of work at once, fn(shard, ids),
// and returns the results of the shards that answered before ctx ended.
// The errors, fn's and ctx's for the shards that had not answered by then,
// come back as *ShardError values (what names the statement) joined into
// one error. It does not wait for a shard that does not answer: a frozen
// server never answers lib/pq's cancel, and the other shards' work must not
// wait for it. A statement left behind ends when its server answers again.
func onShards[T any](ctx context.Context, work map[int][]string, what string, fn func(shard int, ids []string) ([]T, error)) ([]T, error) {
	type answer struct {
		shard int
		out   []T
		err   error
	}
	answers := make(chan answer, len(work)) // a statement left behind never blocks
	for n, ids := range work {
		go func() {
			out, err := fn(n, ids)
			answers <- answer{shard: n, out: out, err: err}
		}()
	}
	pending := make(map[int]int, len(work)) // shard: ids, of the shards yet to answer
	for n, ids := range work {
		pending[n] = len(ids)
	}
	var out []T
	var errs []error
	for range len(work) {
		select {
		case a := <-answers:
			delete(pending, a.shard)
			if a.err != nil {
				errs = append(errs, &ShardError{Shard: a.shard, Err: fmt.Errorf("%s %d jobs: %w", what, len(work[a.shard]), a.err)})
				continue
			}
			out = append(out, a.out...)
		case <-ctx.Done():
			for n, ids := range pending {
				errs = append(errs, &ShardError{Shard: n, Err: fmt.Errorf("%s %d jobs: %w", what, ids, ctx.Err())})
			}
			return out, errors.Join(errs...)
		}
	}
	return out, errors.Join(errs...)
}
