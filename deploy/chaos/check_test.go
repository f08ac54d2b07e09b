package chaos

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/warrenhq/warren/pkg/job"
)

// Ids of the checker tests: any 26 characters will do.
const (
	idA = "01AAAAAAAAAAAAAAAAAAAAAAAA"
	idB = "01BBBBBBBBBBBBBBBBBBBBBBBB"
	idC = "01CCCCCCCCCCCCCCCCCCCCCCCC"
)

func TestCheck(t *testing.T) {
	t.Parallel()
	echo := func(id string) Submitted { return Submitted{ID: id, Type: "echo", Attempts: 1} }
	dies := func(id string) Submitted { return Submitted{ID: id, Type: "fail", Attempts: 3, Dies: true} }
	row := func(shard int, id string, st job.State, attempt int) Row {
		return Row{Shard: shard, ID: id, Type: "echo", State: st, Attempt: attempt, Error: "boom"}
	}
	tests := []struct {
		name   string
		in     Input
		want   Result
		errors []string // each a substring of one violation, in order
	}{{
		name: "all well",
		in: Input{
			Accepted: []Submitted{echo(idA), dies(idB)},
			Rows:     []Row{row(0, idA, job.Succeeded, 1), row(1, idB, job.Dead, 3)},
			Execs:    map[string]Execs{idA: {Started: 1, Succeeded: 1}, idB: {Started: 3}},
		},
		want: Result{Accepted: 2, Succeeded: 1, Dead: 1},
	}, {
		name:   "lost",
		in:     Input{Accepted: []Submitted{echo(idA), echo(idB)}, Rows: []Row{row(0, idA, job.Succeeded, 1)}},
		want:   Result{Accepted: 2, Succeeded: 1, Lost: 1},
		errors: []string{idB + " (echo): accepted but stored on no shard"},
	}, {
		name: "on two shards",
		in: Input{Accepted: []Submitted{echo(idA)},
			Rows: []Row{row(0, idA, job.Succeeded, 1), row(1, idA, job.Succeeded, 1)}},
		want:   Result{Accepted: 1, Succeeded: 1},
		errors: []string{"stored on 2 shards (0, 1)"},
	}, {
		name: "succeeded twice, and the extra runs counted",
		in: Input{Accepted: []Submitted{echo(idA)}, Rows: []Row{row(0, idA, job.Succeeded, 2)},
			Execs: map[string]Execs{idA: {Started: 3, Succeeded: 2}}},
		want:   Result{Accepted: 1, Succeeded: 1, Duplicated: 1, Extra: 2},
		errors: []string{"recorded 2 successes"},
	}, {
		name: "the attempt column counts a start the log missed",
		in: Input{Accepted: []Submitted{echo(idA)}, Rows: []Row{row(0, idA, job.Succeeded, 2)},
			Execs: map[string]Execs{idA: {Started: 1, Succeeded: 1}}},
		want: Result{Accepted: 1, Succeeded: 1, Extra: 1},
	}, {
		name: "pending with its reason",
		in: Input{Accepted: []Submitted{echo(idA), echo(idB)},
			Rows: []Row{row(0, idA, job.Retrying, 1), {ID: idB, Type: "echo", State: job.Queued}}},
		want:   Result{Accepted: 2, Pending: 2},
		errors: []string{"still retrying on attempt 1 when the wait ended (reason: boom)", "still queued on attempt 0 when the wait ended (reason: none recorded)"},
	}, {
		name:   "dead though it should succeed",
		in:     Input{Accepted: []Submitted{echo(idA)}, Rows: []Row{row(0, idA, job.Dead, 5)}},
		want:   Result{Accepted: 1, Dead: 1, Extra: 4},
		errors: []string{"dead unexpectedly on attempt 5: boom"},
	}, {
		name:   "succeeded though every attempt fails",
		in:     Input{Accepted: []Submitted{dies(idA)}, Rows: []Row{row(0, idA, job.Succeeded, 1)}},
		want:   Result{Accepted: 1, Succeeded: 1},
		errors: []string{"succeeded on attempt 1, but every attempt fails"},
	}, {
		name:   "cancelled is unexpected too",
		in:     Input{Accepted: []Submitted{echo(idA)}, Rows: []Row{row(0, idA, job.Cancelled, 1)}},
		want:   Result{Accepted: 1, Dead: 1},
		errors: []string{"cancelled unexpectedly"},
	}, {
		name: "a stored job whose submit failed must end too",
		in: Input{Accepted: []Submitted{echo(idA)}, FailedSubmits: 2,
			Rows:  []Row{row(0, idA, job.Succeeded, 1), row(1, idB, job.Succeeded, 1), row(0, idC, job.Running, 1)},
			Execs: map[string]Execs{idB: {Started: 2, Succeeded: 2}}},
		want:   Result{Accepted: 1, FailedSubmits: 2, Unacked: 2, Succeeded: 1, Duplicated: 1},
		errors: []string{idB + " (echo, not acknowledged): the workers recorded 2 successes", idC + " (echo, not acknowledged): still running"},
	}, {
		name:   "an id recorded twice",
		in:     Input{Accepted: []Submitted{echo(idA), echo(idA)}, Rows: []Row{row(0, idA, job.Succeeded, 1)}},
		want:   Result{Accepted: 2, Succeeded: 1},
		errors: []string{"recorded it as accepted twice", "counts do not add up: 1 succeeded + 0 dead + 0 pending + 0 lost = 1, but 2 were accepted"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.in.Scenario, tt.want.Scenario = "s", "s"
			tt.in.Recovery, tt.want.Recovery = time.Second, time.Second
			got, bad := Check(tt.in)
			if got != tt.want {
				t.Errorf("result\n got %+v\nwant %+v", got, tt.want)
			}
			if len(bad) != len(tt.errors) {
				t.Fatalf("violations: got %q, want %d matching %q", bad, len(tt.errors), tt.errors)
			}
			for i, want := range tt.errors {
				if !strings.Contains(bad[i], want) {
					t.Errorf("violation %d: %q does not say %q", i, bad[i], want)
				}
			}
		})
	}
}

