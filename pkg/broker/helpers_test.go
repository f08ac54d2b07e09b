package broker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testURL returns the AMQP URL of the test RabbitMQ.
func testURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv("WARREN_TEST_RABBITMQ_URL")
	if u == "" {
		t.Fatal("WARREN_TEST_RABBITMQ_URL is not set: run the tests with `make test` (deploy/test.sh), which starts RabbitMQ")
	}
	return u
}

// bundle is one test's isolated corner of RabbitMQ: a unique prefix and
// connection name, and the brokers made on it.
type bundle struct {
	t      testing.TB
	cfg    Config
	mu     sync.Mutex
	queues map[string]bool // Warren queue names to delete afterwards
}

// setup returns a bundle whose config has a unique Prefix and ConnectionName,
// modified by mod if not nil. Everything declared under the prefix is
// deleted when the test ends.
func setup(t testing.TB, mod func(*Config)) *bundle {
	t.Helper()
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	name := strings.NewReplacer("/", ".", " ", "_").Replace(t.Name())
	if len(name) > 40 {
		name = name[:40]
	}
	prefix := "wt-" + name + "-" + hex.EncodeToString(rnd[:])
	cfg := Config{URL: testURL(t), Prefix: prefix, ConnectionName: prefix}
	if mod != nil {
		mod(&cfg)
	}
	bun := &bundle{t: t, cfg: cfg, queues: map[string]bool{}}
	t.Cleanup(bun.deleteAll)
	return bun
}

// broker returns a new Broker for the bundle's config, closed when the test
// ends.
func (bun *bundle) broker() *Broker {
	bun.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := New(ctx, bun.cfg, testLogger(bun.t))
	if err != nil {
		bun.t.Fatalf("New: %v", err)
	}
	bun.t.Cleanup(func() {
		bun.mu.Lock()
		b.mu.Lock()
		for q := range b.queues {
			bun.queues[q] = true
		}
		b.mu.Unlock()
		bun.mu.Unlock()
		if err := b.Close(); err != nil {
			bun.t.Errorf("Close: %v", err)
		}
	})
	return b
}

// queue records q as a Warren queue of this test and returns it.
func (bun *bundle) queue(q string) string {
	bun.mu.Lock()
	defer bun.mu.Unlock()
	bun.queues[q] = true
	return q
}

// deleteAll deletes the bundle's queues and exchange.
func (bun *bundle) deleteAll() {
	raw := dialRaw(bun.t)
	bun.mu.Lock()
	defer bun.mu.Unlock()
	for q := range bun.queues {
		for _, name := range []string{bun.cfg.Prefix + ".q." + q, bun.cfg.Prefix + ".park." + q, bun.cfg.Prefix + ".dead." + q} {
			rawDo(bun.t, raw, func(ch *amqp.Channel) error {
				_, err := ch.QueueDelete(name, false, false, false)
				return err
			})
		}
	}
	rawDo(bun.t, raw, func(ch *amqp.Channel) error { return ch.ExchangeDelete(bun.cfg.Prefix, false, false) })
}

// dialRaw opens a plain AMQP connection for test set-up and inspection,
// closed when the test ends.
func dialRaw(t testing.TB) *amqp.Connection {
	t.Helper()
	conn, err := amqp.Dial(testURL(t))
	if err != nil {
		t.Fatalf("dial test RabbitMQ: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// rawDo runs fn on a fresh channel of conn and reports its error.
func rawDo(t testing.TB, conn *amqp.Connection, fn func(*amqp.Channel) error) {
	t.Helper()
	ch, err := conn.Channel()
	if err != nil {
		t.Errorf("open channel: %v", err)
		return
	}
	defer closeChannel(ch)
	if err := fn(ch); err != nil {
		t.Errorf("raw AMQP: %v", err)
	}
}

// rawReady returns the ready-message count of the RabbitMQ queue name.
func rawReady(t testing.TB, conn *amqp.Connection, name string) int {
	t.Helper()
	n := -1
	rawDo(t, conn, func(ch *amqp.Channel) error {
		q, err := ch.QueueDeclarePassive(name, true, false, false, false, nil)
		n = q.Messages
		return err
	})
	return n
}

// testLogger logs through t, so output shows only for failing tests.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// consume runs b.Consume in a goroutine that pushes every delivery on the
// returned channel. stop cancels it and returns Consume's result; it also
// runs when the test ends.
func consume(t testing.TB, b *Broker, queue string, prefetch int) (<-chan *Delivery, func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan *Delivery, 10000)
	errc := make(chan error, 1)
	go func() {
		errc <- b.Consume(ctx, queue, prefetch, func(_ context.Context, d *Delivery) { out <- d })
	}()
	var (
		once sync.Once
		err  error
	)
	stop := func() error {
		once.Do(func() {
			cancel()
			err = <-errc
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return out, stop
}

// next returns the next delivery, failing the test after timeout.
func next(t testing.TB, ch <-chan *Delivery, timeout time.Duration) *Delivery {
	t.Helper()
	select {
	case d := <-ch:
		return d
	case <-time.After(timeout):
		t.Fatalf("no delivery within %s", timeout)
		return nil
	}
}

// eventually polls cond every 20ms until it is true, failing the test after
// timeout.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// mgmt calls the RabbitMQ management HTTP API and returns the response body.
func mgmt(t testing.TB, method, path string) []byte {
	t.Helper()
	base := os.Getenv("WARREN_TEST_RABBITMQ_MGMT_URL")
	if base == "" {
		t.Fatal("WARREN_TEST_RABBITMQ_MGMT_URL is not set: run the tests with `make test` (deploy/test.sh)")
	}
	req, err := http.NewRequest(method, strings.TrimSuffix(base, "/")+"/"+path, nil)
	if err != nil {
		t.Fatalf("management request: %v", err)
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("management %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("management %s %s: read body: %v", method, path, err)
	}
	if resp.StatusCode >= 300 {
		t.Fatalf("management %s %s: %s: %s", method, path, resp.Status, body)
	}
	return body
}

// connections returns the server-side names of the connections whose
// client-given connection_name is name.
func connections(t testing.TB, name string) []string {
	t.Helper()
	var conns []struct {
		Name             string `json:"name"`
		ClientProperties struct {
			ConnectionName string `json:"connection_name"`
		} `json:"client_properties"`
	}
	if err := json.Unmarshal(mgmt(t, http.MethodGet, "api/connections"), &conns); err != nil {
		t.Fatalf("decode connections: %v", err)
	}
	var names []string
	for _, c := range conns {
		if c.ClientProperties.ConnectionName == name {
			names = append(names, c.Name)
		}
	}
	return names
}

// queueInfo returns the management API's view of the RabbitMQ queue name in
// the default vhost.
func queueInfo(t testing.TB, name string) map[string]any {
	t.Helper()
	var info map[string]any
	if err := json.Unmarshal(mgmt(t, http.MethodGet, "api/queues/%2F/"+url.PathEscape(name)), &info); err != nil {
		t.Fatalf("decode queue %s: %v", name, err)
	}
	return info
}

// ids returns n distinct message ids for a test.
func ids(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%05d", prefix, i)
	}
	return out
}
