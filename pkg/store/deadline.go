package store

import (
	"context"
	"database/sql/driver"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lib/pq"
)

// lib/pq answers a context that ends during a statement by asking the server
// to cancel it, and waits for the server's reply. A server that is frozen
// (stopped, or its host stalled) never replies: the caller stays blocked in
// a read, past any deadline, until the server thaws. The connector below
// gives each statement the deadline of its context: when the context ends,
// the statement's socket gets a deadline of now, its read fails at once, and
// lib/pq returns an error and drops the connection (it drops a connection
// whose statement's context ended in any case). lib/pq's cancel request
// still goes out, so a server that is only slow stops the statement too.
//
// A deadline costs a context.AfterFunc per statement, no goroutine until the
// context ends.
//
// The statements that store a submitted job are the exception (awaitAnswer):
// their caller must learn the true outcome, since a 2xx means committed and
// an error means it was not, and a statement cut short on a frozen server
// may still commit when the server thaws.

type awaitAnswerKey struct{}

// awaitAnswer marks ctx's statements as ones that wait for the server's
// answer, as lib/pq does: when ctx ends, lib/pq asks the server to cancel
// the statement and returns what the server says, however long a frozen
// server takes to say it.
func awaitAnswer(ctx context.Context) context.Context {
	return context.WithValue(ctx, awaitAnswerKey{}, true)
}

// rollbackTimeout bounds a rollback and a prepared statement's close, which
// lib/pq runs without a context.
const rollbackTimeout = 5 * time.Second

// newConnector returns a connector for url whose connections honour their
// statements' contexts (see above).
func newConnector(url string) (driver.Connector, error) {
	c, err := pq.NewConnector(url)
	if err != nil {
		return nil, err
	}
	c.Dialer(slotDialer{})
	return deadlineConnector{c}, nil
}

type deadlineConnector struct{ pq *pq.Connector }

func (c deadlineConnector) Driver() driver.Driver { return c.pq.Driver() }

// Connect opens a connection; a context that ends during the handshake
// ends it too (database/sql opens connections in the caller's goroutine).
func (c deadlineConnector) Connect(ctx context.Context) (driver.Conn, error) {
	slot := &dialSlot{}
	stop := context.AfterFunc(ctx, slot.expire)
	conn, err := c.pq.Connect(context.WithValue(ctx, dialSlotKey{}, slot))
	stop()
	slot.mu.Lock()
	defer slot.mu.Unlock()
	slot.done = true
	if err != nil {
		return nil, err
	}
	if slot.conn == nil {
		return conn, nil // not dialed through slotDialer: lib/pq's own behaviour
	}
	if slot.expired {
		_ = slot.conn.SetDeadline(time.Time{}) // the handshake finished anyway
	}
	return &deadlineConn{pq: conn, raw: slot.conn}, nil
}

// dialSlot receives the socket that one Connect dials.
type dialSlot struct {
	mu      sync.Mutex
	conn    net.Conn
	expired bool // the Connect's context ended
	done    bool // the Connect returned
}

// expire ends the handshake under way, or the one about to start.
func (s *dialSlot) expire() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return
	}
	s.expired = true
	if s.conn != nil {
		_ = s.conn.SetDeadline(time.Now())
	}
}

func (s *dialSlot) set(c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.conn = c
	if s.expired {
		_ = c.SetDeadline(time.Now())
	}
}

type dialSlotKey struct{}

// slotDialer dials like lib/pq's default dialer and hands the socket to the
// Connect whose context carries a slot (lib/pq's cancel requests carry none).
type slotDialer struct{}

func (slotDialer) Dial(network, address string) (net.Conn, error) {
	return slotDialer{}.DialContext(context.Background(), network, address)
}

func (slotDialer) DialTimeout(network, address string, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return slotDialer{}.DialContext(ctx, network, address)
}

func (slotDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	if slot, ok := ctx.Value(dialSlotKey{}).(*dialSlot); ok {
		slot.set(c)
	}
	return c, nil
}

// deadlineConn is a lib/pq connection whose statements end with their
// contexts.
type deadlineConn struct {
	pq  driver.Conn
	raw net.Conn
	bad atomic.Bool // a deadline fired: never to be used again
}

// watch gives c's socket the deadline of ctx until the returned stop is
// called. A connection whose deadline fired is done for, whether or not
// its statement finished: its protocol state is unknown, and database/sql
// drops it (IsValid, ResetSession).
func (c *deadlineConn) watch(ctx context.Context) (stop func()) {
	if ctx.Value(awaitAnswerKey{}) != nil {
		return func() {}
	}
	var mu sync.Mutex
	done := false
	stopAfter := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		if !done {
			c.bad.Store(true)
			_ = c.raw.SetDeadline(time.Now())
		}
	})
	return func() {
		stopAfter()
		mu.Lock()
		defer mu.Unlock()
		done = true
	}
}

