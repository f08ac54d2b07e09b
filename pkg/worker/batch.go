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
// shard (the claims and completions waiting at the same moment go in one
// statement, see store.ClaimComplete), announcements of finished jobs across
// all of them. An idle group runs a call at once; there is no timer, so a
// lone job waits for nothing.
type batches struct {
	store    *store.Store
	workerID string
	lease    time.Duration
	tenants  []string // claimed only; empty: every tenant

	writes    []*coalesce.Group[write, store.Result] // by shard
	announces *coalesce.Group[*job.Job, error]
}

// write is a claim of id, or with done set, the completion *done.
type write struct {
	id   job.ID
	done *store.Completion
}

func newBatches(st *store.Store, ca *cache.Cache, workerID string, lease time.Duration, tenants []string) *batches {
	b := &batches{store: st, workerID: workerID, lease: lease, tenants: tenants}
	for range st.Shards() {
		b.writes = append(b.writes, coalesce.New(maxBatch, writeTimeout, b.round))
	}
	b.announces = coalesce.New(maxBatch, writeTimeout,
		func(ctx context.Context, jobs []*job.Job) ([]error, error) {
			return ca.Announce(ctx, jobs), nil
		})
	return b
}

// round writes one shard's waiting claims and completions.
func (b *batches) round(ctx context.Context, ws []write) ([]store.Result, error) {
	var ids []job.ID
	var items []store.Completion
	for _, w := range ws {
		if w.done != nil {
			items = append(items, *w.done)
		} else {
			ids = append(ids, w.id)
		}
	}
	claimed, completed := b.store.ClaimComplete(ctx, ids, items, b.workerID, b.lease, b.tenants)
	out := make([]store.Result, len(ws))
	for i, w := range ws {
		if w.done != nil {
			out[i], completed = completed[0], completed[1:]
		} else {
			out[i], claimed = claimed[0], claimed[1:]
		}
	}
	return out, nil
}

// claimPatience is how long a claim waits behind its shard's running
// statement before it gives up (coalesce.ErrBusy; the claim never ran) and
// the message is set aside. A claim round takes milliseconds, and under a
// heavy load still well under a second; one running for longer means the
// shard has stopped answering (frozen, or a network stall), and a slot that
// waited on it would keep a job of another shard waiting too.
const claimPatience = 2 * time.Second

// claim claims one job, in a batch with the other writes on its shard. It
// returns coalesce.ErrBusy, having written nothing, when the shard's
// statement has run for longer than claimPatience.
func (b *batches) claim(ctx context.Context, id job.ID) (*job.Job, error) {
	if n := id.Shard(); n < len(b.writes) {
		r, err := b.writes[n].DoWithin(ctx, write{id: id}, claimPatience)
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
// other writes on its shard.
func (b *batches) complete(ctx context.Context, c store.Completion) (*job.Job, error) {
	if n := c.ID.Shard(); n < len(b.writes) {
		r, err := b.writes[n].Do(ctx, write{id: c.ID, done: &c})
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
