package broker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Sentinel errors. Match them with errors.Is.
var (
	// ErrNotConfirmed means RabbitMQ did not confirm a published message: it
	// nacked it, or the channel or connection closed before the confirm
	// arrived. The message may or may not have been enqueued; publish again.
	ErrNotConfirmed = errors.New("broker: message not confirmed")
	// ErrClosed is returned by every method once Close has been called.
	ErrClosed = errors.New("broker: closed")
	// ErrBadQueue means a Warren queue name is empty, longer than 100 bytes,
	// or contains a byte outside [A-Za-z0-9_.:-].
	ErrBadQueue = errors.New("broker: bad queue name")
)

// Defaults applied by New to zero-valued Config fields.
const (
	DefaultPrefix          = "warren"
	DefaultMaxPriority     = 9
	DefaultPublishChannels = 4
	DefaultConnectionName  = "warren"
	DefaultParkDelay       = 5 * time.Second
)

const (
	dialTimeout    = 10 * time.Second
	heartbeat      = 10 * time.Second
	closeTimeout   = 5 * time.Second
	backoffInitial = 100 * time.Millisecond
	backoffMax     = 5 * time.Second
)

// Config configures a Broker. Zero values take the defaults documented on each
// field.
type Config struct {
	// URL is the AMQP URL, e.g. amqp://user:pass@host:5672/vhost. Required.
	URL string
	// Prefix prefixes every exchange and queue name the broker declares, so
	// several Warren installations (or tests) can share one RabbitMQ vhost.
	// Default "warren".
	Prefix string
	// MaxPriority is the x-max-priority of job queues; message priorities
	// above it are clamped. Default 9. Changing it for an existing queue makes
	// its declaration fail: RabbitMQ does not allow redefining a queue.
	MaxPriority uint8
	// PublishChannels is the number of confirm-mode channels Publish uses;
	// it bounds how many Publish calls are in flight at once. Default 4.
	PublishChannels int
	// ConnectionName names the connection in the RabbitMQ management UI.
	// Default "warren".
	ConnectionName string
	// ParkDelay is how long a parked message waits before it returns to its
	// queue. Default 5s. Like MaxPriority it is part of the park queue's
	// definition and must not change for an existing queue.
	ParkDelay time.Duration
}

// withDefaults returns cfg with the zero fields set to their defaults.
func (cfg Config) withDefaults() Config {
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.MaxPriority == 0 {
		cfg.MaxPriority = DefaultMaxPriority
	}
	if cfg.PublishChannels == 0 {
		cfg.PublishChannels = DefaultPublishChannels
	}
	if cfg.ConnectionName == "" {
		cfg.ConnectionName = DefaultConnectionName
	}
	if cfg.ParkDelay == 0 {
		cfg.ParkDelay = DefaultParkDelay
	}
	return cfg
}

// validate reports every problem with a defaulted cfg at once.
func (cfg Config) validate() error {
	var errs []error
	if cfg.URL == "" {
		errs = append(errs, errors.New("URL is required"))
	} else if _, err := amqp.ParseURI(cfg.URL); err != nil {
		errs = append(errs, fmt.Errorf("URL %s: %w", redactURL(cfg.URL), redact(err, cfg.URL)))
	}
	if err := checkName(cfg.Prefix); err != nil {
		errs = append(errs, fmt.Errorf("config field Prefix %q: %w", cfg.Prefix, err))
	}
	if cfg.PublishChannels < 0 {
		errs = append(errs, fmt.Errorf("config field PublishChannels %d: must be positive", cfg.PublishChannels))
	}
	if cfg.ParkDelay < time.Millisecond {
		errs = append(errs, fmt.Errorf("config field ParkDelay %s: must be at least 1ms", cfg.ParkDelay))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("broker: invalid config: %w", err)
	}
	return nil
}

// Broker publishes to and consumes from RabbitMQ over one self-healing
// connection. It is safe for concurrent use. Create it with New and release
// it with Close.
type Broker struct {
	cfg  Config
	log  *slog.Logger
	done <-chan struct{} // closed by Close
	stop context.CancelFunc
	wg   sync.WaitGroup // the supervisor goroutine and channels closing in the background

	pubSlots chan struct{} // one token per publish channel in use
	tags     atomic.Uint64 // consumer tag sequence

	mu      sync.Mutex
	closed  bool
	conn    *amqp.Connection // nil while disconnected
	up      chan struct{}    // closed when conn becomes usable; replaced when it is lost
	lastErr error            // why the last connection ended or the last dial failed
	queues  map[string]bool  // Warren queues declared so far, re-declared after a reconnect
	freePub []*pubChannel    // idle confirm channels on conn
}

