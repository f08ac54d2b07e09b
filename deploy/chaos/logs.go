package chaos

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"strconv"
)

// The messages pkg/worker logs for an attempt: when it starts, and each way
// it can end. A success is logged only after Postgres recorded it.
const (
	msgStarted   = "job started"
	msgSucceeded = "job succeeded"
)

var msgEnded = map[string]bool{
	msgSucceeded:                  true,
	"job attempt failed":          true,
	"job snoozed":                 true,
	"job handed back by shutdown": true,
	"job ended but was no longer ours: outcome not recorded": true,
	"record job outcome": true,
}

// Attempts is what one worker process logged about one job: the numbers of
// the attempts it started, ended (any outcome) and recorded as succeeded.
type Attempts struct {
	Started   []int
	Ended     []int
	Succeeded []int
}

// Interrupted returns the attempts started and never ended: those a kill cut
// short.
func (a *Attempts) Interrupted() []int {
	var out []int
	for _, s := range a.Started {
		ended := false
		for _, e := range a.Ended {
			ended = ended || e == s
		}
		if !ended {
			out = append(out, s)
		}
	}
	return out
}

var (
	msgField     = regexp.MustCompile(`\bmsg=(?:"((?:[^"\\]|\\.)*)"|(\S+))`)
	jobIDField   = regexp.MustCompile(`\bjob_id=([0-9A-Z]{26})\b`)
	attemptField = regexp.MustCompile(`\battempt=(\d+)\b`)
)

// ParseWorkerLog reads a worker process's text log (log/slog's text format)
// and returns, by job id, the attempts it logged.
func ParseWorkerLog(r io.Reader) (map[string]*Attempts, error) {
	out := map[string]*Attempts{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		m := msgField.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		msg := m[1] + m[2]
		if msg != msgStarted && !msgEnded[msg] {
			continue
		}
		id := jobIDField.FindStringSubmatch(line)
		at := attemptField.FindStringSubmatch(line)
		if id == nil || at == nil {
			continue
		}
		n, err := strconv.Atoi(at[1])
		if err != nil {
			return nil, fmt.Errorf("attempt in %q: %w", line, err)
		}
		a := out[id[1]]
		if a == nil {
			a = &Attempts{}
			out[id[1]] = a
		}
		switch {
		case msg == msgStarted:
			a.Started = append(a.Started, n)
		default:
			a.Ended = append(a.Ended, n)
			if msg == msgSucceeded {
				a.Succeeded = append(a.Succeeded, n)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read worker log: %w", err)
	}
	return out, nil
}

// Sum adds up the logs of several worker processes into counts by job id.
func Sum(logs ...map[string]*Attempts) map[string]Execs {
	out := map[string]Execs{}
	for _, l := range logs {
		for id, a := range l {
			e := out[id]
			e.Started += len(a.Started)
			e.Succeeded += len(a.Succeeded)
			out[id] = e
		}
	}
	return out
}
