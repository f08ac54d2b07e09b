package netguard

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"testing"
	"time"
)

func TestBlockedRanges(t *testing.T) {
	t.Parallel()
	g, err := New(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ip      string
		allowed bool
	}{
		{"127.0.0.1", false}, {"10.1.2.3", false}, {"172.20.0.1", false}, {"192.168.1.1", false},
		{"169.254.169.254", false}, {"0.0.0.0", false}, {"::1", false}, {"fe80::1", false},
		{"fd00::1", false}, {"::ffff:127.0.0.1", false}, {"100.64.0.1", false},
		{"93.184.216.34", true}, {"2606:4700::1111", true},
	} {
		if got := g.AllowedIP(netip.MustParseAddr(tc.ip)); got != tc.allowed {
			t.Errorf("%s: allowed=%v, want %v", tc.ip, got, tc.allowed)
		}
	}
}

func TestAllowList(t *testing.T) {
	t.Parallel()
	g, err := New([]string{"10.0.0.0/8", "192.168.1.5"})
	if err != nil {
		t.Fatal(err)
	}
	if !g.AllowedIP(netip.MustParseAddr("10.9.9.9")) || !g.AllowedIP(netip.MustParseAddr("192.168.1.5")) {
		t.Error("allow-listed addresses refused")
	}
	if g.AllowedIP(netip.MustParseAddr("192.168.1.6")) {
		t.Error("an address outside the allow list passed")
	}
	if _, err := New([]string{"not a/host"}); err == nil {
		t.Error("a malformed entry was accepted")
	}
}

func TestClientRefusesLoopbackIncludingRedirects(t *testing.T) {
	t.Parallel()
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) }))
	defer target.Close()
	g, err := New(nil)
	if err != nil {
		t.Fatal(err)
	}
	// A name that resolves to loopback is refused after resolution.
	resp, err := g.Client(5 * time.Second).Get("http://localhost:" + target.URL[len("http://127.0.0.1:"):])
	if err == nil {
		resp.Body.Close()
		t.Fatal("request to localhost went through")
	}
	if !errors.Is(err, ErrBlocked) {
		t.Fatalf("got %v, want ErrBlocked", err)
	}
	// Allowing the exact host:port lets it through; a redirect from there to
	// another loopback address is checked again and refused.
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL, http.StatusFound)
	}))
	defer redirector.Close()
	g2, err := New([]string{redirector.Listener.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	resp, err = g2.Client(5 * time.Second).Get(redirector.URL)
	if err == nil {
		resp.Body.Close()
		t.Fatal("redirect to a blocked address went through")
	}
	if !errors.Is(err, ErrBlocked) {
		t.Fatalf("redirect: got %v, want ErrBlocked", err)
	}
	g3, err := New([]string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	resp, err = g3.Client(5 * time.Second).Get(redirector.URL)
	if err != nil {
		t.Fatalf("allow-listed loopback: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 204 {
		t.Fatalf("status %d", resp.StatusCode)
	}
}

// A bare host name in the allow list lets that name through on any port,
// whatever it resolves to; other names, and the address itself, are still
// checked after resolution.
func TestAllowListedHostName(t *testing.T) {
	t.Parallel()
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	one, two := httptest.NewServer(ok), httptest.NewServer(ok)
	defer one.Close()
	defer two.Close()
	port := func(s *httptest.Server) string { return strconv.Itoa(s.Listener.Addr().(*net.TCPAddr).Port) }

	g, err := New([]string{"LocalHost"}) // entries are case-insensitive
	if err != nil {
		t.Fatal(err)
	}
	c := g.Client(5 * time.Second)
	defer c.CloseIdleConnections()
	for _, u := range []string{
		"http://localhost:" + port(one) + "/",
		"http://localhost:" + port(two) + "/", // any port of the name
	} {
		resp, err := c.Get(u)
		if err != nil {
			t.Fatalf("%s, allowed by the entry localhost: %v", u, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("%s: status %d", u, resp.StatusCode)
		}
	}

	for _, tc := range []struct {
		allow []string
		url   string
	}{
		// The name allows the name, not the loopback address it stands for.
		{[]string{"localhost"}, "http://127.0.0.1:" + port(one) + "/"},
		// A name that is not listed is refused once it resolves to loopback.
		{[]string{"jobs.example.com"}, "http://localhost:" + port(one) + "/"},
		// A host:port entry allows that port only.
		{[]string{"localhost:" + port(two)}, "http://localhost:" + port(one) + "/"},
	} {
		g, err := New(tc.allow)
		if err != nil {
			t.Fatal(err)
		}
		c := g.Client(5 * time.Second)
		resp, err := c.Get(tc.url)
		if err == nil {
			resp.Body.Close()
			t.Errorf("allow %v: %s went through", tc.allow, tc.url)
			continue
		}
		if !errors.Is(err, ErrBlocked) {
			t.Errorf("allow %v: %s: got %v, want ErrBlocked", tc.allow, tc.url, err)
		}
	}
}
