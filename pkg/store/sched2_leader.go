package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"sync"
	"time"

	"github.com/lib/pq"
)

// ErrNotLeader is returned by Elector.Check when the elector does not hold
// the leadership.
var ErrNotLeader = errors.New("not the leader")

// Elector competes for the leadership among the schedulers that share this
// store. The leadership is a session-level Postgres advisory lock on shard
// 0, taken with pg_try_advisory_lock on a connection of the elector's own,
// outside the store's pools: it lasts exactly as long as that session. When
// the leader's process dies, its connection closes and Postgres frees the
// lock at once. When the leader freezes or loses the network, Postgres ends
// the session after SessionTimeout without a Check (idle_session_timeout),
// which frees the lock too.
//
// The lock is named after the shard's database and schema, so clusters
// that share a Postgres server, or a database with a schema each, elect
// their leaders apart.
//
// An Elector is used by one goroutine at a time.
type Elector struct {
	url     string
	timeout time.Duration

	dialer *trackingDialer
	db     *sql.DB
	conn   *sql.Conn
	key    int64
	held   bool
}

// NewElector returns an Elector for this store's cluster. sessionTimeout
// (zero: none) is how long Postgres keeps the lock's session without a
// statement; Check must run more often than that.
func (s *Store) NewElector(sessionTimeout time.Duration) *Elector {
	return &Elector{url: s.urls[0], timeout: sessionTimeout}
}

// TryAcquire takes the leadership if no one holds it, without waiting. It
// reports whether this elector holds it now. A standby calls it again from
// time to time; its connection stays open between calls.
func (e *Elector) TryAcquire(ctx context.Context) (bool, error) {
	if e.held {
		return true, nil
	}
	if e.conn == nil {
		if err := e.connect(ctx); err != nil {
			e.Drop()
			return false, err
		}
	}
	var got bool
	if err := e.conn.QueryRowContext(ctx, `SELECT pg_try_advisory_lock($1)`, e.key).Scan(&got); err != nil {
		e.Drop()
		return false, fmt.Errorf("leader lock on shard 0: %w", err)
	}
	e.held = got
	return got, nil
}

// Check confirms that the leadership is still held: the lock's session
// answers a statement before ctx ends. On any failure the elector drops its
// connection (so the lock is freed as soon as Postgres notices, and a
// session still alive gives it up at once) and the leadership is lost.
func (e *Elector) Check(ctx context.Context) error {
	if !e.held {
		return ErrNotLeader
	}
	// The statement runs without ctx: lib/pq's cancellation would dial a
	// new connection to the server that is not answering. Closing the
	// socket ends it instead.
	done := make(chan error, 1)
	conn := e.conn
	go func() {
		_, err := conn.ExecContext(context.Background(), `SELECT 1`)
		done <- err
	}()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		e.dialer.closeAll()
		<-done
		err = ctx.Err()
	}
	if err != nil {
		e.Drop()
		return fmt.Errorf("leader lock on shard 0: session lost: %w", err)
	}
	return nil
}

// Held reports whether the elector holds the leadership, as of the last
// TryAcquire or Check.
func (e *Elector) Held() bool { return e.held }

// Drop closes the elector's connection, giving up the leadership if it held
// it: Postgres frees the lock when the session ends. A later TryAcquire
// connects again.
func (e *Elector) Drop() {
	// Closing the pool says goodbye to Postgres properly; closing the
	// sockets afterwards covers a server that does not answer.
	if e.conn != nil {
		_ = e.conn.Close()
	}
	if e.db != nil {
		_ = e.db.Close()
	}
	if e.dialer != nil {
		e.dialer.closeAll()
	}
	e.dialer, e.db, e.conn, e.held = nil, nil, nil, false
}

func (e *Elector) connect(ctx context.Context) error {
	connector, err := pq.NewConnector(e.url)
	if err != nil {
		return fmt.Errorf("leader lock on shard 0: %w", err)
	}
	e.dialer = &trackingDialer{}
	connector.Dialer(e.dialer)
	e.db = sql.OpenDB(connector)
	e.db.SetMaxOpenConns(1)
	e.db.SetMaxIdleConns(1)
	if e.conn, err = e.db.Conn(ctx); err != nil {
		return fmt.Errorf("leader lock on shard 0: connect: %w", err)
	}
	var where string
	if err := e.conn.QueryRowContext(ctx, leaderNameQuery).Scan(&where); err != nil {
		return fmt.Errorf("leader lock on shard 0: %w", err)
	}
	e.key = leaderKey(where)
	if _, err := e.conn.ExecContext(ctx, `SET application_name = 'warren-scheduler-elector'`); err != nil {
		return fmt.Errorf("leader lock on shard 0: %w", err)
	}
	if e.timeout > 0 {
		_, err := e.conn.ExecContext(ctx, fmt.Sprintf(`SET idle_session_timeout = %d`, e.timeout.Milliseconds()))
		// Before Postgres 14 there is no idle_session_timeout: a frozen
		// leader then keeps the lock until its connection breaks.
		var pqErr *pq.Error
		if err != nil && !(errors.As(err, &pqErr) && pqErr.Code == "42704") {
			return fmt.Errorf("leader lock on shard 0: %w", err)
		}
	}
	return nil
}

// leaderNameQuery names the cluster the lock is for.
const leaderNameQuery = `SELECT current_database() || '/' || coalesce(current_schema(), '')`

// leaderKey is the advisory lock key of the cluster named where.
func leaderKey(where string) int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte("warren/scheduler-leader/" + where))
	return int64(h.Sum64())
}

// LeaderPID returns the Postgres backend pid of the session that holds this
// store's leader lock on shard 0, and whether anyone holds it: who the
// leader is, for an operator (pg_stat_activity) or a test that cuts the
// leader's connection with pg_terminate_backend.
func (s *Store) LeaderPID(ctx context.Context) (int, bool, error) {
	var where string
	if err := s.shards[0].GetContext(ctx, &where, leaderNameQuery); err != nil {
		return 0, false, fmt.Errorf("leader pid: %w", err)
	}
	key := leaderKey(where)
	var pids []int
	err := s.shards[0].SelectContext(ctx, &pids, `SELECT pid FROM pg_locks
		WHERE locktype = 'advisory' AND granted AND objsubid = 1
			AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
			AND classid = $1::bigint::oid AND objid = $2::bigint::oid`,
		int64(uint64(key)>>32), int64(uint64(key)&0xffffffff))
	if err != nil {
		return 0, false, fmt.Errorf("leader pid: %w", err)
	}
	if len(pids) == 0 {
		return 0, false, nil
	}
	return pids[0], true, nil
}

// trackingDialer dials like lib/pq's default dialer and remembers the
// connections, so that the elector can close them outright.
type trackingDialer struct {
	d     net.Dialer
	mu    sync.Mutex
	conns []net.Conn
}

func (t *trackingDialer) Dial(network, address string) (net.Conn, error) {
	return t.DialContext(context.Background(), network, address)
}

func (t *trackingDialer) DialTimeout(network, address string, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return t.DialContext(ctx, network, address)
}

func (t *trackingDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	c, err := t.d.DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	t.conns = append(t.conns, c)
	t.mu.Unlock()
	return c, nil
}

func (t *trackingDialer) closeAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, c := range t.conns {
		_ = c.Close()
	}
	t.conns = nil
}
