package scheduler

import (
	"testing"
	"time"
)

// FuzzSchedule checks that no cron expression crashes the scheduler, and
// that for any expression that parses, latest finds the most recent tick:
// within (after, now], and with no tick between it and now. The seed corpus
// runs with go test; go test -fuzz=FuzzSchedule explores further.
func FuzzSchedule(f *testing.F) {
	for _, seed := range []string{
		"0 3 * * *", "@every 1m", "*/5 * * * *", "@hourly", "@daily", "@weekly", "@monthly", "@yearly",
		"0 0 30 2 *", "59 23 31 12 *", "0 9-17/2 * * mon-fri", "CRON_TZ=Europe/Paris 30 2 * * *",
		"TZ=America/New_York 0 0 * * sun", "TZ=UTC", "CRON_TZ=", "@every 0s", "@every -5m", "@every 1000000h",
		"", "* * * * * *", "1-5/0 * * * *", "*/9223372036854775807 * * * *", "5-1 * * * *", "@every 1.5s",
	} {
		f.Add(seed, int64(1_900_000_000), uint32(3600))
	}
	f.Fuzz(func(t *testing.T, spec string, nowUnix int64, back uint32) {
		s, err := parseSchedule(spec)
		if err != nil {
			return
		}
		// A now between 1970 and 2100, after at most ~4 months before it.
		now := time.Unix(nowUnix%4_102_444_800, 0).UTC()
		if now.Unix() < 0 {
			now = now.Add(4_102_444_800 * time.Second)
		}
		after := now.Add(-time.Duration(back%10_000_000) * time.Second)
		tick, ok := s.latest(after, now)
		if !ok {
			if n := s.next(after); !n.IsZero() && !n.After(now) {
				t.Fatalf("%q: no tick in (%s, %s], yet next(after) = %s", spec, after, now, n)
			}
			return
		}
		if !tick.After(after) || tick.After(now) {
			t.Fatalf("%q: latest(%s, %s) = %s, outside the interval", spec, after, now, tick)
		}
		if n := s.next(tick); !n.IsZero() && !n.After(now) {
			t.Fatalf("%q: latest(%s, %s) = %s, but %s is a later tick", spec, after, now, tick, n)
		}
		if n := s.next(tick); !n.IsZero() && !n.After(tick) {
			t.Fatalf("%q: next(%s) = %s does not move forward", spec, tick, n)
		}
	})
}
