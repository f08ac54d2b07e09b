package store_test

import (
	"context"
	"strings"
	"testing"

	"github.com/warrenhq/warren/pkg/store"
)

// The job path's batch statements must find their rows by primary key
// whatever the statistics say. Taken while the queue was empty, they make a
// partial index on state (jobs_queued_since, jobs_lease, jobs_unpublished)
// look nearly free to scan; under load that index holds the whole backlog,
// and a claim that scans it instead of looking up its few ids costs
// milliseconds per statement.
func TestJobPathStatementsLookUpByPrimaryKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, raw := schedSetup(t, 1)
	db := raw[0]
	// Statistics of a quiet table: 20,000 finished jobs and nothing else...
	_, err := db.ExecContext(ctx, `INSERT INTO jobs (id, tenant, type, queue, state, max_attempts, timeout_ms,
			payload, created_at, finished_at)
		SELECT gen_random_uuid(), 'acme', 'echo', 'default', 'succeeded', 3, 1000, '{}', now(), now()
		FROM generate_series(1, 20000) i`)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `ANALYZE jobs`); err != nil {
		t.Fatal(err)
	}
	// ...then a backlog the statistics have not seen.
	_, err = db.ExecContext(ctx, `INSERT INTO jobs (id, tenant, type, queue, state, max_attempts, timeout_ms,
			payload, created_at, worker_id, lease_until)
		SELECT gen_random_uuid(), 'acme', 'echo', 'default', CASE WHEN i % 2 = 0 THEN 'queued' ELSE 'running' END,
			3, 1000, '{}', now(), 'w', now() + interval '1 minute'
		FROM generate_series(1, 5000) i`)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	if err := db.SelectContext(ctx, &ids, `SELECT id::text FROM jobs WHERE state IN ('queued', 'running') LIMIT 20`); err != nil {
		t.Fatal(err)
	}
	idArray := "{" + strings.Join(ids, ",") + "}"
	items := `[{"id":"` + ids[0] + `","attempt":1,"result":{}}]`
	for _, tc := range []struct {
		name  string
		query string
		args  []any
	}{
		{"claim", store.ClaimBatchQuery, []any{idArray, "w", 60000, "{}"}},
		{"complete", store.CompleteBatchQuery, []any{items}},
		{"claim and complete", store.ClaimCompleteQuery, []any{items, idArray, "w", 60000, "{}"}},
		{"mark published", store.MarkPublishedQuery, []any{idArray}},
		{"extend leases", store.ExtendLeasesQuery, []any{idArray, "w", 60000}},
		{"finish an attempt", store.FinishQuery, []any{ids[0], 1}},
	} {
		// A prepared statement's generic plan is what a long-lived
		// connection ends up with; check it as well as the custom one.
		for _, mode := range []string{"force_custom_plan", "force_generic_plan"} {
			tx, err := db.BeginTxx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			var plan []string
			_, err = tx.ExecContext(ctx, "SET LOCAL plan_cache_mode = "+mode)
			if err == nil {
				err = tx.SelectContext(ctx, &plan, "EXPLAIN "+tc.query, tc.args...)
			}
			_ = tx.Rollback()
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			text := strings.Join(plan, "\n")
			if !strings.Contains(text, "jobs_pkey") || strings.Contains(text, "Seq Scan on jobs") ||
				strings.Contains(text, "jobs_queued_since") || strings.Contains(text, "jobs_lease") ||
				strings.Contains(text, "jobs_unpublished") {
				t.Errorf("%s (%s) does not look its rows up by primary key:\n%s", tc.name, mode, text)
			}
		}
	}
}
