package builtin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/warrenhq/warren/pkg/netguard"
	"github.com/warrenhq/warren/pkg/worker"
)

// HTTPArgs is the payload of an http job.
type HTTPArgs struct {
	// URL is the http:// or https:// address to call. Required.
	URL string `json:"url"`
	// Method is the HTTP method; default POST.
	Method string `json:"method,omitempty"`
	// Headers are added to the request. Content-Type defaults to
	// application/json when there is a body. Warren adds Warren-Job-Id and
	// Warren-Attempt, so that the endpoint can tell a retry from a new job.
	Headers map[string]string `json:"headers,omitempty"`
	// Body is any JSON value, sent as the request body; none when absent.
	Body json.RawMessage `json:"body,omitempty"`
	// Timeout bounds the call, such as "10s"; default 10s, at most 1h, and
	// never beyond the job's own deadline.
	Timeout string `json:"timeout,omitempty"`
}

// HTTPResult is the result of an http job.
type HTTPResult struct {
	// Status is the response's status code.
	Status int `json:"status"`
	// Body is the response body: its JSON when the response is JSON, else
	// the body as a string; null when empty.
	Body json.RawMessage `json:"body"`
}

// HTTP runs http jobs: it calls a URL and succeeds with the response, so a
// job's real work can live behind an HTTP endpoint in any language. A 2xx
// response succeeds; any other status, a network error or a timeout fails
// the attempt, which is retried with backoff until the job's attempts are
// used up. Bad arguments, a destination refused by the address guard, and a
// response larger than the limit fail the job for good (no retry).
//
// Loopback, private, link-local and other internal addresses are refused
// unless allow-listed in Options.HTTPAllow (WARREN_HTTP_ALLOW); the check
// applies to the address actually dialled, redirects included.
type HTTP struct {
	client  *http.Client
	maxBody int64
}

const defaultHTTPTimeout = 10 * time.Second

var (
	headerName = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
	methodName = regexp.MustCompile("^[A-Z]{1,20}$")
)

// Handle is the handler of the http job type.
func (h *HTTP) Handle(ctx context.Context, j *worker.Job[json.RawMessage]) (HTTPResult, error) {
	args, timeout, err := parseHTTPArgs(j.Args)
	if err != nil {
		return HTTPResult{}, worker.NoRetry(err)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var body io.Reader
	if len(args.Body) > 0 {
		body = bytes.NewReader(args.Body)
	}
	req, err := http.NewRequestWithContext(ctx, args.Method, args.URL, body)
	if err != nil {
		return HTTPResult{}, worker.NoRetry(fmt.Errorf("http job: %w", err))
	}
	for k, v := range args.Headers {
		req.Header.Set(k, v)
	}
	if body != nil && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", "warren-http-job/1")
	}
	// The endpoint runs at least once per attempt: these let it deduplicate.
	req.Header.Set("Warren-Job-Id", j.ID)
	req.Header.Set("Warren-Attempt", strconv.Itoa(j.Attempt))
	resp, err := h.client.Do(req)
	if err != nil {
		if errors.Is(err, netguard.ErrBlocked) {
			return HTTPResult{}, worker.NoRetry(fmt.Errorf("%s %s: %w", args.Method, redactURL(args.URL), err))
		}
		if ctx.Err() != nil && errors.Is(err, context.DeadlineExceeded) {
			return HTTPResult{}, fmt.Errorf("%s %s: no response within %v", args.Method, redactURL(args.URL), timeout)
		}
		return HTTPResult{}, fmt.Errorf("%s %s: %w", args.Method, redactURL(args.URL), scrub(err))
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, h.maxBody+1))
	if err != nil {
		return HTTPResult{}, fmt.Errorf("%s %s: read response: %w", args.Method, redactURL(args.URL), scrub(err))
	}
	if int64(len(raw)) > h.maxBody {
		return HTTPResult{}, worker.NoRetry(fmt.Errorf("%s %s: response body larger than %d bytes", args.Method, redactURL(args.URL), h.maxBody))
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return HTTPResult{}, fmt.Errorf("%s %s: status %d: %s", args.Method, redactURL(args.URL), resp.StatusCode, snippet(raw))
	}
	return HTTPResult{Status: resp.StatusCode, Body: responseBody(resp.Header.Get("Content-Type"), raw)}, nil
}

