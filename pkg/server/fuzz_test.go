package server

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/warrenhq/warren/pkg/job"
)

// FuzzDecodeRequest: the request decoder never panics, and whatever it
// accepts survives a round trip through JSON unchanged.
func FuzzDecodeRequest(f *testing.F) {
	for _, seed := range []string{
		`{"type":"echo","payload":{"hello":"world"}}`,
		`{"type":"echo","priority":5,"max_attempts":3,"timeout":"30s","delay":"10s"}`,
		`{"type":"echo","run_at":"2030-01-01T00:00:00Z","callback_url":"https://x.example/h"}`,
		`{"type":`, `[]`, `null`, `{"type":"echo"} {}`, `{"payload":` + `[[[[[[[[[[1]]]]]]]]]]` + `}`,
		"{\"type\":\"\xff\xfe\"}", `{"max_attempts":1e400}`, `{"delay":"-5s","type":"x"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var req job.Request
		if err := decode(bytes.NewReader(body), &req); err != nil {
			if _, ok := err.(*decodeError); !ok {
				t.Fatalf("decode returned %T, want *decodeError", err)
			}
			return
		}
		again, err := json.Marshal(req)
		if err != nil {
			t.Fatalf("accepted %q but cannot re-encode it: %v", body, err)
		}
		var back job.Request
		if err := decode(bytes.NewReader(again), &back); err != nil {
			t.Fatalf("accepted %q, re-encoded as %s, which is refused: %v", body, again, err)
		}
	})
}

// FuzzCursor: cursors parse without panicking, and a parsed cursor is the
// canonical encoding of its id.
func FuzzCursor(f *testing.F) {
	f.Add(cursor(job.NewID(time.Now(), 1)))
	f.Add("")
	f.Add("not base64!")
	f.Add("AAAAAAAAAAAAAAAAAAAAAA")
	f.Fuzz(func(t *testing.T, s string) {
		id, ok := parseCursor(s)
		if !ok {
			return
		}
		if got := cursor(id); got != s {
			t.Fatalf("cursor %q parsed to %s, which encodes as %q", s, id, got)
		}
	})
}

// FuzzWaitParam: ?wait never panics, and what it accepts is within 0 and
// MaxWait (whole seconds included, however large); what it refuses is a 4xx.
func FuzzWaitParam(f *testing.F) {
	for _, seed := range []string{"5s", "30", "0", "-1", "1h", "9223372037", "99999999999999999999", "1e3", "5s5", ""} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, v string) {
		r := httptest.NewRequest(http.MethodGet, "/v1/jobs/x?wait="+url.QueryEscape(v), nil)
		w := httptest.NewRecorder()
		d, ok := waitParam(w, r)
		switch {
		case ok && (d < 0 || d > MaxWait):
			t.Fatalf("wait=%q accepted as %v, outside 0..%v", v, d, MaxWait)
		case !ok && (w.Code < 400 || w.Code > 499):
			t.Fatalf("wait=%q refused with %d", v, w.Code)
		}
	})
}
