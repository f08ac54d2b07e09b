package worker

import (
	"context"
	"time"

	"github.com/warrenhq/warren/pkg/cache"
	"github.com/warrenhq/warren/pkg/coalesce"
	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/store"
)

// maxBatch bounds the items of one claim, completion or announcement batch.
// Batches only grow while one is running, so in practice they are bounded
// by the jobs in flight (Concurrency); this keeps a huge Concurrency from
// building statements of unbounded size.
const maxBatch = 500

// batches coalesces the writes of the job path, so that many jobs share one
// statement per shard and one Redis round trip: claims and completions per
// shard, announcements of finished jobs across all of them. An idle group
// runs a call at once; there is no timer, so a lone job waits for nothing.
type batches struct {
	store    *store.Store
	workerID string
	lease    time.Duration
	tenants  []string // claimed only; empty: every tenant

	claims    []*coalesce.Group[job.ID, store.Result]           // by shard
	completes []*coalesce.Group[store.Completion, store.Result] // by shard
	announces *coalesce.Group[*job.Job, error]
}

func newBatches(st *store.Store, ca *cache.Cache, workerID string, lease time.Duration, tenants []string) *batches {
	b := &batches{store: st, workerID: workerID, lease: lease, tenants: tenants}
	for range st.Shards() {
		b.claims = append(b.claims, coalesce.New(maxBatch, writeTimeout,
			func(ctx context.Context, ids []job.ID) ([]store.Result, error) {
				return st.ClaimBatch(ctx, ids, workerID, lease, tenants), nil
			}))
		b.completes = append(b.completes, coalesce.New(maxBatch, writeTimeout,
			func(ctx context.Context, items []store.Completion) ([]store.Result, error) {
				return st.CompleteBatch(ctx, items), nil
			}))
	}
	b.announces = coalesce.New(maxBatch, writeTimeout,
		func(ctx context.Context, jobs []*job.Job) ([]error, error) {
			return ca.Announce(ctx, jobs), nil
		})
	return b
}

// claim claims one job, in a batch with the other claims on its shard.
func (b *batches) claim(ctx context.Context, id job.ID) (*job.Job, error) {
	if n := id.Shard(); n < len(b.claims) {
		r, err := b.claims[n].Do(ctx, id)
		if err != nil {
			return nil, err
		}
		return r.Job, r.Err
	}
	// A shard this store does not have: the store says so, as for any id.
	r := b.store.ClaimBatch(ctx, []job.ID{id}, b.workerID, b.lease, b.tenants)[0]
	return r.Job, r.Err
}

// complete records the success of a running attempt, in a batch with the
// other completions on its shard.
func (b *batches) complete(ctx context.Context, c store.Completion) (*job.Job, error) {
	if n := c.ID.Shard(); n < len(b.completes) {
		r, err := b.completes[n].Do(ctx, c)
		if err != nil {
			return nil, err
		}
		return r.Job, r.Err
	}
	r := b.store.CompleteBatch(ctx, []store.Completion{c})[0]
	return r.Job, r.Err
}

// announce caches a finished job and publishes its done event, in one
// pipelined round trip with the other jobs finishing meanwhile.
func (b *batches) announce(ctx context.Context, j *job.Job) error {
	errOne, err := b.announces.Do(ctx, j)
	if err != nil {
		return err
	}
	return errOne
}
