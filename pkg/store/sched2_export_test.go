package store

// Exported for the external tests' EXPLAIN checks of the scheduler's
// leader duties.
const (
	QueueDueQuery        = queueDueQuery
	RelayQuery           = relayQuery
	ExpiredQuery         = expiredQuery
	ExpiredFinishedQuery = expiredFinishedQuery
)
