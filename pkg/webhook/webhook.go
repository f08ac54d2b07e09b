// Package webhook signs Warren's job callbacks and lets receivers verify them.
//
// When a job that has a callback_url ends, Warren POSTs the job as JSON to
// that URL with these headers:
//
//	Content-Type:     application/json
//	Warren-Event:     job.succeeded | job.dead | job.cancelled
//	Warren-Job-Id:    the job's id
//	Warren-Delivery:  an id unique to this delivery attempt
//	Warren-Signature: t=1735689600,v1=9eeae1ad3a5efb3f5b7049ee30a6a8188e51d6fc172db5c93c0a7e5a6a1dfbc1
//
// t is the time of signing in Unix seconds and v1 is the lowercase hex
// HMAC-SHA256, keyed with the tenant's signing secret (WARREN_SIGNING_SECRETS),
// of the timestamp, a full stop and the raw request body: "<t>.<body>". A
// receiver recomputes it over the bytes it received, before parsing them, and
// refuses a timestamp too far from its own clock, which stops an eavesdropper
// from replaying an old delivery. [Verify] does both.
//
// A header may carry several v1 values (for example while a secret is being
// rotated); it verifies when any one of them matches.
package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The headers of a callback request.
const (
	HeaderSignature = "Warren-Signature"
	HeaderEvent     = "Warren-Event"
	HeaderJobID     = "Warren-Job-Id"
	HeaderDelivery  = "Warren-Delivery"
)

// DefaultTolerance is a sensible bound on the age of a signature for Verify:
// long enough for clock skew and a slow network, short enough that a
// captured request cannot be replayed later.
const DefaultTolerance = 5 * time.Minute

// Errors returned by Verify. Match them with errors.Is.
var (
	// ErrBadHeader: the signature header is missing or not of the form
	// t=<unix seconds>,v1=<hex>.
	ErrBadHeader = errors.New("webhook: malformed " + HeaderSignature + " header")
	// ErrTooOld: the signature's timestamp is further from now than the
	// tolerance allows (a replay, or a badly wrong clock).
	ErrTooOld = errors.New("webhook: signature timestamp outside the tolerance")
	// ErrMismatch: no signature in the header matches the body and secret.
	ErrMismatch = errors.New("webhook: signature does not match")
)

// Sign returns the Warren-Signature header value for body, signed with
// secret at time t.
func Sign(secret string, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac(secret, ts, body))
}

// Verify checks a Warren-Signature header value against the raw request body
// and the secret. It fails with ErrBadHeader when the header does not parse,
// ErrTooOld when its timestamp is more than tolerance away from now (a
// tolerance of zero or less disables that check), and ErrMismatch when no
// signature matches. body must be the bytes exactly as received.
func Verify(secret, header string, body []byte, tolerance time.Duration, now time.Time) error {
	ts, sigs, err := parse(header)
	if err != nil {
		return err
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: timestamp %q", ErrBadHeader, ts)
	}
	if tolerance > 0 {
		if age := now.Sub(time.Unix(sec, 0)); age > tolerance || age < -tolerance {
			return fmt.Errorf("%w: signed at %s, %s from now", ErrTooOld, time.Unix(sec, 0).UTC().Format(time.RFC3339), age.Round(time.Second))
		}
	}
	want := mac(secret, ts, body)
	for _, s := range sigs {
		if hmac.Equal(s, want) {
			return nil
		}
	}
	return ErrMismatch
}

// mac is the HMAC-SHA256 of "<ts>.<body>" under secret.
func mac(secret, ts string, body []byte) []byte {
	h := hmac.New(sha256.New, []byte(secret))
	h.Write([]byte(ts))
	h.Write([]byte{'.'})
	h.Write(body)
	return h.Sum(nil)
}

// parse splits a header value into its timestamp and its v1 signatures.
// Unknown keys are ignored, so that a later scheme (v2=…) can be added beside
// v1 without breaking receivers.
func parse(header string) (ts string, sigs [][]byte, err error) {
	if strings.TrimSpace(header) == "" {
		return "", nil, fmt.Errorf("%w: empty", ErrBadHeader)
	}
	for part := range strings.SplitSeq(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return "", nil, fmt.Errorf("%w: %q is not key=value", ErrBadHeader, part)
		}
		switch k {
		case "t":
			if ts != "" {
				return "", nil, fmt.Errorf("%w: two timestamps", ErrBadHeader)
			}
			ts = v
		case "v1":
			b, err := hex.DecodeString(v)
			if err != nil || len(b) != sha256.Size {
				return "", nil, fmt.Errorf("%w: v1 is not %d hex bytes", ErrBadHeader, sha256.Size)
			}
			sigs = append(sigs, b)
		}
	}
	switch {
	case ts == "":
		return "", nil, fmt.Errorf("%w: no t=", ErrBadHeader)
	case len(sigs) == 0:
		return "", nil, fmt.Errorf("%w: no v1=", ErrBadHeader)
	}
	return ts, sigs, nil
}
