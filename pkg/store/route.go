package store

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/lib/pq"

	"github.com/warrenhq/warren/pkg/job"
)

// InsertRouted stores a new job, starting with the shard its id names. When
// that shard cannot even be reached (the connection is refused or times out
// before anything is sent), the job gets a fresh id on the next shard and is
// tried there, so submits route around a shard that is down. Any other error
// is returned as is: a statement that may have committed is never repeated
// elsewhere, which would make two jobs of one.
func (s *Store) InsertRouted(ctx context.Context, j *job.Job) error {
	first := j.ID.Shard()
	var errs []error
	for i := range len(s.shards) {
		shard := (first + i) % len(s.shards)
		if i > 0 {
			j.ID = job.NewID(j.CreatedAt, shard)
		}
		err := s.Insert(ctx, j)
		if err == nil {
			return nil
		}
		errs = append(errs, err)
		if !unreachable(err) || ctx.Err() != nil {
			break
		}
	}
	return fmt.Errorf("no shard took the job: %w", errors.Join(errs...))
}

// unreachable reports an error from reaching the shard, before any statement
// was sent, so nothing can have been committed: the dial failed, or the
// server refused the new connection because it is starting up or shutting
// down (SQLSTATE 57P03, cannot_connect_now, is only sent at connection start).
func unreachable(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	var pe *pq.Error
	return errors.As(err, &pe) && pe.Code == cannotConnectNow
}

// cannotConnectNow is SQLSTATE 57P03.
const cannotConnectNow = "57P03"
