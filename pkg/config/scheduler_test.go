package config

import (
	"strings"
	"testing"
	"time"
)

func TestSchedulerDutySettings(t *testing.T) {
	t.Parallel()
	c, err := LoadScheduler(env(map[string]string{}))
	if err != nil {
		t.Fatal(err)
	}
	if c.RelayAfter != 3*time.Second || c.Retention != 7*24*time.Hour || c.RetentionDead != 30*24*time.Hour ||
		c.Cron != nil || c.CronTenant != "default" {
		t.Errorf("defaults: %+v", c)
	}
	c, err = LoadScheduler(env(map[string]string{
		"WARREN_RELAY_AFTER":    "5s",
		"WARREN_RETENTION":      "14d",
		"WARREN_RETENTION_DEAD": "36h",
		"WARREN_CRON_TENANT":    "ops",
		"WARREN_CRON": `[{"name":"nightly","schedule":"0 3 * * *","type":"echo","payload":{"a":1},"queue":"reports"},
			{"name":"beat","schedule":"@every 1m","type":"sleep","priority":3,"max_attempts":2,"timeout":"30s"}]`,
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.RelayAfter != 5*time.Second || c.Retention != 14*24*time.Hour || c.RetentionDead != 36*time.Hour || c.CronTenant != "ops" {
		t.Errorf("settings: %+v", c)
	}
	want := []CronJob{
		{Name: "nightly", Schedule: "0 3 * * *", Type: "echo", Queue: "reports", Payload: []byte(`{"a":1}`), MaxAttempts: 5, Timeout: 10 * time.Minute},
		{Name: "beat", Schedule: "@every 1m", Type: "sleep", Queue: "default", Payload: []byte(`{}`), Priority: 3, MaxAttempts: 2, Timeout: 30 * time.Second},
	}
	if len(c.Cron) != 2 {
		t.Fatalf("cron: %+v", c.Cron)
	}
	for i, w := range want {
		g := c.Cron[i]
		if g.Name != w.Name || g.Schedule != w.Schedule || g.Type != w.Type || g.Queue != w.Queue || string(g.Payload) != string(w.Payload) ||
			g.Priority != w.Priority || g.MaxAttempts != w.MaxAttempts || g.Timeout != w.Timeout {
			t.Errorf("cron entry %d: %+v, want %+v", i, g, w)
		}
	}
}

func TestBadSchedulerDutySettingsNameTheVariable(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, value, want string
	}{
		{"WARREN_CRON", `{"name":"x"}`, "WARREN_CRON: not a JSON array"},
		{"WARREN_CRON", `[{"name":"x","schedule":"0 3 * * *","type":"echo","colour":"red"}]`, `unknown field "colour"`},
		{"WARREN_CRON", `[{"name":"x","schedule":"0 3 * *","type":"echo"}]`, `WARREN_CRON: entry 1 (x): schedule "0 3 * *"`},
		{"WARREN_CRON", `[{"name":"x","schedule":"TZ=UTC","type":"echo"}]`, `WARREN_CRON: entry 1 (x): schedule "TZ=UTC": not a valid cron expression`},
		{"WARREN_CRON", `[{"name":"x","schedule":"CRON_TZ=No/Where 0 3 * * *","type":"echo"}]`, `WARREN_CRON: entry 1 (x): schedule`},
		{"WARREN_CRON", `[{"name":"x","type":"echo"}]`, `WARREN_CRON: entry 1 (x): schedule "": required`},
		{"WARREN_CRON", `[{"name":"x","schedule":"@daily","type":"echo"},{"name":"x","schedule":"@daily","type":"echo"}]`, "WARREN_CRON: entry 2 (x): name used twice"},
		{"WARREN_CRON", `[{"name":"a b","schedule":"@daily","type":"echo"}]`, "WARREN_CRON: entry 1 (a b): name must be"},
		{"WARREN_CRON", `[{"name":"x","schedule":"@daily","type":""}]`, "WARREN_CRON: entry 1 (x): type must be"},
		{"WARREN_CRON", `[{"name":"x","schedule":"@daily","type":"echo","max_attempts":0}]`, "max_attempts must be between 1 and 100"},
		{"WARREN_CRON", `[{"name":"x","schedule":"@daily","type":"echo","timeout":"forever"}]`, `timeout "forever" must be`},
		{"WARREN_CRON", `[] []`, "WARREN_CRON: unexpected data"},
		{"WARREN_RETENTION", "a week", "WARREN_RETENTION:"},
		{"WARREN_RETENTION", "0d", "WARREN_RETENTION: 0d is out of range"},
		{"WARREN_RETENTION_DEAD", "99999999d", "WARREN_RETENTION_DEAD: 99999999d is out of range"},
		{"WARREN_RELAY_AFTER", "soon", "WARREN_RELAY_AFTER:"},
		{"WARREN_CRON_TENANT", "Ops!", "WARREN_CRON_TENANT:"},
	} {
		_, err := LoadScheduler(env(map[string]string{tc.name: tc.value}))
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s=%s: %v; want one line containing %q", tc.name, tc.value, err, tc.want)
		}
	}
	if _, err := LoadAPI(env(map[string]string{"WARREN_INSECURE": "1", "WARREN_FAILPOINT": "explode"})); err == nil || !strings.Contains(err.Error(), "WARREN_FAILPOINT:") {
		t.Errorf("bad WARREN_FAILPOINT: %v", err)
	}
	c, err := LoadAPI(env(map[string]string{"WARREN_INSECURE": "1", "WARREN_FAILPOINT": "kill-after-commit"}))
	if err != nil || c.Failpoint != "kill-after-commit" {
		t.Errorf("WARREN_FAILPOINT=kill-after-commit: %q, %v", c.Failpoint, err)
	}
}
