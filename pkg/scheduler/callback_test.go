package scheduler_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/scheduler"
	"github.com/warrenhq/warren/pkg/webhook"
)

const secret = "acme-signing-secret"

// request is one callback request a receiver got.
type request struct {
	header http.Header
	body   []byte
}

// receiver is a callback endpoint that records requests and answers with
// the status its respond function picks (200 when nil).
type receiver struct {
	srv     *httptest.Server
	mu      sync.Mutex
	reqs    []request
	byJob   map[string]int
	respond func(n int) int // n counts this job's requests from 1
}

func newReceiver(t *testing.T, respond func(n int) int) *receiver {
	t.Helper()
	r := &receiver{byJob: map[string]int{}, respond: respond}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.reqs = append(r.reqs, request{header: req.Header.Clone(), body: body})
		id := req.Header.Get(webhook.HeaderJobID)
		r.byJob[id]++
		n := r.byJob[id]
		r.mu.Unlock()
		status := http.StatusOK
		if r.respond != nil {
			status = r.respond(n)
		}
		w.WriteHeader(status)
		fmt.Fprintf(w, "answer %d", n)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) requests() []request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]request(nil), r.reqs...)
}

// finished stores a job with a callback to url and runs it to success on
// shard; the trigger makes its callback pending.
func (b *bundle) finished(shard int, tenant, url string) *job.Job {
	b.t.Helper()
	ctx := context.Background()
	j := newJob(shard, job.Queued, time.Now())
	j.Tenant, j.CallbackURL = tenant, &url
	b.insert(j)
	if _, err := b.st.Claim(ctx, j.ID, "w1", time.Minute); err != nil {
		b.t.Fatal(err)
	}
	if _, err := b.st.Complete(ctx, j.ID, 1, job.JSON(`{"answer":42}`)); err != nil {
		b.t.Fatal(err)
	}
	return j
}

// callbackState returns the job's callback state and attempts.
func (b *bundle) callbackState(j *job.Job) (string, []job.CallbackAttempt) {
	b.t.Helper()
	got := b.get(j)
	var attempts []job.CallbackAttempt
	if len(got.Callbacks) > 0 {
		if err := json.Unmarshal(got.Callbacks, &attempts); err != nil {
			b.t.Fatal(err)
		}
	}
	if got.CallbackState == nil {
		return "", attempts
	}
	return *got.CallbackState, attempts
}

func (b *bundle) waitCallback(j *job.Job, state string) []job.CallbackAttempt {
	b.t.Helper()
	var attempts []job.CallbackAttempt
	eventually(b.t, 20*time.Second, "callback "+state, func() bool {
		var st string
		st, attempts = b.callbackState(j)
		return st == state
	})
	return attempts
}

func callbackConfig(allow ...string) scheduler.Config {
	return scheduler.Config{
		Tick: 20 * time.Millisecond,
		Callbacks: scheduler.CallbackConfig{
			HTTPAllow:      allow,
			SigningSecrets: map[string]string{"acme": secret},
			BackoffBase:    10 * time.Millisecond,
			Timeout:        5 * time.Second,
		},
		Jitter: func(time.Duration) time.Duration { return 0 },
	}
}

