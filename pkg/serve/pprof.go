package serve

import (
	"net/http"
	"net/http/pprof"
)

// Profiling returns a handler that serves Go's profiles under /debug/pprof/
// and everything else from h. It is opt-in (WARREN_PPROF=true): a CPU profile
// costs the process while it runs, and like /metrics the side server has no
// authentication, so keep it off public listeners.
func Profiling(h http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.Handle("/", h)
	return mux
}
