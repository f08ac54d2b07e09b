package store

// Exported for the external tests' EXPLAIN checks of the scheduler's
// leader duties.
const (
	QueueDueQuery        = queueDueQuery
	RelayQuery           = relayQuery
	ExpiredQuery         = expiredQuery
	ExpiredFinishedQuery = expiredFinishedQuery
)

// Exported for the EXPLAIN checks of the job path's batch statements.
var (
	ClaimBatchQuery    = claimBatchQuery
	CompleteBatchQuery = completeBatchQuery
	MarkPublishedQuery = markPublishedQuery
	ExtendLeasesQuery  = extendLeasesQuery
	ClaimCompleteQuery = claimCompleteQuery
	// FinishQuery is the statement of Complete, Fail, Release and Snooze
	// (their SET clauses aside).
	FinishQuery = `UPDATE jobs SET worker_id = NULL ` + runningAttempt + ` RETURNING id`
)