func TestCallbackIsSignedAndVerifies(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	recv := newReceiver(t, nil)
	j := b.finished(1, "acme", recv.srv.URL+"/hooks/warren?src=test")
	clock := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	cfg := callbackConfig("127.0.0.1")
	cfg.Now = func() time.Time { return clock }
	b.start(cfg, b.st, b.broker(""))

	attempts := b.waitCallback(j, "delivered")
	reqs := recv.requests()
	if len(reqs) != 1 || len(attempts) != 1 {
		t.Fatalf("%d requests, %d attempts recorded; want 1 and 1", len(reqs), len(attempts))
	}
	r := reqs[0]
	sig := r.header.Get(webhook.HeaderSignature)
	if err := webhook.Verify(secret, sig, r.body, time.Minute, clock.Add(10*time.Second)); err != nil {
		t.Fatalf("Verify(%q): %v", sig, err)
	}
	if want := "t=" + strconv.FormatInt(clock.Unix(), 10) + ",v1="; !strings.HasPrefix(sig, want) {
		t.Errorf("signature %q does not start with %q", sig, want)
	}
	if err := webhook.Verify("another-secret", sig, r.body, time.Minute, clock); err == nil {
		t.Error("verifies with another secret")
	}
	for h, want := range map[string]string{
		"Content-Type":         "application/json",
		webhook.HeaderEvent:    "job.succeeded",
		webhook.HeaderJobID:    j.ID.String(),
		webhook.HeaderDelivery: r.header.Get(webhook.HeaderDelivery),
	} {
		if got := r.header.Get(h); got != want || got == "" {
			t.Errorf("header %s = %q, want %q", h, got, want)
		}
	}
	var body job.Job
	if err := json.Unmarshal(r.body, &body); err != nil {
		t.Fatalf("body %s: %v", r.body, err)
	}
	if body.ID != j.ID || body.State != job.Succeeded || string(body.Result) != `{"answer":42}` || body.Attempt != 1 {
		t.Errorf("body %s", r.body)
	}
	if a := attempts[0]; a.Status != 200 || a.Error != "" || !a.At.Equal(clock) {
		t.Errorf("attempt recorded as %+v", a)
	}
}

func TestCallbackRetriedUntilTheReceiverAccepts(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	recv := newReceiver(t, func(n int) int {
		if n <= 2 {
			return http.StatusServiceUnavailable
		}
		return http.StatusAccepted
	})
	j := b.finished(0, "acme", recv.srv.URL)
	s, _ := b.start(callbackConfig("127.0.0.1"), b.st, b.broker(""))

	attempts := b.waitCallback(j, "delivered")
	if len(attempts) != 3 {
		t.Fatalf("attempts %+v, want 3", attempts)
	}
	for i, want := range []int{503, 503, 202} {
		if attempts[i].Status != want {
			t.Errorf("attempt %d: status %d, want %d", i+1, attempts[i].Status, want)
		}
	}
	if e := attempts[0].Error; e != "HTTP 503: answer 1" {
		t.Errorf("attempt 1 error %q", e)
	}
	deliveries := map[string]bool{}
	for _, r := range recv.requests() {
		deliveries[r.header.Get(webhook.HeaderDelivery)] = true
	}
	if len(deliveries) != 3 {
		t.Errorf("%d distinct %s values over 3 attempts", len(deliveries), webhook.HeaderDelivery)
	}
	reg := s.Registry()
	if got := counter(t, reg, "warren_scheduler_callback_attempts_total", "outcome", "retry"); got != 2 {
		t.Errorf("retry attempts metric = %v", got)
	}
	if got := counter(t, reg, "warren_scheduler_callbacks_delivered_total"); got != 1 {
		t.Errorf("delivered metric = %v", got)
	}
}

func TestCallbackToLoopbackRefusedWithoutAllowList(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	recv := newReceiver(t, nil)
	j := b.finished(0, "acme", recv.srv.URL)
	cfg := callbackConfig() // no allow list
	cfg.Callbacks.MaxAttempts = 2
	s, _ := b.start(cfg, b.st, b.broker(""))

	attempts := b.waitCallback(j, "failed")
	if len(attempts) != 2 {
		t.Fatalf("attempts %+v, want 2", attempts)
	}
	t.Logf("recorded: %+v", attempts[0])
	for _, a := range attempts {
		if a.Status != 0 || !strings.Contains(a.Error, "not allowed") || !strings.Contains(a.Error, "WARREN_HTTP_ALLOW") {
			t.Errorf("attempt %+v, want a refusal naming WARREN_HTTP_ALLOW", a)
		}
	}
	if n := len(recv.requests()); n != 0 {
		t.Errorf("the receiver got %d requests", n)
	}
	if got := counter(t, s.Registry(), "warren_scheduler_callbacks_failed_total"); got != 1 {
		t.Errorf("failed metric = %v", got)
	}
}

