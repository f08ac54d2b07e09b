package chaos

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/warrenhq/warren/pkg/job"
)

// Submitted is a job the load submitted and was told was accepted (a 2xx
// with its id), with what it was asked to do.
type Submitted struct {
	ID   string
	Type string
	// Attempts is how many attempts the job needs to end: 1 for echo and
	// sleep, Times+1 for a fail job that recovers, max_attempts for a fail
	// job that never does.
	Attempts int
	// Dies: the job fails every attempt, so dead is its right end.
	Dies bool
}

// Row is a job as one shard stores it.
type Row struct {
	Shard      int
	ID         string
	Type       string
	State      job.State
	Attempt    int
	Error      string
	FinishedAt time.Time // zero while not terminal
}

// Execs counts the log lines the workers wrote for one job: attempts
// started and successes recorded.
type Execs struct {
	Started   int
	Succeeded int
}

// Input is everything the checker needs about one scenario.
type Input struct {
	Scenario string
	// Accepted lists the jobs the clients were told were accepted.
	Accepted []Submitted
	// Rows lists every stored job the scenario's load submitted, from every
	// shard: the accepted ones and those whose submit failed but committed
	// anyway (an api killed between its commit and its answer).
	Rows []Row
	// Execs holds the workers' log counts by job id.
	Execs map[string]Execs
	// FailedSubmits counts submits that got no 2xx (errors, 5xx).
	FailedSubmits int
	// Recovery is the time from the end of the fault until work flowed
	// again; negative when it was not seen.
	Recovery time.Duration
}

// Result is one line of the suite's table.
type Result struct {
	Scenario      string
	Accepted      int
	FailedSubmits int
	// Unacked counts stored jobs whose submit did not get a 2xx.
	Unacked   int
	Succeeded int
	Dead      int
	// Pending counts accepted jobs not terminal when the wait ended.
	Pending int
	// Lost counts accepted jobs stored on no shard.
	Lost int
	// Duplicated counts jobs with more than one recorded success.
	Duplicated int
	// Extra counts attempts beyond the ones each job needs: the price of
	// at-least-once after a crash.
	Extra    int
	Recovery time.Duration
}

