// Package builtin holds the job types that Warren's stock worker process
// handles, written with the worker SDK as any user's handlers would be.
package builtin

import (
	"context"
	"encoding/json"

	"github.com/warrenhq/warren/pkg/worker"
)

// Register adds every built-in job type to w.
func Register(w *worker.Worker) error {
	return worker.Handle(w, "echo", Echo)
}

// Echo succeeds with its payload as the result.
func Echo(_ context.Context, j *worker.Job[json.RawMessage]) (json.RawMessage, error) {
	if len(j.Args) == 0 {
		return json.RawMessage("null"), nil
	}
	return j.Args, nil
}
