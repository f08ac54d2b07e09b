package worker

import (
	"slices"
	"testing"
	"time"

	"github.com/warrenhq/warren/pkg/job"
)

func TestRoomHandsOutByPriorityThenAgeWithinTypeLimits(t *testing.T) {
	t.Parallel()
	limited := &registration{typ: "limited", concurrency: 1}
	free := &registration{typ: "free"}
	type msg struct {
		name string
		reg  *registration
		prio uint8
	}
	for _, tc := range []struct {
		name string
		in   []msg
		take int
		want []string
	}{
		{"oldest first", []msg{{"a", free, 0}, {"b", free, 0}, {"c", free, 0}}, 3, []string{"a", "b", "c"}},
		{"priority first", []msg{{"a", free, 0}, {"b", free, 5}, {"c", free, 9}, {"d", free, 5}}, 4, []string{"c", "b", "d", "a"}},
		// The second limited message waits while the first runs; others pass it.
		{"type at its limit is skipped", []msg{{"l1", limited, 9}, {"l2", limited, 9}, {"f", free, 0}}, 2, []string{"l1", "f"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newRoom()
			byName := map[*pending]string{}
			for _, m := range tc.in {
				p := &pending{reg: m.reg, prio: m.prio, msg: job.Message{Type: m.reg.typ}}
				byName[p] = m.name
				if !r.push(p) {
					t.Fatal("push refused")
				}
			}
			var got []string
			for range tc.take {
				p, ok := r.next()
				if !ok {
					t.Fatal("room closed")
				}
				got = append(got, byName[p])
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestRoomFreesATypeSlotOnDone(t *testing.T) {
	t.Parallel()
	r := newRoom()
	reg := &registration{typ: "one", concurrency: 1}
	a, b := &pending{reg: reg}, &pending{reg: reg}
	r.push(a)
	r.push(b)
	first, _ := r.next()
	got := make(chan *pending)
	go func() {
		p, _ := r.next()
		got <- p
	}()
	select {
	case <-got:
		t.Fatal("second message handed out while the type is at its limit")
	case <-time.After(50 * time.Millisecond):
	}
	r.done(first)
	select {
	case p := <-got:
		if p != b {
			t.Fatal("wrong message")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("slot not freed")
	}
	if r.busy() != 1 {
		t.Fatalf("busy %d, want 1", r.busy())
	}
}

func TestRoomCloseWakesWaitersAndReturnsTheRest(t *testing.T) {
	t.Parallel()
	r := newRoom()
	reg := &registration{typ: "one", concurrency: 1}
	r.push(&pending{reg: reg})
	r.next()
	left := &pending{reg: reg}
	r.push(left)
	done := make(chan bool)
	go func() {
		_, ok := r.next()
		done <- ok
	}()
	rest := r.close()
	if ok := <-done; ok {
		t.Fatal("next handed out a message after close")
	}
	if len(rest) != 1 || rest[0] != left {
		t.Fatalf("close returned %v", rest)
	}
	if r.push(&pending{reg: reg}) {
		t.Fatal("push accepted after close")
	}
}

func TestRoomExpiresLongWaits(t *testing.T) {
	t.Parallel()
	r := newRoom()
	reg := &registration{typ: "t"}
	now := time.Now()
	old, fresh := &pending{reg: reg, since: now.Add(-2 * time.Minute)}, &pending{reg: reg, since: now}
	r.push(old)
	r.push(fresh)
	if got := r.expired(now.Add(-time.Minute)); len(got) != 1 || got[0] != old {
		t.Fatalf("expired %v", got)
	}
	if p, _ := r.next(); p != fresh {
		t.Fatal("the fresh message should remain")
	}
}