func TestParseWorkerLog(t *testing.T) {
	t.Parallel()
	log := `time=2026-11-27T02:00:00.000Z level=INFO msg="worker running" process=worker worker_id=vm-1-abc
time=2026-11-27T02:00:00.001Z level=DEBUG msg="job started" process=worker job_id=` + idA + ` type=echo queue=default attempt=1
time=2026-11-27T02:00:00.002Z level=INFO msg="job succeeded" process=worker job_id=` + idA + ` type=echo queue=default attempt=1 duration=1ms
time=2026-11-27T02:00:00.003Z level=DEBUG msg="job started" process=worker job_id=` + idB + ` type=fail queue=default attempt=1
time=2026-11-27T02:00:00.004Z level=WARN msg="job attempt failed" process=worker job_id=` + idB + ` type=fail queue=default attempt=1 error="attempt 1 fails, as asked (the first 9 do)" state=retrying
time=2026-11-27T02:00:00.005Z level=DEBUG msg="job started" process=worker job_id=` + idB + ` type=fail queue=default attempt=2
time=2026-11-27T02:00:00.006Z level=DEBUG msg="job started" process=worker job_id=` + idC + ` type=sleep queue=default attempt=1
time=2026-11-27T02:00:00.007Z level=INFO msg="job ended but was no longer ours: outcome not recorded" process=worker job_id=` + idC + ` type=sleep queue=default attempt=1 reason="job state conflict"
time=2026-11-27T02:00:00.008Z level=DEBUG msg="message for a job that is not queued: dropped" process=worker job_id=` + idA + ` type=echo
`
	got, err := ParseWorkerLog(strings.NewReader(log))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("%d jobs, want 3: %v", len(got), got)
	}
	a, b, c := got[idA], got[idB], got[idC]
	if !slices.Equal(a.Started, []int{1}) || !slices.Equal(a.Succeeded, []int{1}) || len(a.Interrupted()) != 0 {
		t.Errorf("A: %+v", a)
	}
	if !slices.Equal(b.Started, []int{1, 2}) || len(b.Succeeded) != 0 || !slices.Equal(b.Interrupted(), []int{2}) {
		t.Errorf("B: %+v, interrupted %v", b, b.Interrupted())
	}
	if !slices.Equal(c.Ended, []int{1}) || len(c.Succeeded) != 0 || len(c.Interrupted()) != 0 {
		t.Errorf("C: %+v", c)
	}
	sum := Sum(got, map[string]*Attempts{idA: {Started: []int{2}, Succeeded: []int{2}}})
	if sum[idA] != (Execs{Started: 2, Succeeded: 2}) || sum[idB] != (Execs{Started: 2}) {
		t.Errorf("sum: %v", sum)
	}
}

func TestTable(t *testing.T) {
	t.Parallel()
	rs := []Result{{Scenario: "worker-kill", Accepted: 1500, Succeeded: 1400, Dead: 100, Extra: 3, Recovery: 1234 * time.Millisecond},
		{Scenario: "x", Recovery: -1}}
	text := Table(rs)
	if lines := strings.Split(strings.TrimSpace(text), "\n"); len(lines) != 3 || !strings.Contains(lines[1], "1.23s") || !strings.Contains(lines[2], "not seen") {
		t.Errorf("table:\n%s", text)
	}
	md := Markdown(rs)
	if !strings.HasPrefix(md, "| scenario | accepted |") || strings.Count(md, "\n") != 4 {
		t.Errorf("markdown:\n%s", md)
	}
}
