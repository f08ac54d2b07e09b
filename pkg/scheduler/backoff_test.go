package scheduler

import (
	"testing"
	"time"
)

func TestCallbackBackoff(t *testing.T) {
	t.Parallel()
	cfg := Config{}.withDefaults().Callbacks
	for _, tc := range []struct {
		attempt int
		jitter  func(time.Duration) time.Duration
		want    time.Duration
	}{
		{1, none, 5 * time.Second},
		{2, none, 10 * time.Second},
		{9, none, 1280 * time.Second},
		{10, none, 2560 * time.Second},
		{11, none, time.Hour},
		{1000, none, time.Hour},
		{1, most, 2500 * time.Millisecond},
		{11, most, 30 * time.Minute},
	} {
		d := &deliverer{cfg: cfg, jitter: tc.jitter}
		if got := d.backoff(tc.attempt); got != tc.want {
			t.Errorf("backoff(%d) = %s, want %s", tc.attempt, got, tc.want)
		}
	}
}

func none(time.Duration) time.Duration   { return 0 }
func most(d time.Duration) time.Duration { return d }

func TestDefaults(t *testing.T) {
	t.Parallel()
	cfg := Config{}.withDefaults()
	c := cfg.Callbacks
	if cfg.Tick != 500*time.Millisecond || cfg.DispatchBatch != 1000 || c.Batch != 100 || c.Concurrency != 16 ||
		c.Timeout != 10*time.Second || c.MaxAttempts != 10 || c.Lease != 2*time.Minute {
		t.Errorf("defaults: %+v", cfg)
	}
	// The lease covers a batch whose every attempt times out.
	c = Config{Callbacks: CallbackConfig{Batch: 100, Concurrency: 2, Timeout: 10 * time.Second}}.withDefaults().Callbacks
	if c.Lease < 500*time.Second {
		t.Errorf("lease %s for 50 rounds of 10s", c.Lease)
	}
}
