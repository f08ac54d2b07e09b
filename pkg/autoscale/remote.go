package autoscale

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Retry says how the remote backends retry: 409 (a conflicting change),
// 429 (rate limited), 5xx and network errors are tried again, after the
// server's Retry-After when it gives one, else after an exponential backoff
// with jitter. 401, 403, 404 and other 4xx are not.
type Retry struct {
	// Attempts is the most requests made for one call; default 5.
	Attempts int
	// Base and Max bound the backoff: Base·2^(n-1) with up to half of it
	// taken off at random, at most Max, which also caps Retry-After.
	// Defaults 500ms and 30s.
	Base, Max time.Duration
	// Sleep waits d or until ctx ends; default a timer. Tests replace it.
	Sleep func(ctx context.Context, d time.Duration) error
}

func (r Retry) withDefaults() Retry {
	if r.Attempts <= 0 {
		r.Attempts = 5
	}
	if r.Base <= 0 {
		r.Base = 500 * time.Millisecond
	}
	if r.Max <= 0 {
		r.Max = 30 * time.Second
	}
	if r.Sleep == nil {
		r.Sleep = sleep
	}
	return r
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// APIError is a platform's refusal of a request.
type APIError struct {
	Backend string // "kubernetes" or "heroku"
	Method  string
	Path    string
	Status  int
	// Message is the platform's own explanation, from its error body.
	Message string
	// Hint says what to check, for the statuses that have a usual cause.
	Hint string
}

func (e *APIError) Error() string {
	msg := fmt.Sprintf("%s: %s %s: %d %s", e.Backend, e.Method, e.Path, e.Status, http.StatusText(e.Status))
	if e.Message != "" {
		msg += ": " + e.Message
	}
	if e.Hint != "" {
		msg += " (" + e.Hint + ")"
	}
	return msg
}

// Unwrap makes errors.Is(err, ErrUnauthorized) and errors.Is(err,
// ErrNotFound) hold.
func (e *APIError) Unwrap() error {
	switch e.Status {
	case http.StatusUnauthorized, http.StatusForbidden:
		return ErrUnauthorized
	case http.StatusNotFound:
		return ErrNotFound
	}
	return nil
}

// remote is an HTTP JSON API with retries.
type remote struct {
	backend string
	base    string // scheme://host[:port][/prefix], no trailing slash
	client  *http.Client
	retry   Retry
	// header sets the request's headers (authentication among them); it may
	// fail, as reading a token file may.
	header func(h http.Header) error
	// hint explains a status to the user, or returns "".
	hint func(status int) string
}

// do sends method path with body (JSON-encoded unless nil) and decodes a 2xx
// answer into out (unless nil), retrying as Retry says.
func (c *remote) do(ctx context.Context, method, path, contentType string, body, out any) error {
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return fmt.Errorf("%s: encode %s %s: %w", c.backend, method, path, err)
		}
	}
	var last error
	for attempt := 1; ; attempt++ {
		wait, err := c.once(ctx, method, path, contentType, payload, out)
		if err == nil {
			return nil
		}
		last = err
		if wait < 0 || attempt >= c.retry.Attempts || ctx.Err() != nil {
			break
		}
		if wait == 0 {
			d := c.retry.Base << (attempt - 1)
			if d <= 0 || d > c.retry.Max {
				d = c.retry.Max
			}
			wait = d - rand.N(d/2+1)
		}
		if err := c.retry.Sleep(ctx, min(wait, c.retry.Max)); err != nil {
			break
		}
	}
	if ctx.Err() != nil && !errors.Is(last, ctx.Err()) {
		return fmt.Errorf("%w (gave up: %w)", last, ctx.Err())
	}
	if attempt := c.retry.Attempts; attempt > 1 && isRetryable(last) {
		return fmt.Errorf("%w (gave up after %d attempts)", last, attempt)
	}
	return last
}

// once sends one request. It returns the error and how long to wait before
// a retry: -1 for an error no retry fixes, 0 for the default backoff, else
// the server's Retry-After.
func (c *remote) once(ctx context.Context, method, path, contentType string, payload []byte, out any) (time.Duration, error) {
	var rd io.Reader
	if payload != nil {
		rd = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return -1, fmt.Errorf("%s: %s %s: %w", c.backend, method, path, err)
	}
	if payload != nil {
		req.Header.Set("Content-Type", contentType)
	}
	if err := c.header(req.Header); err != nil {
		return -1, fmt.Errorf("%s: %w", c.backend, err)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return 0, &netError{fmt.Errorf("%s: %s %s: %w", c.backend, method, path, err)}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, &netError{fmt.Errorf("%s: %s %s: read the answer: %w", c.backend, method, path, err)}
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		if out != nil {
			if err := json.Unmarshal(data, out); err != nil {
				return -1, fmt.Errorf("%s: %s %s: undecodable answer: %w", c.backend, method, path, err)
			}
		}
		return 0, nil
	}
	apiErr := &APIError{Backend: c.backend, Method: method, Path: path, Status: resp.StatusCode, Message: errorMessage(data)}
	if c.hint != nil {
		apiErr.Hint = c.hint(resp.StatusCode)
	}
	switch s := resp.StatusCode; {
	case s == http.StatusConflict || s == http.StatusTooManyRequests || s >= 500:
		return retryAfter(resp.Header.Get("Retry-After"), time.Now()), apiErr
	default:
		return -1, apiErr
	}
}

// netError marks a transport failure, which is retried.
type netError struct{ err error }

func (e *netError) Error() string { return e.err.Error() }
func (e *netError) Unwrap() error { return e.err }

func isRetryable(err error) bool {
	var ne *netError
	var ae *APIError
	if errors.As(err, &ne) {
		return true
	}
	return errors.As(err, &ae) && (ae.Status == http.StatusConflict || ae.Status == http.StatusTooManyRequests || ae.Status >= 500)
}

// retryAfter parses a Retry-After header (seconds or an HTTP date); 0 when
// absent or unusable.
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(v); err == nil {
		if secs < 0 {
			return 0
		}
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// errorMessage picks the explanation out of an error body: the "message" of
// a Kubernetes Status or a Heroku error, else the start of the text.
func errorMessage(body []byte) string {
	var m struct {
		Message string `json:"message"`
		ID      string `json:"id"`
	}
	if json.Unmarshal(body, &m) == nil && m.Message != "" {
		if m.ID != "" {
			return fmt.Sprintf("%s [%s]", m.Message, m.ID)
		}
		return m.Message
	}
	s := strings.TrimSpace(string(body))
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}
