package job

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestIDCarriesShardAndTime(t *testing.T) {
	t.Parallel()
	now := time.UnixMilli(1_790_000_000_123)
	for _, shard := range []int{0, 1, 7, MaxShards - 1} {
		id := NewID(now, shard)
		if got := id.Shard(); got != shard {
			t.Errorf("shard: got %d, want %d", got, shard)
		}
		if !id.Time().Equal(now) {
			t.Errorf("time: got %v, want %v", id.Time(), now)
		}
		back, err := ParseID(id.String())
		if err != nil || back != id {
			t.Errorf("round trip of %s: got %s, %v", id, back, err)
		}
	}
}

func TestIDsSortByCreationTime(t *testing.T) {
	t.Parallel()
	base := time.UnixMilli(1_790_000_000_000)
	prev := NewID(base, 5)
	for i := 1; i < 1000; i++ {
		next := NewID(base.Add(time.Duration(i)*time.Millisecond), i%3)
		if next.String() <= prev.String() {
			t.Fatalf("id %s created after %s sorts before it", next, prev)
		}
		prev = next
	}
}

func TestIDSQLRoundTrip(t *testing.T) {
	t.Parallel()
	id := NewID(time.Now(), 3)
	v, err := id.Value()
	if err != nil {
		t.Fatal(err)
	}
	var back ID
	if err := back.Scan(v); err != nil {
		t.Fatal(err)
	}
	if back != id {
		t.Fatalf("got %s, want %s", back, id)
	}
	if err := back.Scan([]byte("not-a-uuid")); !errors.Is(err, ErrBadID) {
		t.Fatalf("scan of a bad uuid: got %v, want ErrBadID", err)
	}
}

func TestParseIDRejects(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"", "x", "01ARZ3NDEKTSV4RRFFQ69G5FA", "01ARZ3NDEKTSV4RRFFQ69G5FAVV", "01ARZ3NDEKTSV4RRFFQ69G5FA!", "81ARZ3NDEKTSV4RRFFQ69G5FAV"} {
		if _, err := ParseID(s); !errors.Is(err, ErrBadID) {
			t.Errorf("ParseID(%q): got %v, want ErrBadID", s, err)
		}
	}
}

func TestIDJSON(t *testing.T) {
	t.Parallel()
	id := NewID(time.Now(), 1)
	b, err := json.Marshal(Message{ID: id, Type: "echo"})
	if err != nil {
		t.Fatal(err)
	}
	var m Message
	if err := json.Unmarshal(b, &m); err != nil || m.ID != id {
		t.Fatalf("got %+v, %v from %s", m, err, b)
	}
}

func FuzzParseID(f *testing.F) {
	f.Add("01ARZ3NDEKTSV4RRFFQ69G5FAV")
	f.Add("")
	f.Add("ZZZZZZZZZZZZZZZZZZZZZZZZZZ")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseID(s)
		if err != nil {
			return
		}
		back, err := ParseID(id.String())
		if err != nil || back != id {
			t.Fatalf("%q parsed to %s which does not parse back: %v", s, id, err)
		}
	})
}

// FuzzDecodeMessage: the broker message decoder never panics; what it
// accepts names a job and encodes back to a message it accepts alike.
func FuzzDecodeMessage(f *testing.F) {
	id := NewID(time.Unix(1_800_000_000, 0), 1)
	for _, seed := range []string{
		`{"id":"` + id.String() + `","type":"echo"}`,
		`{"type":"echo"}`, `{"id":"nope"}`, `not json`, ``, `null`, `[]`,
		`{"id":"` + id.String() + `","type":"echo","extra":[1,2,3]}`,
		"{\"id\":\"\xff\",\"type\":1}",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		m, err := DecodeMessage(body)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "undecodable: ") {
				t.Fatalf("error %q does not say the message is undecodable", err)
			}
			return
		}
		if m.ID.IsZero() {
			t.Fatalf("accepted %q without a job id", body)
		}
		again, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		back, err := DecodeMessage(again)
		if err != nil || back != m {
			t.Fatalf("accepted %q; its encoding %s decodes to %+v, %v", body, again, back, err)
		}
	})
}
