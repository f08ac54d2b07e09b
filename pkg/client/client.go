// Package client is the Go client for Warren's REST API v1.
//
//	c, err := client.New("http://localhost:8080", os.Getenv("WARREN_TOKEN"))
//	j, err := c.Submit(ctx, job.Request{Type: "echo", Payload: json.RawMessage(`{"hello":"world"}`)})
//	j, err = c.Wait(ctx, j.ID.String())
//
// Every endpoint of the API has a method: Submit (with WithIdempotencyKey
// and WithWait), SubmitBatch, Get, Wait, Cancel, Retry, List and All,
// Queues and Workers.
//
// Errors from the API are *Error values carrying the problem document.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/warrenhq/warren/pkg/job"
)

// Client calls one Warren API with one tenant's token.
type Client struct {
	base  *url.URL
	token string
	hc    *http.Client
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient replaces the default HTTP client (30s timeout).
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.hc = hc } }

// New returns a client for the API at baseURL, such as http://localhost:8080.
func New(baseURL, token string, opts ...Option) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("client: %q is not an http(s) URL", baseURL)
	}
	c := &Client{base: u, token: token, hc: &http.Client{Timeout: 30 * time.Second}}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// Error is an error answer from the API: its status and problem document.
type Error struct {
	Status int
	Title  string `json:"title"`
	Detail string `json:"detail"`
	Errors []struct {
		Field  string `json:"field"`
		Detail string `json:"detail"`
	} `json:"errors"`
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "warren: %d %s: %s", e.Status, e.Title, e.Detail)
	for _, f := range e.Errors {
		fmt.Fprintf(&b, "; %s: %s", f.Field, f.Detail)
	}
	return b.String()
}

// IsNotFound reports whether err is the API's 404.
func IsNotFound(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == http.StatusNotFound
}

// IsConflict reports whether err is the API's 409: a cancel or retry that
// the job's state does not allow, or an Idempotency-Key reused for a
// different request.
func IsConflict(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == http.StatusConflict
}

// SubmitOption adjusts one Submit call.
type SubmitOption func(*submitOptions)

type submitOptions struct {
	key  string
	wait time.Duration
}

// WithIdempotencyKey sends an Idempotency-Key: submitting again with the same
// key and request returns the original job instead of a new one, so a
// submit can be retried safely after a timeout. The same key with a
// different request is an error for which IsConflict holds.
func WithIdempotencyKey(key string) SubmitOption {
	return func(o *submitOptions) { o.key = key }
}

// WithWait asks the API to hold the answer until the job is terminal or d
// (at most 60s) has passed; Submit then returns the job in its latest state.
func WithWait(d time.Duration) SubmitOption {
	return func(o *submitOptions) { o.wait = d }
}

// Submit submits one job and returns it as accepted: queued, or scheduled
// when it has a delay or run_at in the future (or finished, WithWait).
func (c *Client) Submit(ctx context.Context, req job.Request, opts ...SubmitOption) (*job.Job, error) {
	var o submitOptions
	for _, opt := range opts {
		opt(&o)
	}
	path := "/v1/jobs"
	if o.wait > 0 {
		path += "?wait=" + url.QueryEscape(o.wait.String())
	}
	var hdr http.Header
	if o.key != "" {
		hdr = http.Header{"Idempotency-Key": []string{o.key}}
	}
	var j job.Job
	if err := c.doWith(ctx, http.MethodPost, path, hdr, req, &j); err != nil {
		return nil, fmt.Errorf("submit %s job: %w", req.Type, err)
	}
	return &j, nil
}

// BatchItem is the outcome of one job of a batch: the accepted job, or the
// API's error for this item alone.
type BatchItem struct {
	// Index is the job's position in the submitted slice.
	Index int
	Job   *job.Job
	Err   *Error
}

