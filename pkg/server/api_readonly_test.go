package server_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/warrenhq/warren/pkg/server"
	"github.com/warrenhq/warren/pkg/stacktest"
	"github.com/warrenhq/warren/pkg/store"
)

// A read-only Postgres (a full disk, a failover in progress) refuses every
// write with SQLSTATE 25006: submits answer 503 with a problem saying the
// job was not accepted, never 500, and nothing is stored.
func TestSubmitToReadOnlyStoreIs503(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{})
	// The same shards, through sessions whose transactions are read-only.
	ro := make([]string, len(s.DatabaseURLs))
	for i, u := range s.DatabaseURLs {
		ro[i] = u + "&default_transaction_read_only=on"
	}
	st, err := store.Open(store.Config{URLs: ro, MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	srv, err := server.New(server.Config{Tenants: []server.Tenant{{Name: "default", Token: stacktest.Token}}}, st, s.Broker, s.Cache, s.Log)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	t.Cleanup(func() { _ = srv.Close() })

	for _, tc := range []struct {
		name string
		hdr  map[string]string
	}{{"plain", nil}, {"with an Idempotency-Key", map[string]string{"Idempotency-Key": "read-only-1"}}} {
		r := callWith(t, "POST", hs.URL+"/v1/jobs", stacktest.Token, `{"type":"echo"}`, tc.hdr)
		var p server.Problem
		if err := json.Unmarshal(r.body, &p); err != nil {
			t.Fatalf("%s: body %s: %v", tc.name, r.body, err)
		}
		if r.status != http.StatusServiceUnavailable || !strings.HasPrefix(r.header.Get("Content-Type"), "application/problem+json") ||
			r.header.Get("Retry-After") == "" || p.Status != http.StatusServiceUnavailable || !strings.Contains(p.Detail, "not accepted") {
			t.Errorf("%s: %d %s %q; want 503 problem+json with Retry-After saying the job was not accepted", tc.name, r.status, r.header.Get("Content-Type"), r.body)
		}
	}
	r := call(t, "POST", hs.URL+"/v1/jobs/batch", stacktest.Token, `{"jobs":[{"type":"echo"},{"type":"echo"}]}`)
	if r.status != http.StatusAccepted || strings.Count(string(r.body), `"status":503`) != 2 {
		t.Errorf("batch: %d %s; want 202 with each item refused with 503", r.status, r.body)
	}
	// Nothing was written: the writable api lists no job.
	list := call(t, "GET", s.URL+"/v1/jobs", stacktest.Token, "")
	if list.status != http.StatusOK || !strings.Contains(string(list.body), `"jobs":[]`) {
		t.Errorf("jobs stored while read-only: %d %s", list.status, list.body)
	}
}