// New validates cfg, connects to RabbitMQ and returns a Broker that keeps
// that connection alive until Close. The first dial honours ctx and its
// failure is returned; later drops are repaired in the background. A nil log
// discards log output.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*Broker, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	runCtx, stop := context.WithCancel(context.Background())
	b := &Broker{
		cfg:      cfg,
		log:      log.With("component", "broker", "connection_name", cfg.ConnectionName),
		done:     runCtx.Done(),
		stop:     stop,
		pubSlots: make(chan struct{}, cfg.PublishChannels),
		up:       make(chan struct{}),
		queues:   make(map[string]bool),
	}
	conn, err := b.dial(ctx)
	if err != nil {
		stop()
		return nil, fmt.Errorf("broker: connect to %s: %w", redactURL(cfg.URL), err)
	}
	closes, _ := b.install(conn)
	b.log.Info("broker connected")
	b.wg.Add(1)
	go b.supervise(runCtx, conn, closes)
	return b, nil
}

// Close closes the connection and every channel on it. Consume calls return
// ErrClosed, and later calls of any method fail with ErrClosed. When Close
// returns, the goroutines the broker started have exited. Calling Close more
// than once is fine.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	conn := b.conn
	b.conn = nil
	b.freePub = nil
	b.mu.Unlock()

	b.stop()
	var err error
	if conn != nil {
		if cerr := conn.CloseDeadline(time.Now().Add(closeTimeout)); cerr != nil && !errors.Is(cerr, amqp.ErrClosed) {
			err = fmt.Errorf("broker: close connection: %w", cerr)
		}
	}
	b.wg.Wait()
	return err
}

// Ready reports whether the broker is connected to RabbitMQ right now: nil if
// it is, an error saying why not otherwise. It does not block; it suits a
// readiness probe.
func (b *Broker) Ready(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.closed:
		return ErrClosed
	case b.conn == nil || b.conn.IsClosed():
		if b.lastErr != nil {
			return fmt.Errorf("broker: not connected: %w", b.lastErr)
		}
		return errors.New("broker: not connected")
	}
	return nil
}

// connection returns the live connection, waiting for a reconnect if there is
// none, until ctx ends or the broker is closed.
func (b *Broker) connection(ctx context.Context) (*amqp.Connection, error) {
	for {
		b.mu.Lock()
		closed, conn, up, lastErr := b.closed, b.conn, b.up, b.lastErr
		b.mu.Unlock()
		switch {
		case closed:
			return nil, ErrClosed
		case conn != nil && !conn.IsClosed():
			return conn, nil
		case conn != nil:
			// Closed but the supervisor has not caught up yet.
			b.markDown(conn, amqp.ErrClosed)
			continue
		}
		select {
		case <-up:
		case <-b.done:
			return nil, ErrClosed
		case <-ctx.Done():
			if lastErr != nil {
				return nil, fmt.Errorf("broker: not connected (last error: %w): %w", lastErr, ctx.Err())
			}
			return nil, fmt.Errorf("broker: not connected: %w", ctx.Err())
		}
	}
}

// markDown records that conn is unusable, so that callers wait for the
// supervisor's next connection instead of using it.
func (b *Broker) markDown(conn *amqp.Connection, cause error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.conn != conn {
		return
	}
	b.conn = nil
	b.up = make(chan struct{})
	b.freePub = nil
	if cause != nil {
		b.lastErr = cause
	}
}

// install makes conn the broker's live connection and returns the channel on
// which its closing is reported. It reports false, and leaves conn alone,
// when the broker has been closed meanwhile.
func (b *Broker) install(conn *amqp.Connection) (<-chan *amqp.Error, bool) {
	closes := conn.NotifyClose(make(chan *amqp.Error, 1))
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, false
	}
	b.conn = conn
	b.freePub = nil
	select {
	case <-b.up:
	default:
		close(b.up)
	}
	return closes, true
}

// isClosed reports whether Close has been called.
func (b *Broker) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// supervise waits for the connection to drop and replaces it, until ctx ends.
func (b *Broker) supervise(ctx context.Context, conn *amqp.Connection, closes <-chan *amqp.Error) {
	defer b.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case aerr, ok := <-closes:
			var cause error = amqp.ErrClosed
			if ok && aerr != nil {
				cause = aerr
			}
			if ctx.Err() != nil {
				return
			}
			b.log.Warn("broker connection lost", "error", cause)
			b.markDown(conn, cause)
		}

		conn = b.reconnect(ctx)
		if conn == nil {
			return
		}
		var ok bool
		if closes, ok = b.install(conn); !ok {
			_ = conn.CloseDeadline(time.Now().Add(closeTimeout))
			return
		}
		b.log.Info("broker reconnected")
	}
}

