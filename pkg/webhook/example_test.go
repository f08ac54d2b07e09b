package webhook_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/warrenhq/warren/pkg/webhook"
)

// A receiver verifies the signature over the raw body before it trusts or
// even parses it.
func ExampleVerify() {
	const secret = "s3cr3t-shared-with-warren" // this tenant's entry in WARREN_SIGNING_SECRETS

	receiver := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
		if err != nil {
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
		err = webhook.Verify(secret, r.Header.Get(webhook.HeaderSignature), body, webhook.DefaultTolerance, time.Now())
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		fmt.Printf("%s for job %s: %s\n", r.Header.Get(webhook.HeaderEvent), r.Header.Get(webhook.HeaderJobID), body)
		w.WriteHeader(http.StatusNoContent) // any 2xx tells Warren it was delivered
	})

	// What Warren sends:
	body := []byte(`{"id":"01JH3Q0Z8K0000A1B2C3D4E5F6","type":"echo","state":"succeeded"}`)
	req := httptest.NewRequest(http.MethodPost, "/hooks/warren", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(webhook.HeaderEvent, "job.succeeded")
	req.Header.Set(webhook.HeaderJobID, "01JH3Q0Z8K0000A1B2C3D4E5F6")
	req.Header.Set(webhook.HeaderSignature, webhook.Sign(secret, time.Now(), body))
	rec := httptest.NewRecorder()
	receiver.ServeHTTP(rec, req)
	fmt.Println(rec.Code)

	// A forged or altered body is refused.
	req = httptest.NewRequest(http.MethodPost, "/hooks/warren", bytes.NewReader([]byte(`{"state":"dead"}`)))
	req.Header.Set(webhook.HeaderSignature, webhook.Sign("not-the-secret", time.Now(), []byte(`{"state":"dead"}`)))
	rec = httptest.NewRecorder()
	receiver.ServeHTTP(rec, req)
	fmt.Print(rec.Code, " ", rec.Body.String())
	// Output:
	// job.succeeded for job 01JH3Q0Z8K0000A1B2C3D4E5F6: {"id":"01JH3Q0Z8K0000A1B2C3D4E5F6","type":"echo","state":"succeeded"}
	// 204
	// 401 webhook: signature does not match
}

// The header value is the signing time and the HMAC-SHA256 of "<t>.<body>".
func ExampleSign() {
	t := time.Unix(1735689600, 0)
	fmt.Println(webhook.Sign("s3cr3t-shared-with-warren", t, []byte(`{"id":"01JH3Q0Z8K0000A1B2C3D4E5F6"}`)))
	// Output:
	// t=1735689600,v1=9eeae1ad3a5efb3f5b7049ee30a6a8188e51d6fc172db5c93c0a7e5a6a1dfbc1
}
