package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/golang-migrate/migrate/v4"
	"github.com/golang-migrate/migrate/v4/database/postgres"
	"github.com/golang-migrate/migrate/v4/source/iofs"

	"github.com/warrenhq/warren/migrations"
)

// Migrate applies every pending migration to every shard. Re-running it is a
// no-op. It takes Postgres's advisory lock per shard, so concurrent runs wait.
func (s *Store) Migrate(ctx context.Context) error {
	for i, db := range s.shards {
		if err := migrateShard(ctx, db.DB.Conn, i); err != nil {
			return err
		}
	}
	return nil
}

func migrateShard(ctx context.Context, conn func(context.Context) (*sql.Conn, error), shard int) error {
	c, err := conn(ctx)
	if err != nil {
		return fmt.Errorf("migrate shard %d: %w", shard, err)
	}
	driver, err := postgres.WithConnection(ctx, c, &postgres.Config{})
	if err != nil {
		return fmt.Errorf("migrate shard %d: %w", shard, err)
	}
	defer driver.Close()
	src, err := iofs.New(migrations.FS, ".")
	if err != nil {
		return fmt.Errorf("migrate shard %d: read migrations: %w", shard, err)
	}
	m, err := migrate.NewWithInstance("iofs", src, "postgres", driver)
	if err != nil {
		return fmt.Errorf("migrate shard %d: %w", shard, err)
	}
	if err := m.Up(); err != nil && !errors.Is(err, migrate.ErrNoChange) {
		return fmt.Errorf("migrate shard %d: %w", shard, err)
	}
	return nil
}
