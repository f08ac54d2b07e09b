package autoscale

import (
	"context"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// reply is one scripted answer of a fake platform.
type reply struct {
	status int
	header map[string]string
	body   string
}

// platform is a fake API server: it records each request and answers from
// a script, the last entry repeating.
type platform struct {
	mu     sync.Mutex
	script []reply
	got    []seen
}

type seen struct {
	method, path, body string
	header             http.Header
}

func (p *platform) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	p.mu.Lock()
	p.got = append(p.got, seen{r.Method, r.URL.EscapedPath(), string(b), r.Header.Clone()})
	rep := p.script[0]
	if len(p.script) > 1 {
		p.script = p.script[1:]
	}
	p.mu.Unlock()
	for k, v := range rep.header {
		// "in 4s": an HTTP date that far ahead of the moment of answering.
		if d, ok := strings.CutPrefix(v, "in "); ok {
			ahead, _ := time.ParseDuration(d)
			v = time.Now().Add(ahead).UTC().Format(http.TimeFormat)
		}
		w.Header().Set(k, v)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(rep.status)
	_, _ = io.WriteString(w, rep.body)
}

func (p *platform) requests() []seen {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]seen(nil), p.got...)
}

// sleeps records the waits of a Retry instead of sleeping.
type sleeps struct {
	mu sync.Mutex
	d  []time.Duration
}

func (s *sleeps) retry() Retry {
	return Retry{Sleep: func(ctx context.Context, d time.Duration) error {
		s.mu.Lock()
		s.d = append(s.d, d)
		s.mu.Unlock()
		return ctx.Err()
	}}
}

// k8sSetup serves the script over TLS and writes a service account
// directory for it.
func k8sSetup(t *testing.T, script ...reply) (*Kubernetes, *platform, *sleeps, string) {
	t.Helper()
	p := &platform{script: script}
	srv := httptest.NewTLSServer(p)
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	for name, content := range map[string]string{"ca.crt": string(ca), "token": "token-1\n", "namespace": "jobs\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s := &sleeps{}
	k, err := NewKubernetes(KubernetesConfig{APIServer: srv.URL, Deployment: "warren-worker", ServiceAccountDir: dir, Retry: s.retry()})
	if err != nil {
		t.Fatal(err)
	}
	return k, p, s, dir
}

const scaleBody = `{"kind":"Scale","apiVersion":"autoscaling/v1","metadata":{"name":"warren-worker","namespace":"jobs"},"spec":{"replicas":%s},"status":{"replicas":2,"selector":"app=warren-worker"}}`

func TestKubernetesRequests(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	k, p, _, dir := k8sSetup(t,
		reply{status: 200, body: strings.Replace(scaleBody, "%s", "3", 1)},
		reply{status: 200, body: strings.Replace(scaleBody, "%s", "5", 1)},
	)
	n, err := k.Workers(ctx)
	if err != nil || n != 3 {
		t.Fatalf("workers: %d, %v", n, err)
	}
	// The token is read again for every request: projected tokens rotate.
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte("token-2"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := k.Scale(ctx, 5); err != nil {
		t.Fatal(err)
	}
	got := p.requests()
	if len(got) != 2 {
		t.Fatalf("%d requests", len(got))
	}
	const path = "/apis/apps/v1/namespaces/jobs/deployments/warren-worker/scale"
	get, patch := got[0], got[1]
	if get.method != "GET" || get.path != path || get.body != "" ||
		get.header.Get("Authorization") != "Bearer token-1" || get.header.Get("Accept") != "application/json" {
		t.Errorf("GET: %+v", get)
	}
	if patch.method != "PATCH" || patch.path != path || patch.body != `{"spec":{"replicas":5}}` ||
		patch.header.Get("Content-Type") != "application/merge-patch+json" ||
		patch.header.Get("Authorization") != "Bearer token-2" || patch.header.Get("Accept") != "application/json" {
		t.Errorf("PATCH: %+v", patch)
	}
}

func TestKubernetesErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	status := func(code int, reason, msg string) reply {
		return reply{status: code, body: `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"` + msg + `","reason":"` + reason + `","code":` + strconv.Itoa(code) + `}`}
	}
	for _, tc := range []struct {
		name     string
		script   []reply
		is       error
		want     []string
		requests int
		waits    []time.Duration
	}{
		{"401 is not retried", []reply{status(401, "Unauthorized", "Unauthorized")}, ErrUnauthorized,
			[]string{"kubernetes: PATCH /apis/apps/v1/namespaces/jobs/deployments/warren-worker/scale: 401 Unauthorized", "token was refused"}, 1, nil},
		{"403 names the permission", []reply{status(403, "Forbidden", `deployments.apps \"warren-worker\" is forbidden`)}, ErrUnauthorized,
			[]string{"403 Forbidden", "is forbidden", "get and patch on deployments/scale in namespace jobs"}, 1, nil},
		{"404 names the settings", []reply{status(404, "NotFound", `deployments.apps \"warren-worker\" not found`)}, ErrNotFound,
			[]string{"404 Not Found", "not found", "WARREN_AUTOSCALE_K8S_DEPLOYMENT"}, 1, nil},
		{"409 then 429 with Retry-After then 503 then success",
			[]reply{status(409, "Conflict", "the object has been modified"), {status: 429, header: map[string]string{"Retry-After": "7"}, body: "{}"},
				status(503, "ServiceUnavailable", "etcd leader changed"), {status: 200, body: "{}"}},
			nil, nil, 4, []time.Duration{0, 7 * time.Second, 0}},
		{"5xx until the attempts run out", []reply{status(500, "InternalError", "boom")}, nil,
			[]string{"500 Internal Server Error: boom", "gave up after 5 attempts"}, 5, []time.Duration{0, 0, 0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			k, p, s, _ := k8sSetup(t, tc.script...)
			err := k.Scale(ctx, 4)
			if tc.want == nil && err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			for _, w := range tc.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("error %v lacks %q", err, w)
				}
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v is not %v", err, tc.is)
			}
			if n := len(p.requests()); n != tc.requests {
				t.Errorf("%d requests, want %d", n, tc.requests)
			}
			checkWaits(t, s.d, tc.waits)
		})
	}
}

