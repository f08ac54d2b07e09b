// Package storetest gives each test its own freshly migrated Postgres shards:
// one schema per shard in a shared test database, dropped when the test ends.
package storetest

import (
	"context"
	"database/sql"
	"errors"
	"net/url"
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
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin := servicetest.URL(tb, servicetest.PostgresVar)
	ensureDB(ctx, tb, admin)
	base := withDB(tb, admin, testDB, "")
	db, err := sql.Open("postgres", base)
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	urls := make([]string, n)
	for i := range urls {
		schema := servicetest.Name("t")
		if _, err := db.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
			tb.Fatalf("create schema: %v", err)
		}
		tb.Cleanup(func() { dropSchema(tb, base, schema) })
		urls[i] = withDB(tb, admin, testDB, schema)
	}
	s, err := store.Open(store.Config{URLs: urls, MaxConns: 4})
	if err != nil {
		tb.Fatal(err)
	}
	defer s.Close()
	if err := s.Migrate(ctx); err != nil {
		tb.Fatalf("migrate: %v", err)
	}
	return urls
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

func ensureDB(ctx context.Context, tb testing.TB, admin string) {
	tb.Helper()
	db, err := sql.Open("postgres", admin)
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRowContext(ctx, "SELECT count(*) FROM pg_database WHERE datname = $1", testDB).Scan(&n); err != nil {
		tb.Fatalf("reach the test Postgres: %v", err)
	}
	if n > 0 {
		return
	}
	_, err = db.ExecContext(ctx, "CREATE DATABASE "+testDB)
	var pqErr *pq.Error
	// Test packages run in parallel; another may have created it first.
	if err != nil && !(errors.As(err, &pqErr) && (pqErr.Code == "42P04" || pqErr.Code == "23505")) {
		tb.Fatalf("create test database: %v", err)
	}
}

func withDB(tb testing.TB, admin, name, schema string) string {
	tb.Helper()
	u, err := url.Parse(admin)
	if err != nil {
		tb.Fatal(err)
	}
	u.Path = "/" + name
	q := u.Query()
	if schema != "" {
		q.Set("search_path", schema)
	}
	u.RawQuery = q.Encode()
	return u.String()
}

func dropSchema(tb testing.TB, base, schema string) {
	db, err := sql.Open("postgres", base)
	if err != nil {
		tb.Error(err)
		return
	}
	defer db.Close()
	if _, err := db.Exec("DROP SCHEMA " + schema + " CASCADE"); err != nil {
		tb.Errorf("drop schema %s: %v", schema, err)
	}
}