// Check checks the invariant for one scenario and returns its table line
// and every violation found, each naming the job and what is wrong.
func Check(in Input) (Result, []string) {
	res := Result{Scenario: in.Scenario, Accepted: len(in.Accepted), FailedSubmits: in.FailedSubmits, Recovery: in.Recovery}
	var bad []string
	byID := map[string][]Row{}
	for _, r := range in.Rows {
		byID[r.ID] = append(byID[r.ID], r)
	}
	accepted := make(map[string]bool, len(in.Accepted))
	for _, s := range in.Accepted {
		if accepted[s.ID] {
			bad = append(bad, fmt.Sprintf("job %s: the load recorded it as accepted twice", s.ID))
			continue
		}
		accepted[s.ID] = true
		rows := byID[s.ID]
		switch {
		case len(rows) == 0:
			res.Lost++
			bad = append(bad, fmt.Sprintf("job %s (%s): accepted but stored on no shard: lost", s.ID, s.Type))
			continue
		case len(rows) > 1:
			shards := make([]string, len(rows))
			for i, r := range rows {
				shards[i] = fmt.Sprint(r.Shard)
			}
			bad = append(bad, fmt.Sprintf("job %s (%s): stored on %d shards (%s), want exactly one", s.ID, s.Type, len(rows), strings.Join(shards, ", ")))
		}
		r := rows[0]
		switch {
		case r.State == job.Succeeded && !s.Dies:
			res.Succeeded++
		case r.State == job.Dead && s.Dies:
			res.Dead++
		case r.State == job.Succeeded:
			res.Succeeded++
			bad = append(bad, fmt.Sprintf("job %s (%s): succeeded on attempt %d, but every attempt fails", s.ID, s.Type, r.Attempt))
		case r.State.Terminal():
			res.Dead++
			bad = append(bad, fmt.Sprintf("job %s (%s): %s unexpectedly on attempt %d: %s", s.ID, s.Type, r.State, r.Attempt, orNone(r.Error)))
		default:
			res.Pending++
			bad = append(bad, fmt.Sprintf("job %s (%s): still %s on attempt %d when the wait ended (reason: %s)", s.ID, s.Type, r.State, r.Attempt, orNone(r.Error)))
		}
		e := in.Execs[s.ID]
		if e.Succeeded > 1 {
			res.Duplicated++
			bad = append(bad, fmt.Sprintf("job %s (%s): the workers recorded %d successes, want at most one", s.ID, s.Type, e.Succeeded))
		}
		if n := max(e.Started, r.Attempt) - s.Attempts; n > 0 && r.State.Terminal() {
			res.Extra += n
		}
	}
	// Jobs whose submit failed yet committed are jobs all the same: they
	// must end too, and succeed at most once.
	var unacked []string
	for id, rows := range byID {
		if !accepted[id] {
			unacked = append(unacked, id)
			if len(rows) > 1 {
				bad = append(bad, fmt.Sprintf("job %s (%s, not acknowledged): stored on %d shards", id, rows[0].Type, len(rows)))
			}
		}
	}
	slices.Sort(unacked)
	for _, id := range unacked {
		res.Unacked++
		r := byID[id][0]
		if !r.State.Terminal() {
			bad = append(bad, fmt.Sprintf("job %s (%s, not acknowledged): still %s on attempt %d when the wait ended (reason: %s)", id, r.Type, r.State, r.Attempt, orNone(r.Error)))
		}
		if e := in.Execs[id]; e.Succeeded > 1 {
			res.Duplicated++
			bad = append(bad, fmt.Sprintf("job %s (%s, not acknowledged): the workers recorded %d successes, want at most one", id, r.Type, e.Succeeded))
		}
	}
	if sum := res.Succeeded + res.Dead + res.Pending + res.Lost; sum != res.Accepted {
		bad = append(bad, fmt.Sprintf("counts do not add up: %d succeeded + %d dead + %d pending + %d lost = %d, but %d were accepted",
			res.Succeeded, res.Dead, res.Pending, res.Lost, sum, res.Accepted))
	}
	return res, bad
}

func orNone(s string) string {
	if s == "" {
		return "none recorded"
	}
	return s
}

// tableHeader names the columns of Table and Markdown.
var tableHeader = []string{"scenario", "accepted", "failed submits", "unacked stored", "succeeded", "dead (fail jobs)", "pending", "lost", "duplicated successes", "extra executions", "time to recover"}

func (r Result) cells() []string {
	rec := "not seen"
	if r.Recovery >= 0 {
		rec = r.Recovery.Round(10 * time.Millisecond).String()
	}
	return []string{r.Scenario, fmt.Sprint(r.Accepted), fmt.Sprint(r.FailedSubmits), fmt.Sprint(r.Unacked),
		fmt.Sprint(r.Succeeded), fmt.Sprint(r.Dead), fmt.Sprint(r.Pending), fmt.Sprint(r.Lost),
		fmt.Sprint(r.Duplicated), fmt.Sprint(r.Extra), rec}
}

// Table renders results as aligned text for the test log.
func Table(results []Result) string {
	rows := [][]string{tableHeader}
	for _, r := range results {
		rows = append(rows, r.cells())
	}
	width := make([]int, len(tableHeader))
	for _, row := range rows {
		for i, c := range row {
			width[i] = max(width[i], len([]rune(c)))
		}
	}
	var b strings.Builder
	for _, row := range rows {
		for i, c := range row {
			if i > 0 {
				b.WriteString("  ")
			}
			pad := strings.Repeat(" ", width[i]-len([]rune(c)))
			if i == 0 {
				b.WriteString(c + pad)
			} else {
				b.WriteString(pad + c)
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

// Markdown renders results as a Markdown table.
func Markdown(results []Result) string {
	var b strings.Builder
	b.WriteString("| " + strings.Join(tableHeader, " | ") + " |\n")
	b.WriteString("|---" + strings.Repeat("|--:", len(tableHeader)-1) + "|\n")
	for _, r := range results {
		b.WriteString("| " + strings.Join(r.cells(), " | ") + " |\n")
	}
	return b.String()
}
