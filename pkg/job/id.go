package job

import (
	"crypto/rand"
	"database/sql/driver"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/oklog/ulid/v2"
)

// MaxShards is the number of shards a job id can address.
const MaxShards = 1 << 16

// ErrBadID reports a string that is not a Warren job id.
var ErrBadID = errors.New("not a job id")

// ID identifies a job. It is 128 bits: 48 bits of creation time in
// milliseconds, 16 bits of shard number and 64 random bits. Its text form is a
// 26-character ULID, so ids sort by creation time as text and as bytes.
type ID [16]byte

// NewID returns a fresh id for a job created at t and stored on shard.
func NewID(t time.Time, shard int) ID {
	var id ID
	u := ulid.ULID{}
	_ = u.SetTime(ulid.Timestamp(t)) // fails only after the year 10889
	copy(id[:6], u[:6])
	binary.BigEndian.PutUint16(id[6:8], uint16(shard))
	_, _ = rand.Read(id[8:]) // crypto/rand never fails on supported platforms
	return id
}

// ParseID parses the text form of an id.
func ParseID(s string) (ID, error) {
	u, err := ulid.ParseStrict(s)
	if err != nil {
		return ID{}, fmt.Errorf("%w: %q", ErrBadID, truncate(s, 40))
	}
	return ID(u), nil
}

// Shard returns the shard number the id was created for.
func (id ID) Shard() int { return int(binary.BigEndian.Uint16(id[6:8])) }

// Time returns the creation time carried by the id, to the millisecond.
func (id ID) Time() time.Time { return ulid.Time(ulid.ULID(id).Time()) }

// IsZero reports whether id is the zero id.
func (id ID) IsZero() bool { return id == ID{} }

// String returns the 26-character text form.
func (id ID) String() string { return ulid.ULID(id).String() }

// MarshalText implements encoding.TextMarshaler.
func (id ID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (id *ID) UnmarshalText(b []byte) error {
	v, err := ParseID(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}

// Value stores the id in a Postgres uuid column.
func (id ID) Value() (driver.Value, error) {
	var b [36]byte
	hex.Encode(b[0:8], id[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], id[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], id[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], id[8:10])
	b[23] = '-'
	hex.Encode(b[24:], id[10:])
	return string(b[:]), nil
}

// Scan reads the id from a Postgres uuid column.
func (id *ID) Scan(src any) error {
	var s string
	switch v := src.(type) {
	case string:
		s = v
	case []byte:
		s = string(v)
	default:
		return fmt.Errorf("scan job id from %T", src)
	}
	if len(s) != 36 {
		return fmt.Errorf("scan job id: %w: uuid %q", ErrBadID, s)
	}
	var b [32]byte
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] == '-' {
			continue
		}
		if n == len(b) {
			return fmt.Errorf("scan job id: %w: uuid %q", ErrBadID, s)
		}
		b[n] = s[i]
		n++
	}
	if _, err := hex.Decode(id[:], b[:n]); err != nil || n != 32 {
		return fmt.Errorf("scan job id: %w: uuid %q", ErrBadID, s)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
