package job

import (
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// State is where a job is in its lifecycle.
type State string

// The states of a job. Succeeded, Dead and Cancelled are terminal.
const (
	Scheduled State = "scheduled" // waits for its run time
	Queued    State = "queued"    // published, waits for a worker
	Running   State = "running"   // a worker holds it
	Retrying  State = "retrying"  // failed an attempt, waits for its backoff
	Succeeded State = "succeeded"
	Dead      State = "dead" // attempts exhausted, or failed for good
	Cancelled State = "cancelled"
)

// Terminal reports whether s is a final state.
func (s State) Terminal() bool { return s == Succeeded || s == Dead || s == Cancelled }

// Valid reports whether s is one of the states above.
func (s State) Valid() bool {
	switch s {
	case Scheduled, Queued, Running, Retrying, Succeeded, Dead, Cancelled:
		return true
	}
	return false
}

// Job is a job as stored and as the REST API shows it.
type Job struct {
	ID          ID         `json:"id" db:"id"`
	Tenant      string     `json:"-" db:"tenant"`
	Type        string     `json:"type" db:"type"`
	Queue       string     `json:"queue" db:"queue"`
	Priority    int        `json:"priority" db:"priority"`
	State       State      `json:"state" db:"state"`
	Attempt     int        `json:"attempt" db:"attempt"`
	MaxAttempts int        `json:"max_attempts" db:"max_attempts"`
	TimeoutMS   int64      `json:"-" db:"timeout_ms"`
	Payload     JSON       `json:"payload" db:"payload"`
	Result      JSON       `json:"result" db:"result"`
	Error       *string    `json:"error" db:"error"`
	Progress    JSON       `json:"progress" db:"progress"`
	CreatedAt   time.Time  `json:"created_at" db:"created_at"`
	ScheduledAt *time.Time `json:"scheduled_at" db:"scheduled_at"`
	StartedAt   *time.Time `json:"started_at" db:"started_at"`
	FinishedAt  *time.Time `json:"finished_at" db:"finished_at"`
	// CallbackURL receives the job, signed, when it ends.
	CallbackURL *string `json:"callback_url,omitempty" db:"callback_url"`
	// CallbackState is pending, delivered or failed; nil without a callback.
	CallbackState *string `json:"callback_state,omitempty" db:"callback_state"`
	// Callbacks lists the delivery attempts of the callback (CallbackAttempt values).
	Callbacks JSON `json:"callbacks,omitempty" db:"callback_attempts"`
	// IdempotencyKey is the client's Idempotency-Key header, if any.
	IdempotencyKey *string `json:"-" db:"idempotency_key"`
	// RequestHash identifies the submitted request, to tell a replay of an
	// idempotency key from a different request under the same key.
	RequestHash []byte `json:"-" db:"request_hash"`
}

// CallbackAttempt is one delivery attempt of a job's callback.
type CallbackAttempt struct {
	At     time.Time `json:"at"`
	Status int       `json:"status,omitempty"` // HTTP status, 0 when none came back
	Error  string    `json:"error,omitempty"`
}

// Timeout returns the handler deadline for one attempt.
func (j *Job) Timeout() time.Duration { return time.Duration(j.TimeoutMS) * time.Millisecond }

// Message is what the broker carries for a job: enough for a worker to route
// it to a handler without reading Postgres first.
type Message struct {
	ID   ID     `json:"id"`
	Type string `json:"type"`
}

// DecodeMessage reads a message body as RabbitMQ delivers it. A body that is
// not a message, or names no job, is an error: the worker dead-letters it.
func DecodeMessage(body []byte) (Message, error) {
	var m Message
	if err := json.Unmarshal(body, &m); err != nil {
		return Message{}, fmt.Errorf("undecodable: %w", err)
	}
	if m.ID.IsZero() {
		return Message{}, errors.New("undecodable: the message has no job id")
	}
	return m, nil
}

// JSON is a raw JSON value that may be absent. It marshals as itself (or null
// when empty) and stores in a nullable Postgres jsonb column.
type JSON []byte

// MarshalJSON implements json.Marshaler.
func (j JSON) MarshalJSON() ([]byte, error) {
	if len(j) == 0 {
		return []byte("null"), nil
	}
	return j, nil
}

// UnmarshalJSON implements json.Unmarshaler; a JSON null becomes empty.
func (j *JSON) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*j = nil
		return nil
	}
	*j = append((*j)[:0], b...)
	return nil
}

// Value implements driver.Valuer: empty is SQL NULL.
func (j JSON) Value() (driver.Value, error) {
	if len(j) == 0 {
		return nil, nil
	}
	return []byte(j), nil
}

// Scan implements sql.Scanner.
func (j *JSON) Scan(src any) error {
	switch v := src.(type) {
	case nil:
		*j = nil
	case []byte:
		*j = append((*j)[:0], v...)
	case string:
		*j = JSON(v)
	default:
		return fmt.Errorf("scan JSON from %T", src)
	}
	return nil
}

// Request is the body of POST /v1/jobs: what a client asks to run. Only Type
// is required.
type Request struct {
	// Type names the handler, such as "echo".
	Type string `json:"type"`
	// Payload is any JSON value; the handler's input. Default {}.
	Payload json.RawMessage `json:"payload,omitempty"`
	// Queue is the queue it waits in; default "default".
	Queue string `json:"queue,omitempty"`
	// Priority from 0 to 9; higher runs first. Default 0.
	Priority *int `json:"priority,omitempty"`
	// MaxAttempts before the job is dead; default 5 (WARREN_DEFAULT_MAX_ATTEMPTS).
	MaxAttempts *int `json:"max_attempts,omitempty"`
	// Timeout is one attempt's deadline, such as "30s"; default 10m.
	Timeout string `json:"timeout,omitempty"`
	// Delay runs the job this long after it is accepted, such as "10s"; the
	// job waits in state scheduled. At most one of Delay and RunAt.
	Delay string `json:"delay,omitempty"`
	// RunAt runs the job at this time (RFC 3339 in JSON); a past time means
	// now. At most one of Delay and RunAt.
	RunAt *time.Time `json:"run_at,omitempty"`
	// CallbackURL is an http(s) URL that Warren POSTs the job to, signed,
	// when the job ends.
	CallbackURL string `json:"callback_url,omitempty"`
}
