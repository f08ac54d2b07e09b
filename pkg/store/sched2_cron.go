package store

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"time"
)

// CronTick is the last tick the scheduler enqueued for a cron entry.
type CronTick struct {
	Name     string    `db:"name"`
	Schedule string    `db:"schedule"`
	LastTick time.Time `db:"last_tick"`
}

// CronTicks returns the recorded last tick of every cron entry, by name.
// They live on shard 0, beside the leader lock.
func (s *Store) CronTicks(ctx context.Context) (map[string]CronTick, error) {
	var rows []CronTick
	if err := s.shards[0].SelectContext(ctx, &rows, `SELECT name, schedule, last_tick FROM cron_ticks`); err != nil {
		return nil, fmt.Errorf("read cron ticks: %w", err)
	}
	out := make(map[string]CronTick, len(rows))
	for _, r := range rows {
		out[r.Name] = r
	}
	return out, nil
}

// RecordCronTick records tick as handled for the cron entry name with the
// given schedule. The recorded tick never goes back for one schedule, so a
// deposed leader that records an older tick late changes nothing; a new
// schedule replaces the old one and its tick.
func (s *Store) RecordCronTick(ctx context.Context, name, schedule string, tick time.Time) error {
	_, err := s.shards[0].ExecContext(ctx, `INSERT INTO cron_ticks (name, schedule, last_tick) VALUES ($1, $2, $3)
		ON CONFLICT (name) DO UPDATE SET
			last_tick = CASE WHEN cron_ticks.schedule = EXCLUDED.schedule
				THEN greatest(cron_ticks.last_tick, EXCLUDED.last_tick) ELSE EXCLUDED.last_tick END,
			schedule = EXCLUDED.schedule,
			updated_at = now()`, name, schedule, tick)
	if err != nil {
		return fmt.Errorf("record cron tick of %s: %w", name, err)
	}
	return nil
}

// IdempotencyShard returns the shard an idempotency key of tenant belongs
// to: SHA-256 of tenant, a zero byte and key, modulo the number of shards.
// It is the api's routing of Idempotency-Key (see the server's keyShard),
// so a key maps to one shard whoever inserts it, and the unique index
// (tenant, idempotency_key) there decides.
func (s *Store) IdempotencyShard(tenant, key string) int {
	return int(keyHash(tenant, key) % uint64(len(s.shards)))
}

// keyHash is the hash that routes tenant's idempotency key: the first eight
// bytes of SHA-256 of tenant and key.
func keyHash(tenant, key string) uint64 {
	sum := sha256.Sum256([]byte(tenant + "\x00" + key))
	return binary.BigEndian.Uint64(sum[:8])
}
