package server_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/warrenhq/warren/pkg/stacktest"
)

func TestMetricsAfterTraffic(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 1})
	j := submit(t, s, `{"type":"metered","queue":"mq"}`)
	call(t, "GET", s.URL+"/v1/jobs/"+j.ID.String(), stacktest.Token, "")
	finish(t, s, j.ID, `1`)
	call(t, "GET", s.URL+"/v1/jobs/"+j.ID.String()+"?wait=1s", stacktest.Token, "")
	call(t, "GET", s.URL+"/v1/jobs/nope", stacktest.Token, "")
	call(t, "GET", s.URL+"/nowhere", "", "")

	r := call(t, "GET", s.URL+"/metrics", "", "")
	if r.status != http.StatusOK {
		t.Fatalf("metrics: %d", r.status)
	}
	text := string(r.body)
	for _, want := range []string{
		`warren_api_jobs_submitted_total{queue="mq",type="metered"} 1`,
		`warren_api_http_requests_total{route="POST /v1/jobs",status="202"} 1`,
		`warren_api_http_requests_total{route="GET /v1/jobs/{id}",status="200"} 2`,
		`warren_api_http_requests_total{route="GET /v1/jobs/{id}",status="400"} 1`,
		`warren_api_http_requests_total{route="unmatched",status="404"} 1`,
		`warren_api_http_request_duration_seconds_count{route="POST /v1/jobs"} 1`,
		`warren_api_publish_confirms_total{result="ok"} 1`,
		`warren_api_publish_confirms_total{result="failed"} 0`,
		`warren_api_cache_reads_total{result="miss"} 1`,
		`warren_api_cache_reads_total{result="hit"} 1`,
		`warren_api_cache_reads_total{result="error"} 0`,
		`warren_api_waiters_in_progress 0`,
		`go_goroutines `,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if r := call(t, "GET", s.URL+"/openapi.json", "", ""); r.status != http.StatusOK || !strings.Contains(string(r.body), `"openapi": "3.0`) {
		t.Errorf("openapi.json: %d", r.status)
	}
}