// reconnect dials until it succeeds and re-declares the remembered topology
// on the new connection. It returns nil when ctx ends first.
func (b *Broker) reconnect(ctx context.Context) *amqp.Connection {
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			if !sleep(ctx, backoff(attempt-1)) {
				return nil
			}
		}
		conn, err := b.dial(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			b.log.Warn("broker reconnect failed", "attempt", attempt+1, "error", redact(err, b.cfg.URL))
			b.mu.Lock()
			b.lastErr = redact(err, b.cfg.URL)
			b.mu.Unlock()
			continue
		}
		if err := b.redeclare(conn); err != nil {
			b.log.Warn("broker redeclare after reconnect failed", "error", err)
			if conn.IsClosed() {
				continue
			}
		}
		return conn
	}
}

// redeclare declares, on conn, every queue declared before. A queue whose
// declaration fails is logged and skipped; the error returned is the last
// one.
func (b *Broker) redeclare(conn *amqp.Connection) error {
	b.mu.Lock()
	queues := make([]string, 0, len(b.queues))
	for q := range b.queues {
		queues = append(queues, q)
	}
	b.mu.Unlock()

	var last error
	for _, q := range queues {
		ch, err := conn.Channel()
		if err != nil {
			return fmt.Errorf("open channel: %w", err)
		}
		if err := b.declareOn(ch, q); err != nil {
			b.log.Warn("broker redeclare queue failed", "queue", q, "error", err)
			last = err
		}
		closeChannel(ch)
	}
	return last
}

// dial opens one connection. ctx bounds both the TCP dial and the AMQP
// handshake.
func (b *Broker) dial(ctx context.Context) (*amqp.Connection, error) {
	var (
		mu sync.Mutex
		nc net.Conn
	)
	props := amqp.NewConnectionProperties()
	props.SetClientConnectionName(b.cfg.ConnectionName)
	cfg := amqp.Config{
		Properties: props,
		Heartbeat:  heartbeat,
		Locale:     "en_US",
		Dial: func(network, addr string) (net.Conn, error) {
			d := net.Dialer{Timeout: dialTimeout}
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			// The handshake has no heartbeats yet; the library clears this
			// deadline once the connection is open.
			if err := c.SetDeadline(time.Now().Add(dialTimeout)); err != nil {
				_ = c.Close()
				return nil, err
			}
			mu.Lock()
			nc = c
			mu.Unlock()
			return c, nil
		},
	}
	// Cancelling ctx during the handshake expires the socket's deadline,
	// which makes the blocked handshake return.
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		if nc != nil {
			_ = nc.SetDeadline(time.Unix(1, 0))
		}
	})
	conn, err := amqp.DialConfig(b.cfg.URL, cfg)
	if !stop() {
		if err == nil {
			_ = conn.Close()
		}
		return nil, ctx.Err()
	}
	if err != nil {
		return nil, redact(err, b.cfg.URL)
	}
	return conn, nil
}

// closeChannel closes ch if it is still open. Errors are of no use to the
// caller: the channel is gone either way.
func closeChannel(ch *amqp.Channel) {
	if !ch.IsClosed() {
		_ = ch.Close()
	}
}

// backoff returns the wait before retry attempt n (from 0): exponential from
// backoffInitial, capped at backoffMax, with the upper half jittered so that
// many processes reconnecting at once spread out.
func backoff(n int) time.Duration {
	d := backoffMax
	if n < 16 {
		d = min(backoffInitial<<n, backoffMax)
	}
	return d/2 + rand.N(d/2+1)
}

// sleep waits for d or until ctx ends; it reports whether d elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// redactURL returns raw with any password replaced, or a placeholder when raw
// does not parse.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "<unparsable URL>"
	}
	return u.Redacted()
}

// redact wraps err so that its message never shows the URL's credentials.
// errors.Is and errors.As still see err.
func redact(err error, rawURL string) error {
	if err == nil {
		return nil
	}
	var secrets []string
	if rawURL != "" {
		secrets = append(secrets, rawURL)
	}
	if u, perr := url.Parse(rawURL); perr == nil && u.User != nil {
		if p, ok := u.User.Password(); ok && p != "" {
			secrets = append(secrets, p, url.UserPassword("", p).String()[1:])
		}
	} else if i, j := strings.Index(rawURL, "://"), strings.LastIndex(rawURL, "@"); i >= 0 && j > i+3 {
		// Unparsable: hide the whole user-info part.
		secrets = append(secrets, rawURL[i+3:j])
	}
	if len(secrets) == 0 {
		return err
	}
	return &redactedError{err: err, secrets: secrets, replacement: redactURL(rawURL)}
}

// redactedError hides secrets in the message of the error it wraps.
type redactedError struct {
	err         error
	secrets     []string // the full URL first, then the bare password forms
	replacement string   // what the full URL becomes
}

func (e *redactedError) Error() string {
	msg := e.err.Error()
	for i, s := range e.secrets {
		r := "xxxxx"
		if i == 0 {
			r = e.replacement
		}
		msg = strings.ReplaceAll(msg, s, r)
	}
	return msg
}

func (e *redactedError) Unwrap() error { return e.err }
