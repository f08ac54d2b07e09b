package bench

import "testing"

func TestParseStat(t *testing.T) {
	t.Parallel()
	// A command name may hold spaces and parentheses; the fields after it
	// are found from the last ')'.
	line := "4242 (my (odd) prog) S 1 4242 4242 0 -1 4194560 900 0 0 0 150 25 0 0 20 0 9 0 777 1000000 500 18446744073709551615\n"
	comm, ticks, start, ok := parseStat([]byte(line))
	if !ok || comm != "my (odd) prog" || ticks != 175 || start != 777 {
		t.Errorf("parseStat = %q %d %d %v, want \"my (odd) prog\" 175 777 true", comm, ticks, start, ok)
	}
	if _, _, _, ok := parseStat([]byte("4242 (short) S 1 2 3")); ok {
		t.Error("a truncated line parsed")
	}
}

func TestProgram(t *testing.T) {
	t.Parallel()
	for comm, want := range map[string]string{
		"postgres": "postgres", "postgres: walwriter": "postgres", "beam.smp": "rabbitmq", "erl_child_setup": "rabbitmq",
		"epmd": "rabbitmq", "inet_gethost": "rabbitmq", "redis-server": "redis", "api": "api", "workers": "workers",
		"scheduler": "scheduler", "haproxy": "haproxy", "bash": "other", "apis": "other",
	} {
		if got := program(comm); got != want {
			t.Errorf("program(%q) = %q, want %q", comm, got, want)
		}
	}
}

func TestServerKey(t *testing.T) {
	t.Parallel()
	a := serverKey("postgres://u:p@127.0.0.1:5433/warren_0?sslmode=disable")
	b := serverKey("postgres://u:p@127.0.0.1:5433/warren_1?sslmode=disable")
	c := serverKey("postgres://u:p@127.0.0.1/warren_0")
	if a != "127.0.0.1:5433" || a != b || c != "127.0.0.1:5432" {
		t.Errorf("server keys %q %q %q", a, b, c)
	}
}
