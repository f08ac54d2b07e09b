package server

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"
)

// auth maps bearer tokens to tenants. It keeps only SHA-256 hashes of the
// tokens and compares them in constant time.
type auth struct {
	insecure bool
	tokens   []tokenHash
}

type tokenHash struct {
	tenant string
	sum    [sha256.Size]byte
}

func newAuth(tenants []Tenant, insecure bool) *auth {
	a := &auth{insecure: insecure}
	for _, t := range tenants {
		a.tokens = append(a.tokens, tokenHash{tenant: t.Name, sum: sha256.Sum256([]byte(t.Token))})
	}
	return a
}

// tenant returns the request's tenant, or "" and the reason it has none.
func (a *auth) tenant(r *http.Request) (string, string) {
	h := r.Header.Get("Authorization")
	if h == "" {
		if a.insecure {
			return "default", ""
		}
		return "", "missing bearer token: send Authorization: Bearer <token>"
	}
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return "", "malformed Authorization header: expected Bearer <token>"
	}
	sum := sha256.Sum256([]byte(token))
	tenant := ""
	for _, t := range a.tokens { // every entry, so timing says nothing about which matched
		if subtle.ConstantTimeCompare(sum[:], t.sum[:]) == 1 {
			tenant = t.tenant
		}
	}
	if tenant == "" {
		if a.insecure && len(a.tokens) == 0 {
			return "default", ""
		}
		return "", "invalid bearer token"
	}
	return tenant, ""
}
