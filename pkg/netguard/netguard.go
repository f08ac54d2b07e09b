// Package netguard makes HTTP clients that refuse to connect to internal
// addresses — loopback, link-local (the cloud metadata address among them),
// private and other special ranges — unless allow-listed. The check runs on
// the address actually dialled, after DNS resolution, so neither a redirect
// nor DNS rebinding gets around it.
package netguard

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"syscall"
	"time"
)

// ErrBlocked reports a connection refused because of its destination.
var ErrBlocked = errors.New("destination address is not allowed")

// blocked are the ranges refused unless allow-listed.
var blocked = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"), // carrier-grade NAT
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"), // link-local, incl. 169.254.169.254
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("224.0.0.0/4"),
	netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix("::/128"),
	netip.MustParsePrefix("::1/128"),
	netip.MustParsePrefix("fc00::/7"),
	netip.MustParsePrefix("fe80::/10"),
	netip.MustParsePrefix("ff00::/8"),
}

// Guard decides which destinations may be dialled.
type Guard struct {
	hosts     map[string]bool // host names, any port
	hostPorts map[string]bool // host:port
	prefixes  []netip.Prefix
}

// New returns a Guard that also allows the given entries: host names,
// host:port pairs, IP addresses or CIDR ranges (the WARREN_HTTP_ALLOW format).
func New(allow []string) (*Guard, error) {
	g := &Guard{hosts: map[string]bool{}, hostPorts: map[string]bool{}}
	for _, a := range allow {
		a = strings.ToLower(strings.TrimSpace(a))
		if a == "" {
			continue
		}
		if p, err := netip.ParsePrefix(a); err == nil {
			g.prefixes = append(g.prefixes, p.Masked())
			continue
		}
		if ip, err := netip.ParseAddr(a); err == nil {
			g.prefixes = append(g.prefixes, netip.PrefixFrom(ip, ip.BitLen()))
			continue
		}
		if host, port, err := net.SplitHostPort(a); err == nil && host != "" && port != "" {
			g.hostPorts[net.JoinHostPort(host, port)] = true
			continue
		}
		if strings.ContainsAny(a, "/: ") {
			return nil, fmt.Errorf("netguard: %q is not a host, host:port, IP or CIDR", a)
		}
		g.hosts[a] = true
	}
	return g, nil
}

// allowedName reports whether the requested host (before resolution) is
// allow-listed by name.
func (g *Guard) allowedName(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	return g.hosts[strings.ToLower(host)] || g.hostPorts[strings.ToLower(hostport)]
}

// AllowedIP reports whether ip may be dialled.
func (g *Guard) AllowedIP(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, p := range g.prefixes {
		if p.Contains(ip) {
			return true
		}
	}
	for _, p := range blocked {
		if p.Contains(ip) {
			return false
		}
	}
	return true
}

// DialContext dials like net.Dialer, refusing blocked addresses.
func (g *Guard) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	if g.allowedName(addr) {
		return d.DialContext(ctx, network, addr)
	}
	d.Control = func(_, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return fmt.Errorf("%w: %s", ErrBlocked, address)
		}
		if !g.AllowedIP(ap.Addr()) {
			return fmt.Errorf("%w: %s resolves to %s (internal; allow it with WARREN_HTTP_ALLOW)", ErrBlocked, addr, ap.Addr())
		}
		return nil
	}
	return d.DialContext(ctx, network, addr)
}

// Client returns an HTTP client that dials through the guard, never through a
// proxy, follows at most 5 redirects (each dial checked again) and gives up
// after timeout.
func (g *Guard) Client(timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			Proxy:                 nil,
			DialContext:           g.DialContext,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          100,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: timeout,
		},
		CheckRedirect: func(_ *http.Request, via []*http.Request) error {
			if len(via) >= 5 {
				return errors.New("stopped after 5 redirects")
			}
			return nil
		},
	}
}
