package config

import (
	"fmt"
	"math"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Autoscale is the autoscaler's configuration (WARREN_AUTOSCALE_*), read by
// the scheduler process. docs/AUTOSCALING.md explains every setting.
type Autoscale struct {
	// Mode: WARREN_AUTOSCALE, one of off (default), local, kubernetes, heroku.
	Mode string

	// The policy.
	Min, Max       int           // WARREN_AUTOSCALE_MIN (1), WARREN_AUTOSCALE_MAX (20)
	Interval       time.Duration // WARREN_AUTOSCALE_INTERVAL, between decisions (10s)
	TargetLatency  time.Duration // WARREN_AUTOSCALE_TARGET_LATENCY, to drain a backlog (40s)
	Headroom       float64       // WARREN_AUTOSCALE_HEADROOM, spare slots per √busy slots (1.1)
	DownWindow     time.Duration // WARREN_AUTOSCALE_DOWN_WINDOW, stabilisation (2m30s)
	DownStep       int           // WARREN_AUTOSCALE_DOWN_STEP, workers removed at most per decision (1)
	IdleAfter      time.Duration // WARREN_AUTOSCALE_IDLE_AFTER, idle time before zero when MIN=0 (5m)
	Startup        time.Duration // WARREN_AUTOSCALE_STARTUP, a new worker's start time (local 2s, else 20s)
	DefaultJobTime time.Duration // WARREN_AUTOSCALE_JOB_TIME, assumed before a job finished (1s)
	Window         time.Duration // WARREN_AUTOSCALE_WINDOW, for arrival and completion rates (30s)
	// Concurrency: WARREN_AUTOSCALE_CONCURRENCY, jobs one worker runs at
	// once; default WARREN_CONCURRENCY, else DefaultConcurrency, as the
	// workers read it.
	Concurrency int
	// Queues: WARREN_AUTOSCALE_QUEUES, the queues the fleet serves; default
	// WARREN_QUEUES, else "default", as the workers read it.
	Queues []string

	// The local backend: the scheduler runs the workers as child processes.
	// Command: WARREN_AUTOSCALE_COMMAND; empty means the worker: line of the
	// Procfile at Procfile (WARREN_AUTOSCALE_PROCFILE, default "Procfile").
	Command  string
	Procfile string
	// ProcessType: WARREN_AUTOSCALE_PROCESS, the Procfile line to run and the
	// prefix of the children's output; default "worker".
	ProcessType string
	// Port: WARREN_AUTOSCALE_PORT, the PORT of the first child, the next
	// ones counting up; default PORT+1, else 5100.
	Port int
	// StopTimeout: WARREN_AUTOSCALE_STOP_TIMEOUT, how long a child told to
	// stop may take before it is killed; default WARREN_SHUTDOWN_GRACE + 5s.
	StopTimeout time.Duration

	// The kubernetes backend: the scale subresource of a Deployment.
	// Deployment: WARREN_AUTOSCALE_K8S_DEPLOYMENT, default "warren-worker".
	Deployment string
	// Namespace: WARREN_AUTOSCALE_K8S_NAMESPACE; empty means the service
	// account's namespace file.
	Namespace string
	// APIServer: WARREN_AUTOSCALE_K8S_API; default
	// https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT.
	APIServer string
	// ServiceAccountDir: WARREN_AUTOSCALE_K8S_SA_DIR, holding token, ca.crt
	// and namespace; default /var/run/secrets/kubernetes.io/serviceaccount.
	ServiceAccountDir string

	// The heroku backend: the Platform API's formation of the process type.
	// HerokuApp: WARREN_AUTOSCALE_HEROKU_APP, default HEROKU_APP_NAME.
	HerokuApp string
	// HerokuAPIKey: HEROKU_API_KEY (required).
	HerokuAPIKey string
	// HerokuAPI: WARREN_AUTOSCALE_HEROKU_API, default https://api.heroku.com.
	HerokuAPI string
}

// The autoscaler's modes.
const (
	AutoscaleOff        = "off"
	AutoscaleLocal      = "local"
	AutoscaleKubernetes = "kubernetes"
	AutoscaleHeroku     = "heroku"
)

// LoadAutoscale reads the autoscaler's configuration. With WARREN_AUTOSCALE
// off (the default) the other settings are still checked, so that a typo
// shows before the autoscaler is turned on.
func LoadAutoscale(get Getenv) (Autoscale, error) {
	r := &reader{get: get}
	var c Autoscale
	c.Mode = strings.ToLower(r.str("WARREN_AUTOSCALE", AutoscaleOff))
	switch c.Mode {
	case AutoscaleOff, AutoscaleLocal, AutoscaleKubernetes, AutoscaleHeroku:
	default:
		r.fail("WARREN_AUTOSCALE", "%q is not one of off, local, kubernetes, heroku", c.Mode)
	}
	c.Min = r.int("WARREN_AUTOSCALE_MIN", 1, 0, 10_000)
	c.Max = r.int("WARREN_AUTOSCALE_MAX", 20, 1, 10_000)
	if c.Max < c.Min {
		r.fail("WARREN_AUTOSCALE_MAX", "%d is below WARREN_AUTOSCALE_MIN (%d)", c.Max, c.Min)
	}
	c.Interval = r.duration("WARREN_AUTOSCALE_INTERVAL", 10*time.Second, 100*time.Millisecond, 10*time.Minute)
	c.TargetLatency = r.duration("WARREN_AUTOSCALE_TARGET_LATENCY", 40*time.Second, 100*time.Millisecond, 24*time.Hour)
	c.Headroom = r.float("WARREN_AUTOSCALE_HEADROOM", 1.1, 0, 10)
	c.DownWindow = r.duration("WARREN_AUTOSCALE_DOWN_WINDOW", 150*time.Second, 0, 24*time.Hour)
	c.DownStep = r.int("WARREN_AUTOSCALE_DOWN_STEP", 1, 1, 10_000)
	c.IdleAfter = r.duration("WARREN_AUTOSCALE_IDLE_AFTER", 5*time.Minute, 0, 7*24*time.Hour)
	startup := 20 * time.Second
	if c.Mode == AutoscaleLocal {
		startup = 2 * time.Second
	}
	c.Startup = r.duration("WARREN_AUTOSCALE_STARTUP", startup, 0, time.Hour)
	c.DefaultJobTime = r.duration("WARREN_AUTOSCALE_JOB_TIME", time.Second, time.Millisecond, 24*time.Hour)
	c.Window = r.duration("WARREN_AUTOSCALE_WINDOW", 30*time.Second, time.Second, time.Hour)
	c.Concurrency = r.int("WARREN_AUTOSCALE_CONCURRENCY", r.int("WARREN_CONCURRENCY", DefaultConcurrency, 1, 10_000), 1, 10_000)
	c.Queues = r.list("WARREN_AUTOSCALE_QUEUES", r.list("WARREN_QUEUES", []string{"default"}))
	for _, q := range c.Queues {
		if !namePattern.MatchString(q) {
			r.fail("WARREN_AUTOSCALE_QUEUES", "%q must be 1-100 letters, digits or _.:-", q)
		}
	}

	c.Command = r.str("WARREN_AUTOSCALE_COMMAND", "")
	c.Procfile = r.str("WARREN_AUTOSCALE_PROCFILE", "Procfile")
	c.ProcessType = r.str("WARREN_AUTOSCALE_PROCESS", "worker")
	if !procTypePattern.MatchString(c.ProcessType) {
		r.fail("WARREN_AUTOSCALE_PROCESS", "%q is not a process type (letters, digits, _ or -)", c.ProcessType)
	}
	port := 5100
	if v, _ := r.first("PORT"); v != "" {
		port = r.int("PORT", 0, 1, 65535) + 1
	}
	c.Port = r.int("WARREN_AUTOSCALE_PORT", port, 1, 65535)
	grace := r.duration("WARREN_SHUTDOWN_GRACE", 25*time.Second, 0, time.Hour)
	c.StopTimeout = r.duration("WARREN_AUTOSCALE_STOP_TIMEOUT", grace+5*time.Second, time.Second, 2*time.Hour)

	c.Deployment = r.str("WARREN_AUTOSCALE_K8S_DEPLOYMENT", "warren-worker")
	c.Namespace = r.str("WARREN_AUTOSCALE_K8S_NAMESPACE", "")
	c.ServiceAccountDir = r.str("WARREN_AUTOSCALE_K8S_SA_DIR", "/var/run/secrets/kubernetes.io/serviceaccount")
	c.APIServer = r.str("WARREN_AUTOSCALE_K8S_API", "")
	if c.APIServer == "" {
		if host, _ := r.first("KUBERNETES_SERVICE_HOST"); host != "" {
			c.APIServer = "https://" + joinHostPort(host, r.str("KUBERNETES_SERVICE_PORT", "443"))
		}
	}
	if c.APIServer != "" {
		r.httpURL("WARREN_AUTOSCALE_K8S_API", c.APIServer)
	} else if c.Mode == AutoscaleKubernetes {
		r.fail("WARREN_AUTOSCALE_K8S_API", "not set, and no KUBERNETES_SERVICE_HOST: is the scheduler running in a cluster?")
	}

	c.HerokuApp = r.str("WARREN_AUTOSCALE_HEROKU_APP", r.str("HEROKU_APP_NAME", ""))
	c.HerokuAPIKey = r.str("HEROKU_API_KEY", "")
	c.HerokuAPI = r.str("WARREN_AUTOSCALE_HEROKU_API", "https://api.heroku.com")
	r.httpURL("WARREN_AUTOSCALE_HEROKU_API", c.HerokuAPI)
	if c.Mode == AutoscaleHeroku {
		if c.HerokuApp == "" {
			r.fail("WARREN_AUTOSCALE_HEROKU_APP", "not set (nor HEROKU_APP_NAME): the app whose formation to scale")
		}
		if c.HerokuAPIKey == "" {
			r.fail("HEROKU_API_KEY", "not set: an API key allowed to scale the app (heroku authorizations:create)")
		}
	}
	return c, r.err()
}

var procTypePattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,63}$`)

func (r *reader) float(name string, def, lo, hi float64) float64 {
	v, _ := r.first(name)
	if v == "" {
		return def
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(f) {
		r.fail(name, "%q is not a number", v)
		return def
	}
	if f < lo || f > hi {
		r.fail(name, "%v is out of range [%v, %v]", f, lo, hi)
		return def
	}
	return f
}

// httpURL checks an http(s) URL with a host, without echoing credentials.
func (r *reader) httpURL(name, raw string) {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		r.fail(name, "not a URL")
	case u.Scheme != "http" && u.Scheme != "https":
		r.fail(name, "URL scheme %q, want https:// (or http://)", u.Scheme)
	case u.Hostname() == "":
		r.fail(name, "URL has no host")
	}
}

func joinHostPort(host, port string) string {
	if strings.Contains(host, ":") && !strings.HasPrefix(host, "[") {
		host = "[" + host + "]" // an IPv6 address
	}
	return fmt.Sprintf("%s:%s", host, port)
}
