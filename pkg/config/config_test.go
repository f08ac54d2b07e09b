package config

import (
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) Getenv { return func(k string) string { return m[k] } }

func TestAPIDefaults(t *testing.T) {
	t.Parallel()
	c, err := LoadAPI(env(map[string]string{"WARREN_API_TOKENS": "default:0123456789abcdef,acme:fedcba9876543210"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Addr != "127.0.0.1:8080" || c.MaxBodyBytes != 1<<20 || c.DefaultMaxAttempts != 5 || c.DefaultTimeout != 10*time.Minute {
		t.Errorf("defaults: %+v", c)
	}
	if len(c.Tenants) != 2 || c.Tenants[1].Name != "acme" || c.Tenants[1].Token != "fedcba9876543210" {
		t.Errorf("tenants: %+v", c.Tenants)
	}
	if len(c.DatabaseURLs) != 1 || c.Namespace != "warren" {
		t.Errorf("services: %+v", c.Services)
	}
}

func TestHerokuNames(t *testing.T) {
	t.Parallel()
	c, err := LoadWorker(env(map[string]string{
		"DATABASE_URL":  "postgres://u:p@db.example:5432/d",
		"CLOUDAMQP_URL": "amqps://u:p@mq.example/v",
		"REDIS_TLS_URL": "rediss://:p@r.example:6380",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.DatabaseURLs[0] != "postgres://u:p@db.example:5432/d" || c.RabbitMQURL != "amqps://u:p@mq.example/v" || c.RedisURL != "rediss://:p@r.example:6380" {
		t.Errorf("got %+v", c.Services)
	}
}

func TestBadSettingsNameTheVariable(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		vars map[string]string
		want string
	}{
		{map[string]string{}, "WARREN_API_TOKENS: no tokens"},
		{map[string]string{"WARREN_API_TOKENS": "nocolon"}, "WARREN_API_TOKENS: entry 1 is not tenant:token"},
		{map[string]string{"WARREN_API_TOKENS": "a:short"}, "WARREN_API_TOKENS: entry 1 (tenant a): token shorter"},
		{map[string]string{"WARREN_INSECURE": "true", "PORT": "abc"}, `PORT: "abc" is not a whole number`},
		{map[string]string{"WARREN_INSECURE": "true", "PORT": "70000"}, "PORT: 70000 is out of range"},
		{map[string]string{"WARREN_INSECURE": "yes please"}, "WARREN_INSECURE:"},
		{map[string]string{"WARREN_INSECURE": "1", "DATABASE_URLS": "mysql://x/y"}, "DATABASE_URLS: URL scheme"},
		{map[string]string{"WARREN_INSECURE": "1", "RABBITMQ_URL": "amqp://"}, "RABBITMQ_URL: URL has no host"},
		{map[string]string{"WARREN_INSECURE": "1", "WARREN_DEFAULT_TIMEOUT": "ten"}, "WARREN_DEFAULT_TIMEOUT:"},
		{map[string]string{"WARREN_INSECURE": "1", "WARREN_LOG_LEVEL": "loud"}, "WARREN_LOG_LEVEL:"},
		{map[string]string{"WARREN_INSECURE": "1", "WARREN_NAMESPACE": "a b"}, "WARREN_NAMESPACE:"},
	} {
		_, err := LoadAPI(env(tc.vars))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want an error containing %q", tc.vars, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("error spans lines: %q", err)
		}
	}
	_, err := LoadWorker(env(map[string]string{"WARREN_CONCURRENCY": "0", "WARREN_QUEUES": "ok,bad queue"}))
	if err == nil || !strings.Contains(err.Error(), "WARREN_CONCURRENCY") || !strings.Contains(err.Error(), "WARREN_QUEUES") {
		t.Errorf("worker: got %v, want both variables named", err)
	}
}

func TestErrorsHideSecrets(t *testing.T) {
	t.Parallel()
	_, err := LoadAPI(env(map[string]string{"WARREN_INSECURE": "1", "REDIS_URL": "http://:hunter2@x"}))
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("got %v", err)
	}
}