// checkWaits compares the waits: 0 in want stands for a backoff (between
// 250ms and 30s), anything else must match exactly (Retry-After).
func checkWaits(t *testing.T, got, want []time.Duration) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("waits %v, want %d of them", got, len(want))
	}
	for i := range got {
		if want[i] == 0 && (got[i] < 250*time.Millisecond || got[i] > 30*time.Second) || want[i] != 0 && got[i] != want[i] {
			t.Errorf("wait %d: %v, want %v (0: a backoff)", i, got[i], want[i])
		}
	}
}

func TestKubernetesSettings(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := NewKubernetes(KubernetesConfig{APIServer: "https://10.0.0.1", Deployment: "w", ServiceAccountDir: dir}); err == nil || !strings.Contains(err.Error(), "namespace") {
		t.Errorf("no namespace file: %v", err)
	}
	if _, err := NewKubernetes(KubernetesConfig{APIServer: "https://10.0.0.1", Namespace: "n", Deployment: "w", ServiceAccountDir: dir}); err == nil || !strings.Contains(err.Error(), "CA") {
		t.Errorf("no CA: %v", err)
	}
	if _, err := NewKubernetes(KubernetesConfig{APIServer: "10.0.0.1", Namespace: "n", Deployment: "w"}); err == nil {
		t.Error("bad API server URL accepted")
	}
}

func herokuSetup(t *testing.T, script ...reply) (*Heroku, *platform, *sleeps) {
	t.Helper()
	p := &platform{script: script}
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	s := &sleeps{}
	h, err := NewHeroku(HerokuConfig{App: "acme-jobs", APIKey: "hrku-secret", BaseURL: srv.URL, Retry: s.retry()})
	if err != nil {
		t.Fatal(err)
	}
	return h, p, s
}

const formationBody = `{"app":{"name":"acme-jobs","id":"01234567-89ab-cdef-0123-456789abcdef"},"command":"bin/workers","quantity":%s,"size":"standard-1X","type":"worker"}`

