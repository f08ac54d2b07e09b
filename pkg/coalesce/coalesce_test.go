package coalesce

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// A lone call is its own batch and runs at once.
func TestLoneCallRunsAlone(t *testing.T) {
	t.Parallel()
	var sizes []int
	g := New(10, time.Second, func(_ context.Context, in []int) ([]int, error) {
		sizes = append(sizes, len(in))
		out := make([]int, len(in))
		for i, v := range in {
			out[i] = v * 2
		}
		return out, nil
	})
	for i := range 3 {
		if got, err := g.Do(context.Background(), i); err != nil || got != i*2 {
			t.Fatalf("Do(%d) = %d, %v", i, got, err)
		}
	}
	if len(sizes) != 3 || sizes[0] != 1 || sizes[1] != 1 || sizes[2] != 1 {
		t.Fatalf("batch sizes %v, want three batches of one", sizes)
	}
}

// Calls that arrive while a batch runs go together in the next one, each
// answered with its own result, no batch larger than the bound.
func TestConcurrentCallsShareBatches(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const callers, bound = 200, 16
		release := make(chan struct{})
		var running, batches, largest atomic.Int32
		g := New(bound, 5*time.Second, func(_ context.Context, in []int) ([]int, error) {
			if running.Add(1) != 1 {
				t.Error("two batches ran at once")
			}
			defer running.Add(-1)
			if batches.Add(1) == 1 {
				<-release // hold the first batch until every caller has queued
			}
			if n := int32(len(in)); n > largest.Load() {
				largest.Store(n)
			}
			out := make([]int, len(in))
			for i, v := range in {
				out[i] = v + 1000
			}
			return out, nil
		})
		var wg sync.WaitGroup
		for i := range callers {
			wg.Go(func() {
				got, err := g.Do(context.Background(), i)
				if err != nil || got != i+1000 {
					t.Errorf("Do(%d) = %d, %v", i, got, err)
				}
			})
		}
		// Every goroutine blocked: the leader on release, the rest queued.
		synctest.Wait()
		g.mu.Lock()
		queued := len(g.queue)
		g.mu.Unlock()
		if queued != callers-1 {
			t.Fatalf("%d callers queued behind the first batch, want %d", queued, callers-1)
		}
		close(release)
		wg.Wait()
		if b := batches.Load(); b > 1+(callers-1+bound-1)/bound {
			t.Errorf("%d batches for %d calls with bound %d", b, callers, bound)
		}
		if largest.Load() != bound {
			t.Errorf("largest batch %d, want the bound %d", largest.Load(), bound)
		}
		if g.busy || len(g.queue) != 0 {
			t.Error("group not idle after the last call")
		}
	})
}

// A batch error reaches every caller of that batch; the next batch is
// unaffected; a wrong result count is an error, not a panic.
func TestErrorsReachTheirBatch(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom")
	g := New(4, time.Second, func(_ context.Context, in []string) ([]string, error) {
		switch in[0] {
		case "fail":
			return nil, boom
		case "short":
			return nil, nil
		}
		return in, nil
	})
	if _, err := g.Do(context.Background(), "fail"); !errors.Is(err, boom) {
		t.Errorf("fail: %v", err)
	}
	if _, err := g.Do(context.Background(), "short"); err == nil {
		t.Error("short: no error")
	}
	if got, err := g.Do(context.Background(), "ok"); err != nil || got != "ok" {
		t.Errorf("ok: %q %v", got, err)
	}
}

// A batch runs under the group's timeout even when the leading caller's
// context is already cancelled: the batch serves other callers too.
func TestBatchContextIsDetached(t *testing.T) {
	t.Parallel()
	g := New(4, 50*time.Millisecond, func(ctx context.Context, in []int) ([]int, error) {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		<-ctx.Done() // the timeout ends it
		return nil, ctx.Err()
	})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := g.Do(ctx, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v, want the group's deadline", err)
	}
}

// A caller queued behind a running batch gives up when its context ends:
// its item is withdrawn and never runs, and the group goes on serving.
func TestQueuedCallerGivesUpAtItsDeadline(t *testing.T) {
	t.Parallel()
	started, release := make(chan struct{}), make(chan struct{})
	var ran sync.Map
	g := New(8, 10*time.Second, func(_ context.Context, in []string) ([]string, error) {
		for _, v := range in {
			ran.Store(v, true)
			if v == "slow" {
				close(started)
				<-release
			}
		}
		return in, nil
	})
	leaderDone := make(chan error, 1)
	go func() {
		_, err := g.Do(context.Background(), "slow")
		leaderDone <- err
	}()
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := g.Do(ctx, "impatient"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("queued caller past its deadline: %v", err)
	}
	close(release)
	if err := <-leaderDone; err != nil {
		t.Fatal(err)
	}
	if got, err := g.Do(context.Background(), "after"); err != nil || got != "after" {
		t.Fatalf("after: %q %v", got, err)
	}
	if _, ok := ran.Load("impatient"); ok {
		t.Error("a withdrawn item ran")
	}
}

