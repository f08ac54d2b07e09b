package config

import (
	"strings"
	"testing"
	"time"
)

func TestAPILimits(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		rate   string
		limit  int
		window time.Duration
	}{
		{"", 0, 0},
		{"off", 0, 0},
		{"100/s", 100, time.Second},
		{"6000/m", 6000, time.Minute},
		{"50000/h", 50000, time.Hour},
		{" 500 / 10s ", 500, 10 * time.Second},
	} {
		c, err := LoadAPI(env(map[string]string{"WARREN_INSECURE": "1", "WARREN_RATE_LIMIT": tc.rate, "WARREN_MAX_QUEUE_DEPTH": "5000"}))
		if err != nil {
			t.Fatalf("%q: %v", tc.rate, err)
		}
		if c.RateLimit != tc.limit || c.RateWindow != tc.window || c.MaxQueueDepth != 5000 {
			t.Errorf("%q: got %d/%v depth %d", tc.rate, c.RateLimit, c.RateWindow, c.MaxQueueDepth)
		}
	}
	c, err := LoadAPI(env(map[string]string{"WARREN_INSECURE": "1"}))
	if err != nil || c.RateLimit != 0 || c.MaxQueueDepth != 0 || c.MaxSubmitsInFlight != 1000 {
		t.Errorf("defaults: %+v, %v", c, err)
	}
	for _, tc := range []struct{ name, value, want string }{
		{"WARREN_RATE_LIMIT", "100", `WARREN_RATE_LIMIT: "100" is not a rate`},
		{"WARREN_RATE_LIMIT", "x/s", `WARREN_RATE_LIMIT: "x/s" is not a rate`},
		{"WARREN_RATE_LIMIT", "0/s", "WARREN_RATE_LIMIT: 0 jobs per window is out of range"},
		{"WARREN_RATE_LIMIT", "10/fortnight", `WARREN_RATE_LIMIT: window "fortnight"`},
		{"WARREN_RATE_LIMIT", "10/100ms", "WARREN_RATE_LIMIT: window 100ms is out of range"},
		{"WARREN_MAX_QUEUE_DEPTH", "-1", "WARREN_MAX_QUEUE_DEPTH: -1 is out of range"},
		{"WARREN_MAX_QUEUE_DEPTH", "lots", `WARREN_MAX_QUEUE_DEPTH: "lots" is not a whole number`},
		{"WARREN_MAX_SUBMITS_IN_FLIGHT", "0", "WARREN_MAX_SUBMITS_IN_FLIGHT: 0 is out of range"},
	} {
		_, err := LoadAPI(env(map[string]string{"WARREN_INSECURE": "1", tc.name: tc.value}))
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s=%q: got %v, want one line containing %q", tc.name, tc.value, err, tc.want)
		}
	}
}
