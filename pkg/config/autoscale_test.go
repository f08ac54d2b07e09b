package config

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestAutoscaleDefaults(t *testing.T) {
	t.Parallel()
	c, err := LoadAutoscale(env(map[string]string{}))
	if err != nil {
		t.Fatal(err)
	}
	want := Autoscale{
		Mode: "off", Min: 1, Max: 20, Interval: 10 * time.Second, TargetLatency: 40 * time.Second, Headroom: 1.1,
		DownWindow: 150 * time.Second, DownStep: 1, IdleAfter: 5 * time.Minute, Startup: 20 * time.Second,
		DefaultJobTime: time.Second, Window: 30 * time.Second, Concurrency: DefaultConcurrency, Queues: []string{"default"},
		Procfile: "Procfile", ProcessType: "worker", Port: 5100, StopTimeout: 30 * time.Second,
		Deployment: "warren-worker", ServiceAccountDir: "/var/run/secrets/kubernetes.io/serviceaccount",
		HerokuAPI: "https://api.heroku.com",
	}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("got  %+v\nwant %+v", c, want)
	}
}

func TestAutoscaleFollowsTheWorkersSettings(t *testing.T) {
	t.Parallel()
	c, err := LoadAutoscale(env(map[string]string{
		"WARREN_AUTOSCALE": "Local", "WARREN_CONCURRENCY": "4", "WARREN_QUEUES": "a,b",
		"WARREN_SHUTDOWN_GRACE": "10s", "PORT": "5200",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Mode != "local" || c.Concurrency != 4 || !reflect.DeepEqual(c.Queues, []string{"a", "b"}) ||
		c.StopTimeout != 15*time.Second || c.Port != 5201 || c.Startup != 2*time.Second {
		t.Fatalf("got %+v", c)
	}
	c, err = LoadAutoscale(env(map[string]string{
		"WARREN_CONCURRENCY": "4", "WARREN_AUTOSCALE_CONCURRENCY": "8", "WARREN_QUEUES": "a,b", "WARREN_AUTOSCALE_QUEUES": "c",
		"WARREN_AUTOSCALE_PORT": "6000", "WARREN_AUTOSCALE_HEADROOM": "0.5", "WARREN_AUTOSCALE_MIN": "0",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Concurrency != 8 || !reflect.DeepEqual(c.Queues, []string{"c"}) || c.Port != 6000 || c.Headroom != 0.5 || c.Min != 0 {
		t.Fatalf("got %+v", c)
	}
}

func TestAutoscaleBackends(t *testing.T) {
	t.Parallel()
	c, err := LoadAutoscale(env(map[string]string{
		"WARREN_AUTOSCALE": "kubernetes", "KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "6443",
	}))
	if err != nil || c.APIServer != "https://10.0.0.1:6443" {
		t.Fatalf("kubernetes: %v %+v", err, c)
	}
	c, err = LoadAutoscale(env(map[string]string{
		"WARREN_AUTOSCALE": "heroku", "HEROKU_APP_NAME": "acme-warren", "HEROKU_API_KEY": "k",
	}))
	if err != nil || c.HerokuApp != "acme-warren" || c.HerokuAPIKey != "k" {
		t.Fatalf("heroku: %v %+v", err, c)
	}
}

func TestAutoscaleBadSettingsNameTheVariable(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		vars map[string]string
		want string
	}{
		{map[string]string{"WARREN_AUTOSCALE": "yes"}, `WARREN_AUTOSCALE: "yes" is not one of off, local, kubernetes, heroku`},
		{map[string]string{"WARREN_AUTOSCALE_MIN": "5", "WARREN_AUTOSCALE_MAX": "3"}, "WARREN_AUTOSCALE_MAX: 3 is below WARREN_AUTOSCALE_MIN (5)"},
		{map[string]string{"WARREN_AUTOSCALE_MIN": "-1"}, "WARREN_AUTOSCALE_MIN: -1 is out of range"},
		{map[string]string{"WARREN_AUTOSCALE_INTERVAL": "2"}, `WARREN_AUTOSCALE_INTERVAL: "2" is not a duration`},
		{map[string]string{"WARREN_AUTOSCALE_INTERVAL": "1ms"}, "WARREN_AUTOSCALE_INTERVAL: 1ms is out of range"},
		{map[string]string{"WARREN_AUTOSCALE_HEADROOM": "lots"}, `WARREN_AUTOSCALE_HEADROOM: "lots" is not a number`},
		{map[string]string{"WARREN_AUTOSCALE_HEADROOM": "NaN"}, `WARREN_AUTOSCALE_HEADROOM: "NaN" is not a number`},
		{map[string]string{"WARREN_AUTOSCALE_HEADROOM": "-0.5"}, "WARREN_AUTOSCALE_HEADROOM: -0.5 is out of range"},
		{map[string]string{"WARREN_AUTOSCALE_DOWN_STEP": "0"}, "WARREN_AUTOSCALE_DOWN_STEP: 0 is out of range"},
		{map[string]string{"WARREN_AUTOSCALE_QUEUES": "a b"}, "WARREN_AUTOSCALE_QUEUES:"},
		{map[string]string{"WARREN_AUTOSCALE_PROCESS": "work er"}, "WARREN_AUTOSCALE_PROCESS:"},
		{map[string]string{"WARREN_AUTOSCALE_PORT": "70000"}, "WARREN_AUTOSCALE_PORT: 70000 is out of range"},
		{map[string]string{"WARREN_AUTOSCALE": "kubernetes"}, "WARREN_AUTOSCALE_K8S_API: not set, and no KUBERNETES_SERVICE_HOST"},
		{map[string]string{"WARREN_AUTOSCALE_K8S_API": "ftp://x"}, "WARREN_AUTOSCALE_K8S_API: URL scheme"},
		{map[string]string{"WARREN_AUTOSCALE": "heroku", "HEROKU_API_KEY": "k"}, "WARREN_AUTOSCALE_HEROKU_APP: not set"},
		{map[string]string{"WARREN_AUTOSCALE": "heroku", "HEROKU_APP_NAME": "a"}, "HEROKU_API_KEY: not set"},
		{map[string]string{"WARREN_AUTOSCALE_HEROKU_API": "https://"}, "WARREN_AUTOSCALE_HEROKU_API: URL has no host"},
	} {
		_, err := LoadAutoscale(env(tc.vars))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want an error containing %q", tc.vars, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("error spans lines: %q", err)
		}
	}
}
