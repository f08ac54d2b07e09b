package scheduler

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/store"
	"github.com/warrenhq/warren/pkg/webhook"
)

// userAgent identifies Warren to callback receivers.
const userAgent = "Warren-Webhook/1"

// deliverer POSTs one shard's due callbacks.
type deliverer struct {
	st interface {
		ClaimCallbacks(ctx context.Context, shard, limit int, lease time.Duration) ([]*store.Callback, error)
		RecordCallback(ctx context.Context, c *store.Callback, a job.CallbackAttempt, o store.CallbackOutcome, retryIn time.Duration) error
		ReleaseCallback(ctx context.Context, c *store.Callback) error
	}
	shard  int
	cfg    CallbackConfig
	client *http.Client
	now    func() time.Time
	jitter func(time.Duration) time.Duration
	m      *metrics
	log    *slog.Logger
}

// run claims the shard's due callbacks and delivers them, at most
// cfg.Concurrency at once, outside any transaction: the claim keeps other
// schedulers off them until every one has an outcome recorded.
func (d *deliverer) run(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	cbs, err := d.st.ClaimCallbacks(cctx, d.shard, d.cfg.Batch, d.cfg.Lease)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	sem := make(chan struct{}, d.cfg.Concurrency)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, c := range cbs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := d.deliver(ctx, c); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// deliver makes one attempt at c and records it. It returns an error only
// when the outcome could not be recorded (the claim then runs out and
// another round tries again).
func (d *deliverer) deliver(ctx context.Context, c *store.Callback) error {
	j := c.Job
	n := c.Attempts + 1 // this attempt's number
	at := d.now()
	attempt := job.CallbackAttempt{At: at.UTC()}
	outcome := store.CallbackDelivered
	log := d.log.With("job_id", j.ID.String(), "attempt", n)

	secret, ok := d.cfg.SigningSecrets[j.Tenant]
	switch {
	case !ok || secret == "":
		attempt.Error = fmt.Sprintf("no signing secret for tenant %s (WARREN_SIGNING_SECRETS)", j.Tenant)
		outcome = store.CallbackFailed
	default:
		status, final, err := d.post(ctx, j, secret, at)
		if err != nil && ctx.Err() != nil {
			// Shutting down: this was not a fair attempt. Hand the callback
			// back rather than count it.
			return d.release(c)
		}
		attempt.Status = status
		if err != nil {
			attempt.Error = err.Error()
			outcome = store.CallbackRetry
			if final || n >= d.cfg.MaxAttempts {
				outcome = store.CallbackFailed
			}
		}
	}

	var retryIn time.Duration
	if outcome == store.CallbackRetry {
		retryIn = d.backoff(n)
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := d.st.RecordCallback(rctx, c, attempt, outcome, retryIn); err != nil {
		return fmt.Errorf("callback of job %s: %w", j.ID, err)
	}
	switch outcome {
	case store.CallbackDelivered:
		d.m.callbackAttempts.WithLabelValues("delivered").Inc()
		d.m.callbacksDelivered.Inc()
		log.Debug("callback delivered", "status", attempt.Status)
	case store.CallbackRetry:
		d.m.callbackAttempts.WithLabelValues("retry").Inc()
		log.Warn("callback attempt failed", "status", attempt.Status, "error", attempt.Error, "retry_in", retryIn.Round(time.Millisecond))
	case store.CallbackFailed:
		d.m.callbackAttempts.WithLabelValues("failed").Inc()
		d.m.callbacksFailed.Inc()
		log.Warn("callback failed for good", "status", attempt.Status, "error", attempt.Error)
	}
	return nil
}

// release hands a claimed callback back, due at once, without an attempt.
func (d *deliverer) release(c *store.Callback) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.st.ReleaseCallback(ctx, c); err != nil && !errors.Is(err, store.ErrClaimLost) {
		return fmt.Errorf("release callback of job %s: %w", c.Job.ID, err)
	}
	return nil
}

// post sends the job to its callback URL. It returns the HTTP status (0 when
// none came back) and, unless the receiver answered 2xx, an error saying
// what went wrong; final means that retrying cannot help.
func (d *deliverer) post(ctx context.Context, j *job.Job, secret string, at time.Time) (status int, final bool, err error) {
	if j.CallbackURL == nil {
		return 0, true, errors.New("no callback URL")
	}
	u, err := url.Parse(*j.CallbackURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return 0, true, errors.New("callback URL is not an absolute http(s) URL")
	}
	body, err := json.Marshal(j)
	if err != nil {
		return 0, true, fmt.Errorf("encode job: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, d.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(body))
	if err != nil {
		return 0, true, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", userAgent)
	req.Header.Set(webhook.HeaderEvent, "job."+string(j.State))
	req.Header.Set(webhook.HeaderJobID, j.ID.String())
	req.Header.Set(webhook.HeaderDelivery, ulid.Make().String())
	req.Header.Set(webhook.HeaderSignature, webhook.Sign(secret, at, body))
	resp, err := d.client.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // the URL is on the job already
		}
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
			err = fmt.Errorf("no response within %s", d.cfg.Timeout)
		}
		return 0, false, err
	}
	defer resp.Body.Close()
	// Read a little to report, and drain a little more so that the
	// connection can be reused.
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp.StatusCode, false, nil
	}
	msg := fmt.Sprintf("HTTP %d", resp.StatusCode)
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		msg += " (redirects are not followed)"
	}
	if s := printable(snippet); s != "" {
		msg += ": " + s
	}
	return resp.StatusCode, false, errors.New(msg)
}

// backoff is the wait after failed attempt n (from 1): BackoffBase·2^(n-1)
// capped at BackoffMax, less a random part of up to a half, so that the
// callbacks of a burst of jobs to a receiver that was down spread out.
func (d *deliverer) backoff(n int) time.Duration {
	w := d.cfg.BackoffMax
	if n-1 < 32 {
		if e := d.cfg.BackoffBase << (n - 1); e > 0 && e < w {
			w = e
		}
	}
	return w - d.jitter(w/2)
}

// printable returns b as one line of valid UTF-8, for an error message.
func printable(b []byte) string {
	s := strings.ToValidUTF8(string(b), "?")
	return strings.Join(strings.Fields(s), " ")
}
