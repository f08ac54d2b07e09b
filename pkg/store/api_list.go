package store

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/warrenhq/warren/pkg/job"
)

// ListQuery selects a page of one tenant's jobs, newest first.
type ListQuery struct {
	Tenant string
	// State, Queue and Type filter when set.
	State job.State
	Queue string
	Type  string
	// Before, when set, returns only jobs with smaller ids: the last id of
	// the previous page.
	Before job.ID
	// Limit is the page size; it must be at least 1.
	Limit int
}

// List returns up to q.Limit of the tenant's jobs in descending id order (ids
// sort by creation time) across every shard, and whether more follow. Each
// shard is asked in parallel for its q.Limit+1 newest matching jobs below
// q.Before, and the answers are merged.
//
// Paging with Before set to the last id of each page visits every job that
// existed when the walk began exactly once: a job created later has a larger
// id than any already seen (unless clocks go backwards), so it never shifts a
// later page. A shard that does not answer fails the whole page with a
// *ShardError, since a partial page would skip that shard's jobs for good.
func (s *Store) List(ctx context.Context, q ListQuery) (jobs []*job.Job, more bool, err error) {
	if q.Limit < 1 {
		return nil, false, fmt.Errorf("list jobs: limit %d, want at least 1", q.Limit)
	}
	where := []string{"tenant = $1"}
	args := []any{q.Tenant}
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, strings.ReplaceAll(cond, "?", "$"+strconv.Itoa(len(args))))
	}
	if q.State != "" {
		add("state = ?", q.State)
	}
	if q.Queue != "" {
		add("queue = ?", q.Queue)
	}
	if q.Type != "" {
		add("type = ?", q.Type)
	}
	if !q.Before.IsZero() {
		add("id < ?", q.Before)
	}
	args = append(args, q.Limit+1)
	query := `SELECT ` + columns + ` FROM jobs WHERE ` + strings.Join(where, " AND ") +
		` ORDER BY id DESC LIMIT $` + strconv.Itoa(len(args))

	jobs, errs := onShards(ctx, s.allShards(), "list jobs", func(n int) ([]*job.Job, error) {
		var page []*job.Job
		err := s.shards[n].SelectContext(ctx, &page, query, args...)
		return page, err
	})
	if len(errs) > 0 {
		return nil, false, errs[0]
	}
	slices.SortFunc(jobs, func(a, b *job.Job) int { return bytes.Compare(b.ID[:], a.ID[:]) })
	if len(jobs) > q.Limit {
		return jobs[:q.Limit], true, nil
	}
	return jobs, false, nil
}
