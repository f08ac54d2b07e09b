package store

import (
	"errors"
	"fmt"
	"net"
	"testing"

	"github.com/lib/pq"
)

func TestUnreachable(t *testing.T) {
	t.Parallel()
	wrap := func(err error) error { return &ShardError{Shard: 1, Err: fmt.Errorf("insert 1 jobs: %w", err)} }
	for _, tt := range []struct {
		name string
		err  error
		want bool
	}{
		{"connection refused", wrap(&net.OpError{Op: "dial", Err: errors.New("connection refused")}), true},
		{"shutting down: refused at connection start", wrap(&pq.Error{Code: "57P03", Message: "the database system is shutting down"}), true},
		{"read failed: the statement may have run", wrap(&net.OpError{Op: "read", Err: errors.New("connection reset")}), false},
		{"terminated by the administrator", wrap(&pq.Error{Code: "57P01"}), false},
		{"read-only", wrap(&pq.Error{Code: "25006"}), false},
		{"other", wrap(errors.New("boom")), false},
	} {
		if got := unreachable(tt.err); got != tt.want {
			t.Errorf("%s: unreachable = %v, want %v", tt.name, got, tt.want)
		}
	}
}