// Many callers, some giving up at random: everyone who waits gets their own
// result, the lead is never lost, and the group ends idle.
func TestCallersGivingUpNeverStallTheGroup(t *testing.T) {
	t.Parallel()
	g := New(5, 10*time.Second, func(_ context.Context, in []int) ([]int, error) {
		for range 10 * len(in) { // the work of a batch: others queue meanwhile
			runtime.Gosched()
		}
		out := make([]int, len(in))
		for i, v := range in {
			out[i] = -v
		}
		return out, nil
	})
	var wg sync.WaitGroup
	var patient, impatient atomic.Int32
	for i := range 400 {
		wg.Go(func() {
			ctx := context.Background()
			if i%3 == 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, time.Duration(i%7)*100*time.Microsecond)
				defer cancel()
			}
			got, err := g.Do(ctx, i)
			switch {
			case err == nil && got == -i:
				patient.Add(1)
			case err != nil && i%3 == 0 && errors.Is(err, context.DeadlineExceeded):
				impatient.Add(1)
			default:
				t.Errorf("call %d: %d, %v", i, got, err)
			}
		})
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(60 * time.Second):
		t.Fatal("callers still waiting after 60s: the lead was lost")
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.busy || len(g.queue) != 0 {
		t.Errorf("group not idle: busy %v, %d queued", g.busy, len(g.queue))
	}
	t.Logf("%d answered, %d gave up", patient.Load(), impatient.Load())
}

// A batch ends by its leader's deadline when that comes before the
// Group's timeout.
func TestBatchEndsByTheLeadersDeadline(t *testing.T) {
	t.Parallel()
	g := New(4, time.Hour, func(ctx context.Context, in []int) ([]int, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := g.Do(ctx, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the batch ran %v, past its leader's deadline", d)
	}
}

// DoWithin behind a batch that does not end: a queued item is withdrawn
// after the caller's patience, a caller arriving once the batch has run
// longer than that is refused at once, neither item runs, and the group
// serves again when the batch ends.
func TestDoWithinGivesUpBehindAStuckBatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		var ran sync.Map
		g := New(8, time.Hour, func(_ context.Context, in []string) ([]string, error) {
			for _, v := range in {
				ran.Store(v, true)
				if v == "stuck" {
					<-release
				}
			}
			return in, nil
		})
		leader := make(chan error, 1)
		go func() {
			_, err := g.Do(context.Background(), "stuck")
			leader <- err
		}()
		synctest.Wait()

		queued := make(chan error, 1)
		go func() {
			_, err := g.DoWithin(context.Background(), "queued", time.Second)
			queued <- err
		}()
		synctest.Wait() // queued behind the stuck batch, its timer running
		if err := <-queued; !errors.Is(err, ErrBusy) {
			t.Fatalf("queued caller after its patience: %v, want ErrBusy", err)
		}
		g.mu.Lock()
		left := len(g.queue)
		g.mu.Unlock()
		if left != 0 {
			t.Errorf("%d items still queued after the caller gave up", left)
		}

		// The batch has now run for longer than a second: refused at once.
		if _, err := g.DoWithin(context.Background(), "late", time.Second); !errors.Is(err, ErrBusy) {
			t.Fatalf("caller behind a batch older than its patience: %v, want ErrBusy", err)
		}
		close(release)
		if err := <-leader; err != nil {
			t.Fatal(err)
		}
		if got, err := g.DoWithin(context.Background(), "after", time.Second); err != nil || got != "after" {
			t.Fatalf("after the batch ended: %q, %v", got, err)
		}
		for _, v := range []string{"queued", "late"} {
			if _, ok := ran.Load(v); ok {
				t.Errorf("item %q ran after its caller was told ErrBusy", v)
			}
		}
	})
}

// An item already taken into a running batch is not abandoned when the
// caller's patience runs out: the caller waits for that batch's result, so
// it always knows whether its item took effect.
func TestDoWithinWaitsForABatchThatTookItsItem(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		first, second := make(chan struct{}), make(chan struct{})
		g := New(8, time.Hour, func(_ context.Context, in []string) ([]string, error) {
			switch in[0] {
			case "first":
				<-first
			case "second":
				<-second
			}
			out := make([]string, len(in))
			for i, v := range in {
				out[i] = v + "!"
			}
			return out, nil
		})
		results := make(chan error, 3)
		go func() { _, err := g.Do(context.Background(), "first"); results <- err }()
		synctest.Wait()
		go func() { _, err := g.Do(context.Background(), "second"); results <- err }()
		synctest.Wait()
		patient := make(chan string, 1)
		go func() {
			got, err := g.DoWithin(context.Background(), "patient", time.Minute)
			if err != nil {
				t.Errorf("an item taken into a batch: %v, want its result", err)
			}
			patient <- got
		}()
		synctest.Wait()
		// "second" leads the next batch, which takes "patient" with it and
		// blocks; the patience then runs out while the item is in it.
		close(first)
		synctest.Wait()
		time.Sleep(2 * time.Minute) // the bubble's clock: no real time passes
		synctest.Wait()
		select {
		case got := <-patient:
			t.Fatalf("the caller left before its batch ended, with %q", got)
		default:
		}
		close(second)
		if got := <-patient; got != "patient!" {
			t.Errorf("got %q, want the batch's result", got)
		}
		for range 2 {
			if err := <-results; err != nil {
				t.Error(err)
			}
		}
	})
}
