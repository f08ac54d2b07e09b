package server_test

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/warrenhq/warren/pkg/stacktest"
)

// Hostile requests each get a precise 4xx, and the process keeps serving.
func TestHostileRequests(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 1})
	far := time.Now().AddDate(5, 0, 0).UTC().Format(time.RFC3339)
	for _, tc := range []struct {
		name, body string
		status     int
		want       string
	}{
		{"truncated", `{"type":"echo","payload":{"a":`, 400, "malformed JSON"},
		{"wrong type for payload field", `{"type":["echo"]}`, 422, `field "type" must be a string`},
		{"unknown field", `{"type":"echo","prio":1}`, 422, `unknown field "prio"`},
		{"huge number", `{"type":"echo","priority":99999999999999999999999}`, 422, `field "priority" must be a number`},
		{"negative delay", `{"type":"echo","delay":"-10s"}`, 422, "delay"},
		{"far-future run_at", `{"type":"echo","run_at":"` + far + `"}`, 422, "run_at"},
		{"invalid UTF-8", "{\"type\":\"echo\",\"payload\":\"\xff\xfe\"}", 400, "not valid UTF-8"},
		{"deeply nested", `{"type":"echo","payload":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}`, 400, "malformed JSON"},
		{"10 MB body", `{"type":"echo","payload":"` + strings.Repeat("x", 10<<20) + `"}`, 413, "exceeds"},
	} {
		r := call(t, "POST", s.URL+"/v1/jobs", stacktest.Token, tc.body)
		if r.status != tc.status {
			t.Errorf("%s: status %d, want %d; body %.300s", tc.name, r.status, tc.status, r.body)
			continue
		}
		p := problem(t, r)
		text := p.Detail
		for _, f := range p.Errors {
			text += " | " + f.Field + ": " + f.Detail
		}
		if !strings.Contains(text, tc.want) {
			t.Errorf("%s: problem %q does not say %q", tc.name, text, tc.want)
		}
	}
	// The process keeps serving.
	req, _ := http.NewRequest("POST", s.URL+"/v1/jobs", bytes.NewReader([]byte(`{"type":"echo"}`)))
	req.Header.Set("Authorization", "Bearer "+stacktest.Token)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("a plain submit after the hostile ones: %v %v", resp, err)
	}
}
