//go:build chaos

package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"
)

// The load: clients submitting through HAProxy, each at its own pace, until
// stopped or the scenario's cap is reached.
const (
	clients       = 4
	perClientRate = 15 // submits per second each: 60/s in all
	maxJobs       = 4000
	submitTimeout = 30 * time.Second
)

// submit is one submit as a client saw it.
type submit struct {
	start, end time.Time
	status     int // 0: transport error
	problem    bool
	detail     string
	err        error
	job        Submitted
	delay      time.Duration // of a delayed job
}

// load is a scenario's running load.
type load struct {
	scenario string
	url      string
	client   *http.Client
	stop     chan struct{}
	wg       sync.WaitGroup

	mu      sync.Mutex
	seq     int
	submits []submit
}

func startLoad(scenario string) *load {
	l := &load{
		scenario: scenario,
		url:      fmt.Sprintf("http://127.0.0.1:%d/v1/jobs", httpPort),
		client: &http.Client{Timeout: submitTimeout, Transport: &http.Transport{
			MaxIdleConnsPerHost: clients, IdleConnTimeout: 5 * time.Second,
		}},
		stop: make(chan struct{}),
	}
	for c := range clients {
		l.wg.Go(func() { l.run(c) })
	}
	return l
}

// halt stops the clients and waits for their last submits to finish.
func (l *load) halt() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
	l.client.CloseIdleConnections()
}

func (l *load) run(c int) {
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(c)))
	t := time.NewTicker(time.Second / perClientRate)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		l.mu.Lock()
		n := l.seq
		l.seq++
		l.mu.Unlock()
		if n >= maxJobs {
			return
		}
		s := l.submitOne(rng, n)
		s.end = time.Now()
		l.record(s)
	}
}

// submitOne sends one job of the mix: echo 35 %, sleep 50-300 ms 35 %, fail
// that recovers on its second attempt 10 %, fail that dies after 2-3
// attempts 10 %, echo delayed 1-3 s 10 %.
func (l *load) submitOne(rng *rand.Rand, n int) submit {
	tag := fmt.Sprintf(`"chaos":%q,"n":%d`, l.scenario, n)
	var body string
	var delay time.Duration
	sub := Submitted{Attempts: 1}
	switch p := rng.IntN(100); {
	case p < 35:
		sub.Type = "echo"
		body = fmt.Sprintf(`{"type":"echo","payload":{%s}}`, tag)
	case p < 70:
		sub.Type = "sleep"
		body = fmt.Sprintf(`{"type":"sleep","payload":{"ms":%d,%s}}`, 50+rng.IntN(251), tag)
	case p < 80:
		sub.Type, sub.Attempts = "fail", 2
		body = fmt.Sprintf(`{"type":"fail","max_attempts":3,"payload":{"times":1,%s}}`, tag)
	case p < 90:
		attempts := 2 + rng.IntN(2)
		sub.Type, sub.Attempts, sub.Dies = "fail", attempts, true
		body = fmt.Sprintf(`{"type":"fail","max_attempts":%d,"payload":{"times":9,%s}}`, attempts, tag)
	default:
		sub.Type = "echo"
		delay = time.Duration(1000+rng.IntN(2001)) * time.Millisecond
		body = fmt.Sprintf(`{"type":"echo","delay":"%s","payload":{"delayed":true,%s}}`, delay, tag)
	}
	s := submit{start: time.Now(), job: sub, delay: delay}
	ctx, cancel := context.WithTimeout(context.Background(), submitTimeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, l.url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := l.client.Do(req)
	if err != nil {
		s.err = err
		return s
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	s.status = resp.StatusCode
	if err != nil {
		s.err = err
		return s
	}
	if resp.StatusCode/100 == 2 {
		var j struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(raw, &j); err != nil || len(j.ID) != 26 {
			s.err = fmt.Errorf("a %d without a job id: %.200s", resp.StatusCode, raw)
			return s
		}
		s.job.ID = j.ID
		return s
	}
	s.problem = strings.HasPrefix(resp.Header.Get("Content-Type"), "application/problem+json")
	var p struct {
		Detail string `json:"detail"`
	}
	if json.NewDecoder(bytes.NewReader(raw)).Decode(&p) == nil {
		s.detail = p.Detail
	} else {
		// Not a problem document: HAProxy's own page when no api is up.
		s.detail = strings.Join(strings.Fields(fmt.Sprintf("%.200s", raw)), " ")
	}
	return s
}

func (l *load) record(s submit) {
	l.mu.Lock()
	l.submits = append(l.submits, s)
	l.mu.Unlock()
}

// ok reports whether the client was told the job was accepted.
func (s submit) ok() bool { return s.err == nil && s.status/100 == 2 && s.job.ID != "" }

// snapshot returns the submits so far.
func (l *load) snapshot() []submit {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]submit(nil), l.submits...)
}

// acceptedAfter counts the submits told accepted whose answer came after t.
func (l *load) acceptedAfter(t time.Time) int {
	n := 0
	for _, s := range l.snapshot() {
		if s.ok() && s.end.After(t) {
			n++
		}
	}
	return n
}

// accepted returns every job the clients were told was accepted.
func (l *load) accepted() []Submitted {
	var out []Submitted
	for _, s := range l.snapshot() {
		if s.ok() {
			out = append(out, s.job)
		}
	}
	return out
}

// failed returns the submits that got no 2xx.
func (l *load) failed() []submit {
	var out []submit
	for _, s := range l.snapshot() {
		if !s.ok() {
			out = append(out, s)
		}
	}
	return out
}

// firstOKAfter returns when the first 2xx answered after t came.
func (l *load) firstOKAfter(t time.Time) (time.Time, bool) {
	var first time.Time
	for _, s := range l.snapshot() {
		if s.ok() && s.start.After(t) && (first.IsZero() || s.end.Before(first)) {
			first = s.end
		}
	}
	return first, !first.IsZero()
}

func (s submit) String() string {
	if s.err != nil {
		return fmt.Sprintf("%s %s after %s: %v", s.start.Format("15:04:05.000"), s.job.Type, s.end.Sub(s.start).Round(time.Millisecond), s.err)
	}
	return fmt.Sprintf("%s %s after %s: %d %s", s.start.Format("15:04:05.000"), s.job.Type, s.end.Sub(s.start).Round(time.Millisecond), s.status, s.detail)
}