// SubmitBatch submits up to 1,000 jobs in one request and returns one item
// per job, in order. Invalid jobs come back with their Err and do not keep
// the others out. The jobs that land on one shard are committed together or
// not at all; shards commit independently, so an item may fail (Err.Status
// 503) while others succeed: resubmit just the failed items.
func (c *Client) SubmitBatch(ctx context.Context, reqs []job.Request) ([]BatchItem, error) {
	var ans struct {
		Jobs []struct {
			Index int      `json:"index"`
			Job   *job.Job `json:"job"`
			Error *Error   `json:"error"`
		} `json:"jobs"`
	}
	if reqs == nil {
		reqs = []job.Request{}
	}
	if err := c.do(ctx, http.MethodPost, "/v1/jobs/batch", map[string]any{"jobs": reqs}, &ans); err != nil {
		return nil, fmt.Errorf("submit batch of %d jobs: %w", len(reqs), err)
	}
	items := make([]BatchItem, len(ans.Jobs))
	for i, it := range ans.Jobs {
		items[i] = BatchItem{Index: it.Index, Job: it.Job, Err: it.Error}
	}
	return items, nil
}

// Get returns the job with this id.
func (c *Client) Get(ctx context.Context, id string) (*job.Job, error) {
	var j job.Job
	if err := c.do(ctx, http.MethodGet, "/v1/jobs/"+url.PathEscape(id), nil, &j); err != nil {
		return nil, fmt.Errorf("get job %s: %w", id, err)
	}
	return &j, nil
}

// Wait returns the job once it is in a terminal state (succeeded, dead or
// cancelled), or ctx's error with the job's last known state. It holds one
// request at a time open on the API (GET ?wait=), which answers as soon as
// the job ends.
func (c *Client) Wait(ctx context.Context, id string) (*job.Job, error) {
	var last *job.Job
	for ctx.Err() == nil {
		wait := c.longPoll()
		if dl, ok := ctx.Deadline(); ok {
			wait = min(wait, time.Until(dl))
		}
		path := "/v1/jobs/" + url.PathEscape(id)
		secs := int(wait / time.Second)
		if secs >= 1 {
			path += "?wait=" + strconv.Itoa(secs)
		}
		var j job.Job
		err := c.do(ctx, http.MethodGet, path, nil, &j)
		switch {
		case err == nil && j.State.Terminal():
			return &j, nil
		case err == nil:
			last = &j
			if secs < 1 { // the deadline is near: no long poll left, pause briefly
				sleep(ctx, 100*time.Millisecond)
			}
		case ctx.Err() != nil:
		default:
			var e *Error
			if errors.As(err, &e) && e.Status < 500 {
				return nil, fmt.Errorf("wait for job %s: %w", id, err)
			}
			sleep(ctx, 500*time.Millisecond) // the API or a shard is briefly away
		}
	}
	if last != nil {
		return last, fmt.Errorf("wait for job %s (%s): %w", id, last.State, ctx.Err())
	}
	return nil, fmt.Errorf("wait for job %s: %w", id, ctx.Err())
}

