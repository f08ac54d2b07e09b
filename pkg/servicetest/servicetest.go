// Package servicetest gives tests the addresses of the real services that
// `make test` starts (Postgres, RabbitMQ, Redis), and fails the test clearly
// when they are missing. It never fakes a service.
package servicetest

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"testing"
)

// The variables deploy/test.sh exports.
const (
	PostgresVar  = "WARREN_TEST_POSTGRES_URL"
	RabbitMQVar  = "WARREN_TEST_RABBITMQ_URL"
	ManagmentVar = "WARREN_TEST_RABBITMQ_MGMT_URL"
	RedisVar     = "WARREN_TEST_REDIS_URL"
)

// URL returns the service URL in the named variable, failing the test when it
// is unset: tests run against real services, started by `make test`.
func URL(tb testing.TB, name string) string {
	tb.Helper()
	v := os.Getenv(name)
	if v == "" {
		tb.Fatalf("%s is not set: run the tests with `make test`, which starts the real services", name)
	}
	return v
}

// Name returns a unique lowercase name with the prefix, for isolating a test's
// database schema, queue names or key prefix.
func Name(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return strings.ToLower(prefix) + "_" + hex.EncodeToString(b[:])
}
