package store

import (
	"context"
	"fmt"
	"slices"
	"sync"
)

// onShards runs fn for each of shards at once and returns the results of
// the shards that answered, and one *ShardError, labelled with what, for
// each shard that failed. It waits for every shard: fn's statements end
// with ctx even on a shard that has stopped answering (see deadline.go), so
// a frozen shard costs the others nothing past ctx's end.
func onShards[T any](ctx context.Context, shards []int, what string, fn func(shard int) ([]T, error)) ([]T, []error) {
	outs := make([][]T, len(shards))
	errs := make([]error, len(shards))
	var wg sync.WaitGroup
	for i, n := range shards {
		wg.Go(func() {
			out, err := fn(n)
			if err != nil {
				if ctx.Err() != nil {
					err = fmt.Errorf("no answer: %w (%w)", ctx.Err(), err)
				}
				errs[i] = &ShardError{Shard: n, Err: fmt.Errorf("%s: %w", what, err)}
				return
			}
			outs[i] = out
		})
	}
	wg.Wait()
	return slices.Concat(outs...), slices.DeleteFunc(errs, func(err error) bool { return err == nil })
}

// allShards lists the store's shards, for onShards.
func (s *Store) allShards() []int {
	shards := make([]int, len(s.shards))
	for i := range shards {
		shards[i] = i
	}
	return shards
}
