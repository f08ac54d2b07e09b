package server_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/warrenhq/warren/pkg/cache"
	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/stacktest"
)

// callWith is call with extra request headers.
func callWith(t *testing.T, method, url, token, body string, hdr map[string]string) response {
	t.Helper()
	r, err := send(method, url, token, body, hdr)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// send is callWith returning its error, for goroutines other than the
// test's, which must not call t.Fatal.
func send(method, url, token, body string, hdr map[string]string) (response, error) {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return response{}, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, err
	}
	return response{resp.StatusCode, resp.Header, b}, nil
}

// decodeJob reads a job answer, failing unless the status is want.
func decodeJob(t *testing.T, r response, want int) *job.Job {
	t.Helper()
	if r.status != want {
		t.Fatalf("status %d, want %d; body %s", r.status, want, r.body)
	}
	var j job.Job
	if err := json.Unmarshal(r.body, &j); err != nil {
		t.Fatalf("job body %s: %v", r.body, err)
	}
	return &j
}

// submit posts a job request and returns the accepted job.
func submit(t *testing.T, s *stacktest.Stack, body string) *job.Job {
	t.Helper()
	return decodeJob(t, call(t, "POST", s.URL+"/v1/jobs", stacktest.Token, body), http.StatusAccepted)
}

// finish completes a queued job as a worker would: claim, complete, cache,
// announce Done.
func finish(t *testing.T, s *stacktest.Stack, id job.ID, result string) {
	t.Helper()
	ctx := context.Background()
	c, err := s.Store.Claim(ctx, id, "test-worker", time.Minute)
	if err != nil {
		t.Fatalf("claim %s: %v", id, err)
	}
	done, err := s.Store.Complete(ctx, id, c.Attempt, job.JSON(result))
	if err != nil {
		t.Fatalf("complete %s: %v", id, err)
	}
	if err := s.Cache.PutJob(ctx, done); err != nil {
		t.Logf("cache %s: %v", id, err) // Redis may be down on purpose
	}
	if err := s.Cache.Publish(ctx, cache.Done, id); err != nil {
		t.Logf("publish done %s: %v", id, err)
	}
}

// kill makes a queued job dead as a worker's final failure would.
func kill(t *testing.T, s *stacktest.Stack, id job.ID) {
	t.Helper()
	ctx := context.Background()
	c, err := s.Store.Claim(ctx, id, "test-worker", time.Minute)
	if err != nil {
		t.Fatalf("claim %s: %v", id, err)
	}
	if _, err := s.Store.Fail(ctx, id, c.Attempt, "boom", time.Now(), true); err != nil {
		t.Fatalf("fail %s: %v", id, err)
	}
}

// metric returns the value of the series with the name and labels in the
// stack's registry, and whether it exists.
func metric(t *testing.T, s *stacktest.Stack, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	mfs, err := s.Server.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue series
				}
			}
			return value(m), true
		}
	}
	return 0, false
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return 0
}

// waiters is the number of requests holding a ?wait.
func waiters(t *testing.T, s *stacktest.Stack) float64 {
	t.Helper()
	v, _ := metric(t, s, "warren_api_waiters_in_progress", nil)
	return v
}

// async runs a request in the background; its answer arrives on the channel.
func async(t *testing.T, method, url, token, body string) <-chan response {
	t.Helper()
	ch := make(chan response, 1)
	go func() {
		req, _ := http.NewRequest(method, url, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			ch <- response{status: -1, body: []byte(err.Error())}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		ch <- response{resp.StatusCode, resp.Header, b}
	}()
	return ch
}

// within returns the answer if it arrives within d, failing the test if not.
func within(t *testing.T, ch <-chan response, d time.Duration, what string) response {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(d):
		t.Fatalf("%s: no answer within %v", what, d)
		return response{}
	}
}