func TestCallbackWithoutSigningSecretFails(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	recv := newReceiver(t, nil)
	j := b.finished(0, "globex", recv.srv.URL)
	b.start(callbackConfig("127.0.0.1"), b.st, b.broker(""))

	attempts := b.waitCallback(j, "failed")
	want := "no signing secret for tenant globex (WARREN_SIGNING_SECRETS)"
	if len(attempts) != 1 || attempts[0].Error != want {
		t.Fatalf("attempts %+v, want one saying %q", attempts, want)
	}
	if n := len(recv.requests()); n != 0 {
		t.Errorf("an unsigned callback was sent (%d requests)", n)
	}
}

func TestCallbackGivesUpAfterMaxAttemptsWithBackoff(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	recv := newReceiver(t, func(int) int { return http.StatusInternalServerError })
	j := b.finished(0, "acme", recv.srv.URL)
	cfg := callbackConfig("127.0.0.1")
	cfg.Callbacks.MaxAttempts = 4
	cfg.Callbacks.BackoffBase = 100 * time.Millisecond
	b.start(cfg, b.st, b.broker(""))

	attempts := b.waitCallback(j, "failed")
	if len(attempts) != 4 {
		t.Fatalf("attempts %+v, want 4", attempts)
	}
	// Waits of 100ms, 200ms, 400ms (jitter 0), give or take a tick.
	for i := 1; i < len(attempts); i++ {
		gap := attempts[i].At.Sub(attempts[i-1].At)
		want := 100 * time.Millisecond << (i - 1)
		if gap < want || gap > want+time.Second {
			t.Errorf("gap before attempt %d: %s, want about %s", i+1, gap, want)
		}
	}
}

func TestTwoSchedulersDeliverEachCallbackOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	recv := newReceiver(t, func(int) int {
		time.Sleep(2 * time.Millisecond) // a receiver with some latency widens the race
		return http.StatusOK
	})
	var jobs []*job.Job
	for i := range 200 {
		jobs = append(jobs, b.finished(i%2, "acme", recv.srv.URL))
	}
	cfg := callbackConfig("127.0.0.1")
	cfg.Callbacks.Batch = 10
	b.start(cfg, b.st, b.broker(""))
	b.start(cfg, b.store(), b.broker(""))

	for _, j := range jobs {
		b.waitCallback(j, "delivered")
	}
	recv.mu.Lock()
	defer recv.mu.Unlock()
	if len(recv.reqs) != len(jobs) {
		t.Errorf("%d requests for %d callbacks", len(recv.reqs), len(jobs))
	}
	for id, n := range recv.byJob {
		if n != 1 {
			t.Errorf("job %s called back %d times", id, n)
		}
	}
}

// A delivery cut short by the scheduler's shutdown is not counted as an
// attempt: the callback is handed back, due at once.
func TestShutdownHandsBackCallbacksInFlight(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	arrived, release := make(chan struct{}, 1), make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case arrived <- struct{}{}:
		default:
		}
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	j := b.finished(0, "acme", srv.URL)
	_, stop := b.start(callbackConfig("127.0.0.1"), b.st, b.broker(""))
	select {
	case <-arrived:
	case <-time.After(20 * time.Second):
		t.Fatal("no callback request")
	}
	stop()
	if st, attempts := b.callbackState(j); st != "pending" || len(attempts) != 0 {
		t.Fatalf("after shutdown: %s with attempts %+v; want pending with none", st, attempts)
	}
	cbs, err := b.st.ClaimCallbacks(context.Background(), 0, 10, time.Minute)
	if err != nil || len(cbs) != 1 {
		t.Fatalf("claim after shutdown: %d, %v; want the callback due again", len(cbs), err)
	}
}
