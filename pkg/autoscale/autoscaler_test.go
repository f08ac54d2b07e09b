package autoscale

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type fakeSource struct {
	loads []QueueLoad
	err   error
	asked []string
}

func (f *fakeSource) Load(_ context.Context, queues []string, window time.Duration) ([]QueueLoad, error) {
	f.asked = queues
	if window != 30*time.Second {
		panic("window " + window.String())
	}
	return append([]QueueLoad(nil), f.loads...), f.err
}

type fakeBroker struct{ consumers map[string]int }

func (f *fakeBroker) QueueDepth(_ context.Context, q string) (int, int, error) {
	n, ok := f.consumers[q]
	if !ok {
		return 0, 0, errors.New("NOT_FOUND - no queue")
	}
	return 7, n, nil
}

type fakeScaler struct {
	mu       sync.Mutex
	n        int
	reads    int
	scales   []int
	scaleErr error
}

func (f *fakeScaler) Workers(context.Context) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	return f.n, nil
}

func (f *fakeScaler) Scale(_ context.Context, n int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.scaleErr != nil {
		return f.scaleErr
	}
	f.scales = append(f.scales, n)
	f.n = n
	return nil
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newTestAutoscaler(t *testing.T, src Source, br Broker, sc Scaler) (*Autoscaler, *clock, *bytes.Buffer, *prometheus.Registry) {
	t.Helper()
	clk := &clock{t: t0}
	var logs bytes.Buffer
	reg := prometheus.NewRegistry()
	a, err := New(Config{Policy: DefaultPolicy(), Queues: []string{"default", "mail"}, Backend: "fake", Now: clk.now},
		src, br, sc, reg, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return a, clk, &logs, reg
}

func TestAutoscalerScalesAndExplains(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	src := &fakeSource{loads: []QueueLoad{
		{Queue: "default", Ready: 300, ArrivalRate: 30, MeanJobTime: time.Second},
		{Queue: "mail", ArrivalRate: 10, MeanJobTime: time.Second},
	}}
	br := &fakeBroker{consumers: map[string]int{"default": 1}}
	sc := &fakeScaler{n: 1}
	a, clk, logs, reg := newTestAutoscaler(t, src, br, sc)
	if err := a.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	// 40 busy slots; 300 slot-s of work waiting, and 300 more piling up
	// while new workers start (40 − 10 slots up, for 10 s): 600 slot-s
	// drained in 40 s take 15 slots. (40 + 15) / 10 = 5.5: 6 workers.
	if len(sc.scales) != 1 || sc.scales[0] != 6 {
		t.Fatalf("scales %v", sc.scales)
	}
	if !slices.Equal(src.asked, []string{"default", "mail"}) {
		t.Fatalf("queues asked %v", src.asked)
	}
	if !strings.Contains(logs.String(), "scale up from 1 to 6") || !strings.Contains(logs.String(), "backend=fake") {
		t.Fatalf("log:\n%s", logs.String())
	}
	// Two seconds on: 5 workers are starting (one consumer); not ordered twice.
	clk.advance(2 * time.Second)
	if err := a.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if len(sc.scales) != 1 {
		t.Fatalf("ordered again: %v", sc.scales)
	}
	text := gather(t, reg)
	for _, want := range []string{
		`warren_autoscale_workers{state="starting"} 5`, `warren_autoscale_workers{state="up"} 1`,
		`warren_autoscale_desired_workers 6`, `warren_autoscale_queue_waiting_jobs{queue="default"} 300`,
		`warren_autoscale_queue_arrival_rate{queue="mail"} 10`, `warren_autoscale_queue_consumers{queue="default"} 1`,
		`warren_autoscale_decisions_total{direction="up"} 1`, `warren_autoscale_decisions_total{direction="hold"} 1`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	// Once RabbitMQ shows the consumers, they are up, startup or not.
	br.consumers["default"] = 6
	clk.advance(2 * time.Second)
	if err := a.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(gather(t, reg), `warren_autoscale_workers{state="up"} 6`) {
		t.Error("consumers not counted as up")
	}
}

func TestAutoscalerWithoutFigures(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	src := &fakeSource{err: errors.New("shard 1: connection refused")}
	sc := &fakeScaler{n: 4}
	a, _, _, reg := newTestAutoscaler(t, src, nil, sc)
	err := a.Tick(ctx)
	if err == nil || !strings.Contains(err.Error(), "no decision this tick") || len(sc.scales) != 0 {
		t.Fatalf("figures missing: %v, scales %v", err, sc.scales)
	}
	if !strings.Contains(gather(t, reg), `warren_autoscale_errors_total{stage="figures"} 1`) {
		t.Error("error not counted")
	}
	// A backend that refuses: the error says so, and the count is read again.
	src.err = nil
	src.loads = []QueueLoad{{Queue: "default", Ready: 2000, MeanJobTime: time.Second}}
	sc.scaleErr = &APIError{Backend: "heroku", Method: "PATCH", Path: "/apps/a/formation/worker", Status: 401}
	err = a.Tick(ctx)
	if !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("backend refusal: %v", err)
	}
	reads := sc.reads
	sc.scaleErr = nil
	if err := a.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if sc.reads != reads+1 || len(sc.scales) != 1 {
		t.Fatalf("after a failed scale: reads %d→%d, scales %v", reads, sc.reads, sc.scales)
	}
}

func TestAutoscalerResyncsAndKeepsAFleetItFinds(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// A new leader finds 12 workers and little load: it keeps them for the
	// down window before shrinking, as the last leader's window would have.
	src := &fakeSource{loads: []QueueLoad{{Queue: "default", ArrivalRate: 10, MeanJobTime: time.Second}}}
	sc := &fakeScaler{n: 12}
	a, clk, logs, _ := newTestAutoscaler(t, src, nil, sc)
	for range 60 {
		if err := a.Tick(ctx); err != nil {
			t.Fatal(err)
		}
		clk.advance(2 * time.Second)
	}
	if len(sc.scales) != 0 {
		t.Fatalf("shrank within the window: %v", sc.scales)
	}
	if sc.reads != 2 {
		t.Fatalf("backend read %d times in 2 minutes, want 2 (every minute)", sc.reads)
	}
	// Changed by hand: noticed at the next resync.
	sc.mu.Lock()
	sc.n = 15
	sc.mu.Unlock()
	clk.advance(time.Minute)
	if err := a.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "changed outside the autoscaler") {
		t.Fatalf("log:\n%s", logs.String())
	}
	for range 120 {
		clk.advance(2 * time.Second)
		if err := a.Tick(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if len(sc.scales) == 0 || sc.n != 2 {
		t.Fatalf("after the window: scales %v, now %d", sc.scales, sc.n)
	}
}

func gather(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			b.WriteString(mf.GetName())
			if len(m.GetLabel()) > 0 {
				b.WriteString("{")
				for i, l := range m.GetLabel() {
					if i > 0 {
						b.WriteString(",")
					}
					b.WriteString(l.GetName() + `="` + l.GetValue() + `"`)
				}
				b.WriteString("}")
			}
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
			b.WriteString(" " + strings.TrimSuffix(strings.TrimRight(strings.TrimRight(fmtFloat(v), "0"), "."), ".") + "\n")
		}
	}
	return b.String()
}

func fmtFloat(v float64) string { return strconv.FormatFloat(v, 'f', 3, 64) }
