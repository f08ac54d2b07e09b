package cache

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Rate is a limit of Limit units per Window.
type Rate struct {
	Limit  int
	Window time.Duration
}

// String formats the rate as "100/1s".
func (r Rate) String() string { return fmt.Sprintf("%d/%v", r.Limit, r.Window) }

// takeScript takes ARGV[1] units from the counter KEYS[1] unless that would
// pass the limit ARGV[2]; a new counter expires after ARGV[3] ms. A refused
// take leaves the counter as it was, so refused requests do not eat the
// next ones' room. Returns {1 if taken, the count}.
var takeScript = redis.NewScript(`
local n = tonumber(ARGV[1])
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if cur + n > tonumber(ARGV[2]) then
	return {0, cur}
end
local v = redis.call('INCRBY', KEYS[1], n)
if v == n then
	redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return {1, v}
`)

// Take takes n units of tenant's rate in the fixed window that now falls in
// (windows are aligned to the Unix epoch, so every api shares them), in one
// atomic step. It reports whether they were taken and, if not, how long
// until the window ends. The counter lives at
// "<prefix>rate:<tenant>:<window number>".
func (c *Cache) Take(ctx context.Context, tenant string, n int, rate Rate, now time.Time) (ok bool, retryAfter time.Duration, err error) {
	win := rate.Window.Milliseconds()
	if win <= 0 || rate.Limit <= 0 {
		return false, 0, fmt.Errorf("rate limit %s: not a positive rate", rate)
	}
	ms := now.UnixMilli()
	idx := ms / win
	key := c.prefix + "rate:" + tenant + ":" + strconv.FormatInt(idx, 10)
	// Expire a little after the window ends, for clocks that lag.
	res, err := takeScript.Run(ctx, c.rdb, []string{key}, n, rate.Limit, win+1000).Int64Slice()
	if err != nil {
		return false, 0, fmt.Errorf("rate limit of %s: %w", tenant, err)
	}
	if len(res) != 2 {
		return false, 0, fmt.Errorf("rate limit of %s: unexpected answer %v", tenant, res)
	}
	if res[0] == 1 {
		return true, 0, nil
	}
	return false, time.Duration((idx+1)*win-ms) * time.Millisecond, nil
}
