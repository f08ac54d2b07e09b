// Package config loads each Warren process's settings from the environment,
// 12-factor style, with every default in one place. A missing or malformed
// setting is reported with the name of its variable.
package config

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Getenv reads one variable; os.Getenv in production, a map in tests.
type Getenv func(string) string

// reader collects every problem instead of stopping at the first.
type reader struct {
	get  Getenv
	errs []error
}

func (r *reader) fail(name, format string, args ...any) {
	r.errs = append(r.errs, fmt.Errorf("%s: %s", name, fmt.Sprintf(format, args...)))
}

// err returns all problems on one line.
func (r *reader) err() error {
	if len(r.errs) == 0 {
		return nil
	}
	msgs := make([]string, len(r.errs))
	for i, e := range r.errs {
		msgs[i] = e.Error()
	}
	return errors.New(strings.Join(msgs, "; "))
}

// first returns the value of the first variable set among names, and its name.
func (r *reader) first(names ...string) (string, string) {
	for _, n := range names {
		if v := strings.TrimSpace(r.get(n)); v != "" {
			return v, n
		}
	}
	return "", names[0]
}

func (r *reader) str(name, def string) string {
	if v, _ := r.first(name); v != "" {
		return v
	}
	return def
}

func (r *reader) int(name string, def, lo, hi int) int {
	v, _ := r.first(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		r.fail(name, "%q is not a whole number", v)
		return def
	}
	if n < lo || n > hi {
		r.fail(name, "%d is out of range [%d, %d]", n, lo, hi)
		return def
	}
	return n
}

func (r *reader) duration(name string, def, lo, hi time.Duration) time.Duration {
	v, _ := r.first(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		r.fail(name, "%q is not a duration such as 30s or 5m", v)
		return def
	}
	if d < lo || d > hi {
		r.fail(name, "%v is out of range [%v, %v]", d, lo, hi)
		return def
	}
	return d
}

func (r *reader) bool(name string, def bool) bool {
	v, _ := r.first(name)
	if v == "" {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		r.fail(name, "%q is not true or false", v)
		return def
	}
	return b
}

func (r *reader) list(name string, def []string) []string {
	v, _ := r.first(name)
	if v == "" {
		return def
	}
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		r.fail(name, "empty list")
		return def
	}
	return out
}
