package store

import (
	"context"
	"fmt"
	"sync"

	"github.com/jmoiron/sqlx"
)

// The statements of the job path (the group INSERT, batch claims and
// completions, lease renewals, publish marks) run many times a second with
// the same text. Prepared once, each run is one round trip (bind, execute)
// that Postgres neither parses nor plans again; unprepared, lib/pq spends a
// round trip on parse and describe first, and Postgres plans every run.

// stmtCache is one shard's prepared statements by query text.
type stmtCache struct {
	mu sync.Mutex
	m  map[string]*sqlx.Stmt
}

// prepared returns shard's prepared statement for query, preparing it on
// first use. A failed prepare is not kept: the next call tries again.
// database/sql prepares it again by itself on every new connection.
func (s *Store) prepared(ctx context.Context, shard int, query string) (*sqlx.Stmt, error) {
	c := &s.stmts[shard]
	c.mu.Lock()
	defer c.mu.Unlock()
	if st, ok := c.m[query]; ok {
		return st, nil
	}
	st, err := s.shards[shard].PreparexContext(ctx, query)
	if err != nil {
		return nil, fmt.Errorf("prepare: %w", err)
	}
	if c.m == nil {
		c.m = make(map[string]*sqlx.Stmt)
	}
	c.m[query] = st
	return st, nil
}

// selectPrepared runs query on shard as a prepared statement into dest.
func (s *Store) selectPrepared(ctx context.Context, shard int, dest any, query string, args ...any) error {
	st, err := s.prepared(ctx, shard, query)
	if err != nil {
		return err
	}
	return st.SelectContext(ctx, dest, args...)
}

// execPrepared runs query on shard as a prepared statement.
func (s *Store) execPrepared(ctx context.Context, shard int, query string, args ...any) error {
	st, err := s.prepared(ctx, shard, query)
	if err != nil {
		return err
	}
	_, err = st.ExecContext(ctx, args...)
	return err
}
