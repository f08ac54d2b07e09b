package webhook

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestVerify(t *testing.T) {
	t.Parallel()
	const secret = "topsecret"
	body := []byte(`{"id":"x","state":"succeeded"}`)
	at := time.Unix(1_700_000_000, 0)
	good := Sign(secret, at, body)
	other := Sign("old-secret", at, body)
	_, otherSig, _ := strings.Cut(other, ",")

	for _, tc := range []struct {
		name   string
		secret string
		header string
		body   string
		tol    time.Duration
		now    time.Time
		want   error
	}{
		{"valid", secret, good, string(body), time.Minute, at.Add(30 * time.Second), nil},
		{"valid, clock slightly behind", secret, good, string(body), time.Minute, at.Add(-30 * time.Second), nil},
		{"valid, no tolerance check", secret, good, string(body), 0, at.Add(1000 * time.Hour), nil},
		{"valid among several v1", secret, good + "," + otherSig, string(body), time.Minute, at, nil},
		{"valid, rotated secret listed first", secret, "t=1700000000," + otherSig + "," + strings.Split(good, ",")[1], string(body), time.Minute, at, nil},
		{"unknown scheme ignored", secret, good + ",v0=abc", string(body), time.Minute, at, nil},
		{"spaces tolerated", secret, strings.ReplaceAll(good, ",", ", "), string(body), time.Minute, at, nil},
		{"too old", secret, good, string(body), time.Minute, at.Add(61 * time.Second), ErrTooOld},
		{"from the future", secret, good, string(body), time.Minute, at.Add(-61 * time.Second), ErrTooOld},
		{"body altered", secret, good, string(body) + " ", time.Minute, at, ErrMismatch},
		{"wrong secret", "nope", good, string(body), time.Minute, at, ErrMismatch},
		{"timestamp altered", secret, strings.Replace(good, "t=1700000000", "t=1700000001", 1), string(body), time.Minute, at, ErrMismatch},
		{"empty", secret, "", string(body), time.Minute, at, ErrBadHeader},
		{"no timestamp", secret, strings.Split(good, ",")[1], string(body), time.Minute, at, ErrBadHeader},
		{"no v1", secret, "t=1700000000", string(body), time.Minute, at, ErrBadHeader},
		{"bad hex", secret, "t=1700000000,v1=zz", string(body), time.Minute, at, ErrBadHeader},
		{"short v1", secret, "t=1700000000,v1=abcd", string(body), time.Minute, at, ErrBadHeader},
		{"bad timestamp", secret, "t=soon," + strings.Split(good, ",")[1], string(body), time.Minute, at, ErrBadHeader},
		{"two timestamps", secret, "t=1," + good, string(body), time.Minute, at, ErrBadHeader},
		{"not key=value", secret, good + ",junk", string(body), time.Minute, at, ErrBadHeader},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := Verify(tc.secret, tc.header, []byte(tc.body), tc.tol, tc.now)
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("Verify(%q) = %v, want %v", tc.header, err, tc.want)
			}
		})
	}
}

func TestSignFormat(t *testing.T) {
	t.Parallel()
	h := Sign("k", time.Unix(42, 999_000_000), []byte("{}"))
	if !strings.HasPrefix(h, "t=42,v1=") || len(h) != len("t=42,v1=")+64 {
		t.Fatalf("Sign = %q, want t=42,v1=<64 hex>", h)
	}
}
