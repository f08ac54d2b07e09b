package server

import (
	"net/http"
	"slices"
	"strings"
)

// route is one entry of the route table: Handler registers it, and a test
// checks that openapi.json describes exactly these routes.
type route struct {
	method, path string
	// Exactly one of public and authed is set; authed routes need a token.
	public http.Handler
	authed func(http.ResponseWriter, *http.Request, string)
}

// routes is the route table: every route the API serves.
func (s *Server) routes() []route {
	return []route{
		{method: "GET", path: "/healthz", public: http.HandlerFunc(s.healthz)},
		{method: "GET", path: "/readyz", public: http.HandlerFunc(s.readyz)},
		{method: "GET", path: "/metrics", public: s.metrics.handler()},
		{method: "GET", path: "/openapi.json", public: http.HandlerFunc(serveOpenAPI)},
		{method: "POST", path: "/v1/jobs", authed: s.admitSubmit(s.submit)},
		{method: "GET", path: "/v1/jobs", authed: s.list},
		{method: "POST", path: "/v1/jobs/batch", authed: s.admitSubmit(s.submitBatch)},
		{method: "GET", path: "/v1/jobs/{id}", authed: s.get},
		{method: "POST", path: "/v1/jobs/{id}/cancel", authed: s.cancel},
		{method: "POST", path: "/v1/jobs/{id}/retry", authed: s.retry},
		{method: "GET", path: "/v1/queues", authed: s.queues},
		{method: "GET", path: "/v1/workers", authed: s.workers},
	}
}

// allowed returns the methods the routes serve on path, comma-separated, or
// "" when no route has the path.
func allowed(rs []route, path string) string {
	var methods []string
	for _, rt := range rs {
		if pathMatches(rt.path, path) && !slices.Contains(methods, rt.method) {
			methods = append(methods, rt.method)
		}
	}
	slices.Sort(methods)
	return strings.Join(methods, ", ")
}

// pathMatches matches a path against a route pattern whose {name} segments
// match any one non-empty segment.
func pathMatches(pattern, path string) bool {
	ps, xs := strings.Split(pattern, "/"), strings.Split(path, "/")
	if len(ps) != len(xs) {
		return false
	}
	for i, p := range ps {
		if strings.HasPrefix(p, "{") && strings.HasSuffix(p, "}") {
			if xs[i] == "" {
				return false
			}
			continue
		}
		if p != xs[i] {
			return false
		}
	}
	return true
}