// parseHTTPArgs decodes and checks an http job's payload strictly: an
// unknown field is an error, so that a typo is not silently ignored.
func parseHTTPArgs(raw json.RawMessage) (HTTPArgs, time.Duration, error) {
	var a HTTPArgs
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&a); err != nil {
		return a, 0, fmt.Errorf("http job payload: %w", err)
	}
	if dec.More() {
		return a, 0, errors.New("http job payload: one JSON object expected")
	}
	u, err := url.Parse(a.URL)
	switch {
	case a.URL == "":
		return a, 0, errors.New("http job payload: url is required")
	case err != nil:
		return a, 0, fmt.Errorf("http job payload: url: %w", err)
	case u.Scheme != "http" && u.Scheme != "https":
		return a, 0, fmt.Errorf("http job payload: url scheme %q, want http or https", u.Scheme)
	case u.Host == "":
		return a, 0, errors.New("http job payload: url has no host")
	}
	if a.Method == "" {
		a.Method = http.MethodPost
	}
	a.Method = strings.ToUpper(a.Method)
	if !methodName.MatchString(a.Method) {
		return a, 0, fmt.Errorf("http job payload: method %q is not an HTTP method", a.Method)
	}
	for k, v := range a.Headers {
		if !headerName.MatchString(k) {
			return a, 0, fmt.Errorf("http job payload: header name %q is not valid", k)
		}
		if strings.ContainsAny(v, "\r\n\x00") {
			return a, 0, fmt.Errorf("http job payload: header %s: value contains a line break", k)
		}
		if strings.EqualFold(k, "Host") || strings.EqualFold(k, "Content-Length") || strings.EqualFold(k, "Transfer-Encoding") {
			return a, 0, fmt.Errorf("http job payload: header %s is set by Warren", k)
		}
	}
	if string(a.Body) == "null" {
		a.Body = nil
	}
	timeout := defaultHTTPTimeout
	if a.Timeout != "" {
		d, err := time.ParseDuration(a.Timeout)
		switch {
		case err != nil:
			return a, 0, fmt.Errorf("http job payload: timeout %q is not a duration such as \"10s\"", a.Timeout)
		case d <= 0 || d > time.Hour:
			return a, 0, fmt.Errorf("http job payload: timeout %v must be positive and at most 1h", d)
		}
		timeout = d
	}
	return a, timeout, nil
}

// responseBody is the response's JSON when it says it is JSON and is, else
// the body as a JSON string.
func responseBody(contentType string, raw []byte) json.RawMessage {
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil
	}
	mt, _, _ := mime.ParseMediaType(contentType)
	if (mt == "application/json" || strings.HasSuffix(mt, "+json")) && json.Valid(raw) {
		return json.RawMessage(raw)
	}
	s := string(raw)
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	b, _ := json.Marshal(s)
	return b
}

// snippet is the start of a response body, for an error message.
func snippet(raw []byte) string {
	const max = 200
	s := strings.ToValidUTF8(string(raw), "\uFFFD")
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > max {
		s = s[:max] + "…"
	}
	if s == "" {
		return "(empty body)"
	}
	return s
}

// redactURL drops a URL's credentials and query, which may hold secrets,
// from error messages stored on the job.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(bad URL)"
	}
	u.User = nil
	if u.RawQuery != "" {
		u.RawQuery = "…"
	}
	u.Fragment = ""
	return u.String()
}

// scrub removes the full URL that net/http puts into its errors.
func scrub(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