// longPoll is how long one ?wait request may hold: 25s, or less when the
// HTTP client's own timeout would cut it short.
func (c *Client) longPoll() time.Duration {
	d := 25 * time.Second
	if t := c.hc.Timeout; t > 0 {
		d = min(d, max(t-5*time.Second, t/2))
	}
	return d
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// Cancel cancels a job that has not ended (scheduled, queued, running or
// retrying) and returns it. A running job's handler sees its context
// cancelled. Cancelling a finished job is an error for which IsConflict holds.
func (c *Client) Cancel(ctx context.Context, id string) (*job.Job, error) {
	var j job.Job
	if err := c.do(ctx, http.MethodPost, "/v1/jobs/"+url.PathEscape(id)+"/cancel", nil, &j); err != nil {
		return nil, fmt.Errorf("cancel job %s: %w", id, err)
	}
	return &j, nil
}

// Retry runs a dead or cancelled job again, its attempts reset, and returns
// it queued. Any other state is an error for which IsConflict holds.
func (c *Client) Retry(ctx context.Context, id string) (*job.Job, error) {
	var j job.Job
	if err := c.do(ctx, http.MethodPost, "/v1/jobs/"+url.PathEscape(id)+"/retry", nil, &j); err != nil {
		return nil, fmt.Errorf("retry job %s: %w", id, err)
	}
	return &j, nil
}

// ListOptions filter and page List. The zero value lists the newest 50 jobs.
type ListOptions struct {
	State job.State
	Queue string
	Type  string
	// Limit is the page size, 1 to 500; default 50.
	Limit int
	// Cursor is the NextCursor of the previous page; empty for the first.
	Cursor string
}

// Page is one page of jobs, newest first.
type Page struct {
	Jobs []*job.Job
	// NextCursor fetches the next page; empty on the last page.
	NextCursor string
}

// List returns one page of the tenant's jobs, newest first across all shards.
// Paging on with NextCursor visits every job that existed when the first
// page was read exactly once; newer jobs never shift later pages.
func (c *Client) List(ctx context.Context, opts ListOptions) (*Page, error) {
	q := url.Values{}
	for k, v := range map[string]string{"state": string(opts.State), "queue": opts.Queue, "type": opts.Type, "cursor": opts.Cursor} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if opts.Limit != 0 {
		q.Set("limit", strconv.Itoa(opts.Limit))
	}
	path := "/v1/jobs"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var ans struct {
		Jobs       []*job.Job `json:"jobs"`
		NextCursor *string    `json:"next_cursor"`
	}
	if err := c.do(ctx, http.MethodGet, path, nil, &ans); err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	p := &Page{Jobs: ans.Jobs}
	if ans.NextCursor != nil {
		p.NextCursor = *ans.NextCursor
	}
	return p, nil
}

// All returns every job List would page through, fetching pages as the
// iteration goes; opts.Cursor is where it starts. It stops at the first
// error, which it yields.
func (c *Client) All(ctx context.Context, opts ListOptions) iter.Seq2[*job.Job, error] {
	return func(yield func(*job.Job, error) bool) {
		for {
			p, err := c.List(ctx, opts)
			if err != nil {
				yield(nil, err)
				return
			}
			for _, j := range p.Jobs {
				if !yield(j, nil) {
					return
				}
			}
			if p.NextCursor == "" {
				return
			}
			opts.Cursor = p.NextCursor
		}
	}
}

// Queue is one queue's statistics for this tenant.
type Queue struct {
	Name      string `json:"name"`
	Ready     int64  `json:"ready"`
	Running   int64  `json:"running"`
	Scheduled int64  `json:"scheduled"`
	Retrying  int64  `json:"retrying"`
	Dead      int64  `json:"dead"`
	// Consumers counts RabbitMQ consumers on the queue (of every tenant);
	// nil when the API could not ask RabbitMQ.
	Consumers             *int    `json:"consumers"`
	OldestReadyAgeSeconds float64 `json:"oldest_ready_age_seconds"`
	ThroughputLastMinute  int64   `json:"throughput_last_minute"`
}

// Queues returns the tenant's queues, by name. When some shards did not
// answer, their numbers are the shards missing from the counts.
func (c *Client) Queues(ctx context.Context) (queues []Queue, unavailableShards []int, err error) {
	var ans struct {
		Queues            []Queue `json:"queues"`
		UnavailableShards []int   `json:"unavailable_shards"`
	}
	if err := c.do(ctx, http.MethodGet, "/v1/queues", nil, &ans); err != nil {
		return nil, nil, fmt.Errorf("queue stats: %w", err)
	}
	return ans.Queues, ans.UnavailableShards, nil
}

// Worker is a live worker process, from its heartbeat.
type Worker struct {
	ID            string    `json:"id"`
	Host          string    `json:"host"`
	PID           int       `json:"pid"`
	Queues        []string  `json:"queues"`
	Types         []string  `json:"types"`
	Concurrency   int       `json:"concurrency"`
	Busy          int       `json:"busy"`
	StartedAt     time.Time `json:"started_at"`
	LastHeartbeat time.Time `json:"last_heartbeat"`
}

// Workers returns the live worker processes.
func (c *Client) Workers(ctx context.Context) ([]Worker, error) {
	var ans struct {
		Workers []Worker `json:"workers"`
	}
	if err := c.do(ctx, http.MethodGet, "/v1/workers", nil, &ans); err != nil {
		return nil, fmt.Errorf("list workers: %w", err)
	}
	return ans.Workers, nil
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	return c.doWith(ctx, method, path, nil, in, out)
}

func (c *Client) doWith(ctx context.Context, method, path string, hdr http.Header, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base.String()+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	if resp.StatusCode >= 300 {
		e := &Error{Status: resp.StatusCode, Title: http.StatusText(resp.StatusCode)}
		if json.Unmarshal(b, e) != nil || e.Detail == "" {
			e.Detail = strings.TrimSpace(string(b))
		}
		return e
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("decode response: %w", err)
		}
	}
	return nil
}