func TestHerokuRequests(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h, p, _ := herokuSetup(t,
		reply{status: 200, body: strings.Replace(formationBody, "%s", "2", 1)},
		reply{status: 200, body: strings.Replace(formationBody, "%s", "4", 1)},
	)
	n, err := h.Workers(ctx)
	if err != nil || n != 2 {
		t.Fatalf("workers: %d, %v", n, err)
	}
	if err := h.Scale(ctx, 4); err != nil {
		t.Fatal(err)
	}
	got := p.requests()
	if len(got) != 2 {
		t.Fatalf("%d requests", len(got))
	}
	for i, want := range []struct{ method, body, contentType string }{{"GET", "", ""}, {"PATCH", `{"quantity":4}`, "application/json"}} {
		r := got[i]
		if r.method != want.method || r.path != "/apps/acme-jobs/formation/worker" || r.body != want.body ||
			r.header.Get("Content-Type") != want.contentType ||
			r.header.Get("Accept") != "application/vnd.heroku+json; version=3" ||
			r.header.Get("Authorization") != "Bearer hrku-secret" {
			t.Errorf("request %d: %+v", i, r)
		}
	}
}

func TestHerokuErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	herr := func(code int, id, msg string) reply {
		return reply{status: code, body: `{"id":"` + id + `","message":"` + msg + `"}`}
	}
	for _, tc := range []struct {
		name     string
		script   []reply
		is       error
		want     []string
		requests int
		waits    []time.Duration
	}{
		{"401", []reply{herr(401, "unauthorized", "Invalid credentials provided.")}, ErrUnauthorized,
			[]string{"heroku: PATCH /apps/acme-jobs/formation/worker: 401 Unauthorized: Invalid credentials provided. [unauthorized]", "check HEROKU_API_KEY"}, 1, nil},
		{"404", []reply{herr(404, "not_found", "Couldn't find that formation.")}, ErrNotFound,
			[]string{"404 Not Found: Couldn't find that formation.", "WARREN_AUTOSCALE_HEROKU_APP"}, 1, nil},
		{"422 is not retried", []reply{herr(422, "invalid_params", "Quantity must be below 100.")}, nil,
			[]string{"422 Unprocessable Entity: Quantity must be below 100."}, 1, nil},
		{"429 with a Retry-After date, 409, 502, then success",
			[]reply{{status: 429, header: map[string]string{"Retry-After": "in 4s"}, body: `{"id":"rate_limit","message":"Your account reached the API rate limit"}`},
				herr(409, "conflict", "A formation change is in progress."), herr(502, "", "bad gateway"), {status: 200, body: "{}"}},
			nil, nil, 4, []time.Duration{-1, 0, 0}},
		{"Retry-After is capped by Max", []reply{{status: 503, header: map[string]string{"Retry-After": "3600"}, body: "{}"}, {status: 200, body: "{}"}},
			nil, nil, 2, []time.Duration{30 * time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h, p, s := herokuSetup(t, tc.script...)
			err := h.Scale(ctx, 3)
			if tc.want == nil && err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			for _, w := range tc.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("error %v lacks %q", err, w)
				}
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v is not %v", err, tc.is)
			}
			if n := len(p.requests()); n != tc.requests {
				t.Errorf("%d requests, want %d", n, tc.requests)
			}
			// -1 stands for a Retry-After date about 4s ahead.
			if len(tc.waits) > 0 && tc.waits[0] == -1 {
				if len(s.d) == 0 || s.d[0] < 2*time.Second || s.d[0] > 4*time.Second {
					t.Fatalf("waits %v: the first should follow the Retry-After date", s.d)
				}
				s.d, tc.waits = s.d[1:], tc.waits[1:]
			}
			checkWaits(t, s.d, tc.waits)
		})
	}
}

func TestHerokuCancelledWhileWaiting(t *testing.T) {
	t.Parallel()
	h, p, _ := herokuSetup(t, reply{status: 503, header: map[string]string{"Retry-After": "20"}, body: "{}"})
	h.retry.Sleep = sleep // a real wait, cut short by the context
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := h.Scale(ctx, 1)
	if err == nil || !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Fatalf("got %v after %v", err, time.Since(start))
	}
	if n := len(p.requests()); n != 1 {
		t.Fatalf("%d requests", n)
	}
}
