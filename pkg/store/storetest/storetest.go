// Package storetest gives each test its own freshly migrated Postgres shards:
// one schema per shard in a shared test database, dropped when the test ends.
package storetest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/lib/pq"

	"github.com/warrenhq/warren/pkg/servicetest"
	"github.com/warrenhq/warren/pkg/store"
)

const testDB = "warren_test"

// URLs returns the URLs of n new, migrated shards for this test.
func URLs(tb testing.TB, n int) []string {
	tb.Helper()
	return urls(tb, n, true)
}

// Blank returns the URLs of n new shards without the migrations applied, for
// testing the release step.
func Blank(tb testing.TB, n int) []string {
	tb.Helper()
	return urls(tb, n, false)
}

func urls(tb testing.TB, n int, migrated bool) []string {
	tb.Helper()
	urls, cleanup, err := shards(os.Getenv(servicetest.PostgresVar), n, migrated)
	if err != nil {
		servicetest.URL(tb, servicetest.PostgresVar) // names the missing variable
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := cleanup(); err != nil {
			tb.Error(err)
		}
	})
	return urls
}

// Shards creates n new, migrated shards on the Postgres at admin (a URL of
// its "postgres" database) and returns their URLs and a function dropping them.
func Shards(admin string, n int) (urls []string, cleanup func() error, err error) {
	return shards(admin, n, true)
}

func shards(admin string, n int, migrated bool) (urls []string, cleanup func() error, err error) {
	if admin == "" {
		return nil, nil, errors.New(servicetest.PostgresVar + " is not set: run the tests with `make test`")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := ensureDB(ctx, admin); err != nil {
		return nil, nil, err
	}
	base, err := withDB(admin, testDB, "")
	if err != nil {
		return nil, nil, err
	}
	db, err := sql.Open("postgres", base)
	if err != nil {
		return nil, nil, err
	}
	defer db.Close()
	var schemas []string
	cleanup = func() error {
		var errs []error
		for _, schema := range schemas {
			errs = append(errs, dropSchema(base, schema))
		}
		return errors.Join(errs...)
	}
	for range n {
		schema := servicetest.Name("t")
		if _, err := db.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
			return nil, nil, errors.Join(fmt.Errorf("create schema: %w", err), cleanup())
		}
		schemas = append(schemas, schema)
		u, err := withDB(admin, testDB, schema)
		if err != nil {
			return nil, nil, errors.Join(err, cleanup())
		}
		urls = append(urls, u)
	}
	if !migrated {
		return urls, cleanup, nil
	}
	s, err := store.Open(store.Config{URLs: urls, MaxConns: 4})
	if err != nil {
		return nil, nil, errors.Join(err, cleanup())
	}
	defer s.Close()
	if err := s.Migrate(ctx); err != nil {
		return nil, nil, errors.Join(fmt.Errorf("migrate: %w", err), cleanup())
	}
	return urls, cleanup, nil
}

// New returns a Store over n new shards, closed when the test ends.
func New(tb testing.TB, n int) *store.Store {
	tb.Helper()
	s, err := store.Open(store.Config{URLs: URLs(tb, n), MaxConns: 8})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Close)
	return s
}

func ensureDB(ctx context.Context, admin string) error {
	db, err := sql.Open("postgres", admin)
	if err != nil {
		return err
	}
	defer db.Close()
	var n int
	if err := db.QueryRowContext(ctx, "SELECT count(*) FROM pg_database WHERE datname = $1", testDB).Scan(&n); err != nil {
		return fmt.Errorf("reach the test Postgres: %w", err)
	}
	if n > 0 {
		return nil
	}
	_, err = db.ExecContext(ctx, "CREATE DATABASE "+testDB)
	var pqErr *pq.Error
	// Test packages run in parallel; another may have created it first.
	if err != nil && !(errors.As(err, &pqErr) && (pqErr.Code == "42P04" || pqErr.Code == "23505")) {
		return fmt.Errorf("create test database: %w", err)
	}
	return nil
}

func withDB(admin, name, schema string) (string, error) {
	u, err := url.Parse(admin)
	if err != nil {
		return "", fmt.Errorf("bad %s: %w", servicetest.PostgresVar, err)
	}
	u.Path = "/" + name
	q := u.Query()
	if schema != "" {
		q.Set("search_path", schema)
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}

func dropSchema(base, schema string) error {
	db, err := sql.Open("postgres", base)
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.Exec("DROP SCHEMA " + schema + " CASCADE"); err != nil {
		return fmt.Errorf("drop schema %s: %w", schema, err)
	}
	return nil
}