// within runs fn under a fresh timeout, for the calls lib/pq makes without
// a context.
func (c *deadlineConn) within(timeout time.Duration, fn func() error) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	stop := c.watch(ctx)
	defer stop()
	return fn()
}

func (c *deadlineConn) Prepare(query string) (driver.Stmt, error) {
	return c.PrepareContext(context.Background(), query)
}

func (c *deadlineConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	stop := c.watch(ctx)
	defer stop()
	st, err := c.pq.(driver.ConnPrepareContext).PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	return &deadlineStmt{pq: st, c: c}, nil
}

func (c *deadlineConn) Close() error { return c.pq.Close() }

func (c *deadlineConn) Begin() (driver.Tx, error) {
	return c.BeginTx(context.Background(), driver.TxOptions{})
}

func (c *deadlineConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	stop := c.watch(ctx)
	defer stop()
	tx, err := c.pq.(driver.ConnBeginTx).BeginTx(ctx, opts)
	if err != nil {
		return nil, err
	}
	return &deadlineTx{pq: tx, c: c, ctx: ctx}, nil
}

func (c *deadlineConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	stop := c.watch(ctx)
	defer stop()
	return c.pq.(driver.ExecerContext).ExecContext(ctx, query, args)
}

func (c *deadlineConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	stop := c.watch(ctx)
	rows, err := c.pq.(driver.QueryerContext).QueryContext(ctx, query, args)
	if err != nil {
		stop()
		return nil, err
	}
	return &deadlineRows{Rows: rows, stop: stop}, nil
}

func (c *deadlineConn) Ping(ctx context.Context) error {
	stop := c.watch(ctx)
	defer stop()
	return c.pq.(driver.Pinger).Ping(ctx)
}

func (c *deadlineConn) ResetSession(ctx context.Context) error {
	if c.bad.Load() {
		return driver.ErrBadConn
	}
	return c.pq.(driver.SessionResetter).ResetSession(ctx)
}

func (c *deadlineConn) IsValid() bool { return !c.bad.Load() && c.pq.(driver.Validator).IsValid() }

func (c *deadlineConn) CheckNamedValue(nv *driver.NamedValue) error {
	return c.pq.(driver.NamedValueChecker).CheckNamedValue(nv)
}

type deadlineTx struct {
	pq  driver.Tx
	c   *deadlineConn
	ctx context.Context
}

func (t *deadlineTx) Commit() error {
	stop := t.c.watch(t.ctx)
	defer stop()
	return t.pq.Commit()
}

// Rollback is bounded on its own: database/sql rolls back when the
// transaction's context ends, and a rollback cut short at once would drop
// the connection of every transaction ended that way.
func (t *deadlineTx) Rollback() error {
	return t.c.within(rollbackTimeout, t.pq.Rollback)
}

type deadlineStmt struct {
	pq driver.Stmt
	c  *deadlineConn
}

func (s *deadlineStmt) Close() error {
	return s.c.within(rollbackTimeout, s.pq.Close)
}

func (s *deadlineStmt) NumInput() int { return s.pq.NumInput() }

// Exec and Query complete driver.Stmt; database/sql calls the Context ones.
func (s *deadlineStmt) Exec(args []driver.Value) (driver.Result, error) {
	return s.ExecContext(context.Background(), named(args))
}

func (s *deadlineStmt) Query(args []driver.Value) (driver.Rows, error) {
	return s.QueryContext(context.Background(), named(args))
}

func named(args []driver.Value) []driver.NamedValue {
	out := make([]driver.NamedValue, len(args))
	for i, v := range args {
		out[i] = driver.NamedValue{Ordinal: i + 1, Value: v}
	}
	return out
}

func (s *deadlineStmt) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	stop := s.c.watch(ctx)
	defer stop()
	return s.pq.(driver.StmtExecContext).ExecContext(ctx, args)
}

func (s *deadlineStmt) QueryContext(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	stop := s.c.watch(ctx)
	rows, err := s.pq.(driver.StmtQueryContext).QueryContext(ctx, args)
	if err != nil {
		stop()
		return nil, err
	}
	return &deadlineRows{Rows: rows, stop: stop}, nil
}

// deadlineRows keeps its statement's deadline until it is closed: lib/pq
// reads the rows from the socket as they are scanned.
type deadlineRows struct {
	driver.Rows
	stop func()
}

func (r *deadlineRows) Close() error {
	defer r.stop()
	return r.Rows.Close()
}

func (r *deadlineRows) HasNextResultSet() bool {
	return r.Rows.(driver.RowsNextResultSet).HasNextResultSet()
}

func (r *deadlineRows) NextResultSet() error {
	return r.Rows.(driver.RowsNextResultSet).NextResultSet()
}
