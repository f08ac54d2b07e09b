package store

// Exported for the external tests' EXPLAIN checks.
const (
	DueQuery            = dueQuery
	ClaimCallbacksQuery = claimCallbacksQuery
)
